//! The registry: the explicit list of connector classes, each with its names (Kafka's accepted
//! as aliases), its kind and its factory. [`build`] checks a configuration against its class
//! (the factory deserializes the connector's typed configuration, refusing unknown keys; then
//! the common keys, transforms and converters) while building the connector, so a worker never
//! starts a connector whose configuration is wrong. Connectors depend on
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
    /// Builds the connector from its configuration (typed by [`ConnectorConfig::parse`]).
    pub build: fn(&ConnectorConfig) -> Result<Connector>,
    /// Splits the connector's work over at most `n` (at least 2) tasks: each one's
    /// configuration. `None`: the class runs as one task (a file or Parquet sink, which writes
    /// one file).
    pub split: Option<fn(&ConnectorConfig, usize) -> Result<Vec<ConnectorConfig>>>,
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
        build: |c| Ok(Connector::Source(Box::new(file::FileSource::new(c)?))),
        split: Some(file::FileSource::split),
    },
    Plugin {
        class: "file-sink",
        aliases: &[
            "FileStreamSink",
            "org.apache.kafka.connect.file.FileStreamSinkConnector",
        ],
        kind: Kind::Sink,
        build: |c| Ok(Connector::Sink(Box::new(file::FileSink::new(c)?))),
        split: None,
    },
    Plugin {
        class: "parquet-sink",
        aliases: &["ParquetSink"],
        kind: Kind::Sink,
        build: |c| Ok(Connector::Sink(Box::new(parquet::ParquetSink::new(c)?))),
        split: None,
    },
    Plugin {
        class: "jdbc-source",
        aliases: &[
            "io.confluent.connect.jdbc.JdbcSourceConnector",
            "JdbcSourceConnector",
        ],
        kind: Kind::Source,
        build: |c| Ok(Connector::Source(Box::new(jdbc::JdbcSource::new(c)?))),
        split: Some(jdbc::JdbcSource::split),
    },
    Plugin {
        class: "jdbc-sink",
        aliases: &[
            "io.confluent.connect.jdbc.JdbcSinkConnector",
            "JdbcSinkConnector",
        ],
        kind: Kind::Sink,
        build: |c| Ok(Connector::Sink(Box::new(jdbc::JdbcSink::new(c)?))),
        // Each task is a member of the connector's group, which spreads the partitions.
        split: Some(|c, n| Ok(vec![c.clone(); n])),
    },
];

/// The plugin of a class name or alias.
///
/// # Errors
/// [`ConnectError::UnknownClass`], listing the known names, when none is `class`.
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
///
/// # Errors
/// [`ConnectError::Config`] for a missing `connector.class`, an unknown key, a missing key or
/// a value not accepted (the connector's, a common key's, a transform's or a converter's);
/// [`ConnectError::UnknownClass`] for a class not registered.
pub fn build(config: &ConnectorConfig) -> Result<Connector> {
    let class = config
        .get("connector.class")
        .ok_or_else(|| config.missing("connector.class"))?;
    let connector = (plugin(class)?.build)(config)?;
    config.common()?;
    crate::transforms::Chain::from_config(config)?;
    crate::converter::Converters::from_config(config)?;
    Ok(connector)
}

/// The configurations of the tasks that run `config`'s connector: at most `tasks.max` (1 by
/// default), each with its share of the work where the class can split it, else one.
///
/// # Errors
/// [`ConnectError::Config`] for a `tasks.max` of 0 or a class that cannot split the work as
/// configured; what [`plugin`] says of the class.
pub fn task_configs(config: &ConnectorConfig) -> Result<Vec<ConnectorConfig>> {
    let max = match config.common()?.tasks_max {
        None => 1,
        Some(0) => return Err(config.error("tasks.max = 0: use at least 1".into())),
        Some(n) => n as usize,
    };
    let class = config
        .get("connector.class")
        .ok_or_else(|| config.missing("connector.class"))?;
    match plugin(class)?.split {
        Some(split) if max > 1 => split(config, max),
        _ => Ok(vec![config.clone()]),
    }
}
