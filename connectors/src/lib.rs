//! `runnel-connectors`: Kafka Connect over Runnel's log — the [`Source`]/[`Sink`] traits
//! ([`api`]), the connectors (one folder per system: [`file`](mod@file), [`jdbc`],
//! [`parquet`]), the [`registry`] that builds them from their class, and the [`runtime`]: the
//! [`Worker`] that runs them as tasks, with source offsets in `connect-offsets` and its
//! connectors and statuses in `connect-configs` and `connect-status`, and its REST API with
//! Kafka Connect's paths.
//!
//! Dependencies go one way: connectors use [`api`], [`config`], [`converter`] and [`csv`];
//! [`registry`] knows every connector; [`runtime`] uses the registry. Connectors reach the log
//! only through `runnel_log`'s `LogClient` traits, so a worker runs the same against the
//! embedded log or a broker.

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod converter;
pub mod csv;
pub mod error;
pub mod file;
pub mod jdbc;
pub mod parquet;
pub mod registry;
pub mod runtime;
pub mod transforms;

pub use api::Kind;
pub use api::{Sink, Source, SourceBatch, SourceRun};
pub use config::ConnectorConfig;
pub use error::{ConnectError, Result};
pub use runtime::configs::TargetState;
pub use runtime::status::{State, Status};
pub use runtime::worker::{Storage, Submit, View, Worker};
pub use runtime::{group, rest, workerfile};
