//! The runtime that runs connectors: the [`worker`] (tasks, status, restarts with backoff,
//! pause and resume), its REST API ([`rest`], Kafka Connect's paths and shapes), the source
//! offsets in `__connect_offsets` ([`offsets`]) and the TOML [`workerfile`]. It builds
//! connectors only through [`crate::registry`] and drives them only through [`crate::api`].

pub mod offsets;
pub mod rest;
pub mod worker;
pub mod workerfile;
