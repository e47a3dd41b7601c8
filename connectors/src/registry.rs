//! The registry: the explicit list of connector classes, each with its names (Kafka's accepted
//! as aliases), its kind and its factory. [`build`] checks a configuration against its class
//! (unknown keys, the common keys, transforms and converters) before building the connector,
//! so a worker never starts a connector whose configuration is wrong. Connectors depend on
//! [`crate::api`] only; this module is the one place that knows them all.

use crate::api::{Connector, Kind};
use crate::config::ConnectorConfig;
use crate::error::{ConnectError, Result};
use crate::{file, jdbc, parquet};

/// One registered class: its names (Kafka's accepted as aliases) and its factory.
pub struct Plugin {
    pub class: &'static str,
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    pub keys: &'static [&'static str],
    pub build: fn(&ConnectorConfig) -> Result<Connector>,
}

/// The explicit registry.
pub const PLUGINS: &[Plugin] = &[
    Plugin {
        class: "file-source",
        aliases: &[
            "FileStreamSource",
            "org.apache.kafka.connect.file.FileStreamSourceConnector",
        ],
        kind: Kind::Source,
        keys: file::source::KEYS,
        build: |c| Ok(Connector::Source(Box::new(file::FileSource::new(c)?))),
    },
    Plugin {
        class: "file-sink",
        aliases: &[
            "FileStreamSink",
            "org.apache.kafka.connect.file.FileStreamSinkConnector",
        ],
        kind: Kind::Sink,
        keys: file::sink::KEYS,
        build: |c| Ok(Connector::Sink(Box::new(file::FileSink::new(c)?))),
    },
    Plugin {
        class: "parquet-sink",
        aliases: &["ParquetSink"],
        kind: Kind::Sink,
        keys: parquet::sink::KEYS,
        build: |c| Ok(Connector::Sink(Box::new(parquet::ParquetSink::new(c)?))),
    },
    Plugin {
        class: "jdbc-source",
        aliases: &[
            "io.confluent.connect.jdbc.JdbcSourceConnector",
            "JdbcSourceConnector",
        ],
        kind: Kind::Source,
        keys: jdbc::source::KEYS,
        build: |c| Ok(Connector::Source(Box::new(jdbc::JdbcSource::new(c)?))),
    },
    Plugin {
        class: "jdbc-sink",
        aliases: &[
            "io.confluent.connect.jdbc.JdbcSinkConnector",
            "JdbcSinkConnector",
        ],
        kind: Kind::Sink,
        keys: jdbc::sink::KEYS,
        build: |c| Ok(Connector::Sink(Box::new(jdbc::JdbcSink::new(c)?))),
    },
];

/// The plugin of a class name or alias.
pub fn plugin(class: &str) -> Result<&'static Plugin> {
    PLUGINS
        .iter()
        .find(|p| p.class == class || p.aliases.contains(&class))
        .ok_or_else(|| ConnectError::UnknownClass {
            class: class.into(),
            known: PLUGINS
                .iter()
                .flat_map(|p| std::iter::once(p.class).chain(p.aliases.iter().copied()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Checks a configuration and builds its connector.
pub fn build(config: &ConnectorConfig) -> Result<Connector> {
    let p = plugin(config.require("connector.class")?)?;
    config.check_keys(p.keys)?;
    config.tolerates_errors()?;
    crate::transforms::Chain::from_config(config)?;
    crate::converter::Converters::from_config(config)?;
    (p.build)(config)
}
