//! End-to-end tests of Runnel, driven the way a user would: through the public library API and
//! through the `runnel` binary. One test binary, one module per area.

mod admin;
mod broker;
mod cli;
mod compaction;
mod compression;
mod connect;
mod console;
mod consumer;
mod corruption;
mod crash;
mod disk_state;
mod engine;
mod faults;
mod groups;
mod model;
mod scale;
mod security;
mod server;
mod sql;
mod support;
mod transactions;
