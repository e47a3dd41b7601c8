//! `runnel-connectors`: Kafka Connect over Runnel's log — the [`Source`]/[`Sink`] traits, the
//! connectors (one per file), the [`Worker`] that runs them with offsets in
//! `__connect_offsets`, and its REST API with Kafka Connect's paths ([`rest`]).
//!
//! Connectors reach the log only through `runnel_log`'s `LogClient` traits, so a worker runs
//! the same against the embedded log or a broker.

pub mod config;
pub mod connector;
pub mod converter;
pub mod error;
pub mod file_sink;
pub mod file_source;
pub mod jdbc;
pub mod jdbc_offsets;
pub mod jdbc_sink;
pub mod jdbc_source;
pub mod offsets;
pub mod parquet_sink;
pub mod pg_copy;
pub mod rest;
pub mod transforms;
pub mod transforms_typed;
pub mod worker;
pub mod workerfile;

pub use config::ConnectorConfig;
pub use connector::{Sink, Source, SourceBatch, SourceRun};
pub use error::{ConnectError, Result};
pub use worker::{Status, Worker};
