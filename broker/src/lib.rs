//! `runnel-broker`: Kafka's wire protocol over Runnel's log, in both directions.
//!
//! - [`Broker`] serves Kafka clients (librdkafka, the Java client, kafka-python, kcat, ...) from
//!   a [`runnel_log::Log`]: one node that is leader of every partition and coordinator of every
//!   group. Produce appends the client's RecordBatch v2 bytes as they are (after CRC and
//!   sequence checks); Fetch answers with byte ranges of the segment files, never re-encoded.
//!   Consumer groups are the log's own [`runnel_log::GroupCoordinator`], so in-process and wire
//!   members can share a group.
//! - [`RemoteLog`] is a Kafka client implementing [`runnel_log::LogClient`], so the engine and
//!   the connectors run unchanged against Runnel's broker or any Kafka-compatible cluster that
//!   speaks the same API versions.
//!
//! Message codecs come from the `kafka-protocol` crate; framing, dispatch and semantics are here.

pub mod alloc;
mod api;
pub mod client;
mod codes;
mod error;
mod frame;
pub mod metrics;
pub mod security;
mod server;
mod topic_configs;

pub use client::{Bootstrap, RemoteLog};
pub use error::BrokerError;
pub use metrics::Metrics;
pub use security::{ClientSecurity, Listener, SecurityProtocol};
pub use server::{Broker, BrokerConfig};
pub use topic_configs::apply_configs as apply_topic_configs;
