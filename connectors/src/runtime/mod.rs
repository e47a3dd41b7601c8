//! The runtime that runs connectors: the [`worker`] (connectors, target states, stored
//! changes), their tasks ([`task`], [`source_task`], [`sink_task`]: the loops, restarts with
//! backoff), the REST API ([`rest`], Kafka Connect's paths and shapes), the worker's internal
//! topics ([`internal`]): source offsets ([`offsets`], read and changed over REST through
//! [`connector_offsets`]), connector configurations ([`configs`]) and statuses ([`status`]),
//! and the TOML [`workerfile`]. Workers of a group ([`group`]) share those topics
//! ([`shared`]) and send each REST request to the worker that serves it ([`forward`]). It builds connectors only through [`crate::registry`] and
//! drives them only through [`crate::api`].

pub mod configs;
mod connector_offsets;
mod forward;
pub mod group;
mod internal;
pub mod offsets;
pub mod rest;
mod shared;
mod sink_task;
mod source_task;
pub mod status;
mod task;
pub mod worker;
pub mod workerfile;
