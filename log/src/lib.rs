//! `runnel-log`: Runnel's durable, partitioned commit log.
//!
//! Topics are split into partitions; each partition is an append-only sequence of segment files
//! holding Kafka RecordBatch v2 bytes ([`batch`]), with sparse offset and time indexes
//! ([`index`]). [`Log`] owns a data directory; [`Producer`] and [`Consumer`] are the
//! client APIs; [`GroupCoordinator`] runs consumer groups with committed offsets in the
//! compacted internal topic `__consumer_offsets`.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")] async fn main() -> Result<(), runnel_log::LogError> {
//! use runnel_log::*;
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path())?;
//! log.create_topic("rides", TopicConfig { partitions: 2, ..Default::default() })?;
//! let producer = Producer::new(log.clone(), ProducerConfig::default());
//! let sent = producer.send(ProducerRecord::new("rides", b"{\"speed\":12}").key(b"driver-7")).await?;
//! let meta = sent.await?;
//! let mut consumer = Consumer::new(log.clone(), ConsumerConfig::default());
//! consumer.assign(vec![TopicPartition::new("rides", meta.partition)])?;
//! consumer.seek_to_beginning();
//! let records = consumer.poll(std::time::Duration::from_secs(1)).await?;
//! assert_eq!(records[0].record.value.as_deref(), Some(&b"{\"speed\":12}"[..]));
//! # Ok(()) }
//! ```

pub mod assignor;
pub mod batch;
pub mod client;
pub mod clock;
pub mod compaction;
pub mod compression;
pub mod config;
pub mod consumer;
pub mod error;
pub mod fault;
pub mod group;
pub mod index;
pub mod log;
pub mod membership;
pub mod partition;
pub mod partitioner;
pub mod producer;
pub mod run;
pub mod segment;
pub mod stats;
pub mod txn;
pub mod types;

pub use assignor::AssignmentStrategy;
pub use client::{LogClient, LogConsumer, LogProducer, SharedLogClient};
pub use clock::Clock;
pub use compression::{Compression, CompressionType};
pub use config::{CleanupPolicy, Durability, TopicConfig};
pub use consumer::{Consumer, ConsumerConfig, OffsetReset, PartitionLag};
pub use error::{LogError, Result};
pub use group::{GroupCoordinator, GroupState};
pub use log::{CONSUMER_OFFSETS_TOPIC, Log, LogOptions, Topic, TopicDescription};
pub use membership::{GroupMember, GroupMetadata, Joined};
pub use partition::{FetchResult, Fetched, FileRange, Partition, PartitionStats};
pub use producer::{
    DEFAULT_BATCH_SIZE, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use run::{RecordRef, RecordRun};
pub use txn::IsolationLevel;
pub use txn::coordinator::TransactionCoordinator;
pub use txn::marker::Outcome as TxnOutcome;
pub use types::{ConsumerRecord, Header, Record, TopicPartition};
