//! The two connector traits and the registry that builds connectors from their class.
//!
//! A [`Source`] turns an external system into records, each tagged with a source partition and
//! a source offset (JSON, as in Kafka Connect); the worker writes the records, flushes, and only
//! then stores the offsets, so a restart resumes after the last durable record. A [`Sink`]
//! takes records read from topics; the worker commits the consumer group's offsets only after
//! [`Sink::flush`] returned, so nothing acknowledged is lost.

use crate::config::ConnectorConfig;
use crate::error::{ConnectError, Result};
use crate::{file_sink, file_source, jdbc_sink, jdbc_source, parquet_sink};
use async_trait::async_trait;
use runnel_log::{ConsumerRecord, TopicPartition};

/// A record from a source, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    /// Empty: nothing to send, only the offset to store (a CSV header line).
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
    /// e.g. `{"filename": "/var/log/app.log"}`.
    pub partition: serde_json::Value,
    /// e.g. `{"position": 4096}`: where to resume after this record.
    pub offset: serde_json::Value,
    /// Set when the record could not be converted: it goes to the dead-letter topic.
    pub error: Option<String>,
    /// The value is a plain string (a text line), not JSON: converters treat it as text.
    pub text: bool,
}

/// A record a sink could not write (bad data, not a failing system): `index` into the batch
/// given to [`Sink::put`]. The worker sends it to the dead-letter topic or fails the task.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub index: usize,
    pub reason: String,
}

#[async_trait]
pub trait Source: Send {
    /// Restores the position from the last stored offset of each source partition.
    async fn start(&mut self, offsets: &[(serde_json::Value, serde_json::Value)]) -> Result<()>;
    /// The next records, or none when there is nothing new (the worker waits and asks again).
    async fn poll(&mut self) -> Result<Vec<SourceRecord>>;
}

#[async_trait]
pub trait Sink: Send {
    /// Topics to read (Kafka Connect's `topics`).
    fn topics(&self) -> Vec<String>;
    /// Writes the records; returns those it could not write for what they hold (an error is
    /// for the system: the task fails and restarts).
    async fn put(&mut self, records: &[ConsumerRecord]) -> Result<Vec<Rejected>>;
    /// Makes everything put so far durable, unless [`Sink::durable_offsets`] says otherwise.
    async fn flush(&mut self) -> Result<()>;
    /// For sinks that hold records beyond `flush` (a Parquet file is durable only once its
    /// footer is written): the next offsets to read per partition that are durable now, which
    /// the worker commits instead of everything put. `None`: everything flushed is durable.
    fn durable_offsets(&mut self) -> Option<Vec<(TopicPartition, u64)>> {
        None
    }
    /// For sinks that keep the consumed offsets with the data (exactly-once): the next offset
    /// to read per partition, as stored, which the worker resumes from instead of the consumer
    /// group's. `None`: the sink keeps none (the default), so it cannot run exactly-once.
    /// Called once, before the first `put`: a sink may first bring its data back to what it
    /// stored (the file sink cuts its file back to the committed length).
    async fn stored_offsets(&mut self) -> Result<Option<Vec<(TopicPartition, u64)>>> {
        Ok(None)
    }
}

/// A connector instance of either kind.
pub enum Connector {
    Source(Box<dyn Source>),
    Sink(Box<dyn Sink>),
}

/// One registered class: its names (Kafka's accepted as aliases) and its factory.
pub struct Plugin {
    pub class: &'static str,
    pub aliases: &'static [&'static str],
    pub kind: &'static str,
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
        kind: "source",
        keys: file_source::KEYS,
        build: |c| {
            Ok(Connector::Source(Box::new(file_source::FileSource::new(
                c,
            )?)))
        },
    },
    Plugin {
        class: "file-sink",
        aliases: &[
            "FileStreamSink",
            "org.apache.kafka.connect.file.FileStreamSinkConnector",
        ],
        kind: "sink",
        keys: file_sink::KEYS,
        build: |c| Ok(Connector::Sink(Box::new(file_sink::FileSink::new(c)?))),
    },
    Plugin {
        class: "parquet-sink",
        aliases: &["ParquetSink"],
        kind: "sink",
        keys: parquet_sink::KEYS,
        build: |c| {
            Ok(Connector::Sink(Box::new(parquet_sink::ParquetSink::new(
                c,
            )?)))
        },
    },
    Plugin {
        class: "jdbc-source",
        aliases: &[
            "io.confluent.connect.jdbc.JdbcSourceConnector",
            "JdbcSourceConnector",
        ],
        kind: "source",
        keys: jdbc_source::KEYS,
        build: |c| {
            Ok(Connector::Source(Box::new(jdbc_source::JdbcSource::new(
                c,
            )?)))
        },
    },
    Plugin {
        class: "jdbc-sink",
        aliases: &[
            "io.confluent.connect.jdbc.JdbcSinkConnector",
            "JdbcSinkConnector",
        ],
        kind: "sink",
        keys: jdbc_sink::KEYS,
        build: |c| Ok(Connector::Sink(Box::new(jdbc_sink::JdbcSink::new(c)?))),
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
