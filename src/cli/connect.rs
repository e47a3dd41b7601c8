//! `runnel connect [worker.toml] [--rest 127.0.0.1:8083]`: the connector worker. Runs the
//! connectors the file declares and those created over the REST API, until SIGINT/SIGTERM;
//! it keeps them in its config topic (`connect-configs`, or the file's
//! `config.storage.topic`), so a worker started again on the same log runs them again, and
//! publishes their statuses to its status topic. It names itself by its REST address in
//! statuses, as Kafka Connect does. With `--bootstrap` it works against a broker instead of
//! the data directory; with `--http ADDR` its metrics are at `/metrics`.
//!
//! Source offsets are in `connect-offsets` (the file's `offset.storage.topic`; those of
//! `__connect_offsets`, where an older Runnel kept them, are copied over once).
//!
//! With `--group-id G` the worker is one of a group (Kafka Connect's distributed mode): the
//! workers of `G` share the config, status and offsets topics, the group's leader deals the
//! connectors and their tasks over them, and a worker that leaves or dies has its share moved
//! to the others. Any worker's REST API answers for every connector: it forwards a change to
//! the leader, a task restart to the worker running the task.

use super::server::metrics::Sources;
use anyhow::{Context, Result};
use clap::Args;
use runnel_connectors::workerfile::{self, WorkerFile};
use runnel_connectors::{Worker, group, rest};
use runnel_log::{ConsumerConfig, Log, SharedLogClient};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// TOML file of `[[connector]]` tables with Kafka Connect's keys.
    worker_file: Option<PathBuf>,
    /// Where the REST API listens (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8083", value_name = "HOST:PORT")]
    rest: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks a free one; printed).
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<String>,
    /// The address other workers of the group reach this one's REST API at, and its name in
    /// statuses (Kafka Connect's `rest.advertised.host.name` and `.port`); by default the
    /// address `--rest` bound.
    #[arg(long, value_name = "HOST:PORT")]
    rest_advertised: Option<String>,
    /// Join the worker group G (Kafka Connect's `group.id`): distributed mode.
    #[arg(long, value_name = "G")]
    group_id: Option<String>,
}

/// `log`: the embedded log when the worker runs on one (its partitions and groups are in the
/// metrics then).
pub async fn run(client: SharedLogClient, log: Option<Log>, args: ConnectArgs) -> Result<()> {
    let file = worker_file(args.worker_file.as_deref())?;
    // Bound first: the worker names itself by this address.
    let listener = tokio::net::TcpListener::bind(&args.rest)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the REST API: use --rest HOST:PORT",
                args.rest
            )
        })?;
    let rest_addr = listener.local_addr()?;
    let id = (args.rest_advertised.clone()).unwrap_or_else(|| rest_addr.to_string());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (worker, group) = match &args.group_id {
        Some(g) => {
            let worker =
                Worker::member(client.clone(), &file.storage, &id, file.connectors).await?;
            let member = client.group_member(ConsumerConfig {
                group_id: Some(g.clone()),
                ..Default::default()
            })?;
            let run = group::run(worker.clone(), member, stopped);
            (worker, Some(tokio::spawn(run)))
        }
        None => {
            let worker = Worker::open(client, &file.storage, &id, file.connectors).await?;
            (worker, None)
        }
    };
    for name in worker.names() {
        let state = worker.status(&name)?.state;
        eprintln!("started connector {name} ({state:?})");
    }
    let _http = match &args.http {
        Some(addr) => {
            let sources = Sources {
                log,
                worker: Some(worker.clone()),
                ..Default::default()
            };
            Some(super::server::metrics::serve(addr, sources).await?)
        }
        None => None,
    };
    println!("REST API on http://{rest_addr}");
    let server = axum::serve(listener, rest::router(worker.clone()));
    tokio::select! {
        r = server => r.context("the REST server stopped")?,
        _ = shutdown() => eprintln!("stopping the worker"),
    }
    stop.send_replace(true);
    if let Some(group) = group {
        group.await?.context("the worker group")?;
    }
    worker.shutdown().await;
    Ok(())
}

/// The worker file at `path` (its topics and connectors), or the defaults without one.
pub(super) fn worker_file(path: Option<&std::path::Path>) -> Result<WorkerFile> {
    let Some(path) = path else {
        return Ok(WorkerFile::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the worker file {}", path.display()))?;
    Ok(workerfile::read(&path.display().to_string(), &text)?)
}

pub(super) async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
