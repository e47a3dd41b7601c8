//! `runnel server [--config runnel.toml]`: one process over one data directory serving the
//! Kafka protocol (the broker), Kafka Connect's worker and REST API, and SQL jobs (those of a
//! jobs folder and those submitted over HTTP), with `/metrics` and the web console on the same
//! HTTP port. Jobs, connectors and Kafka clients share the embedded log with no network hop
//! between them.
//!
//! Runs until SIGINT/SIGTERM; then stops the jobs after their next commit, the connectors,
//! and the broker, and closes the log. Prints `listening on ADDR` per Kafka listener and
//! `HTTP on http://ADDR` once everything has started, for scripts (ports 0 pick free ones).

mod config;
mod console;
pub(crate) mod exposition;
mod http;
mod jobs;
pub(crate) mod metrics;

use anyhow::{Context, Result};
use clap::Args;
use config::ServerConfig;
use runnel_broker::{Broker, BrokerConfig, SecurityProtocol};
use runnel_connectors::{Worker, rest};
use runnel_log::{Log, SharedLogClient};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server's configuration (TOML: [broker], [http], [connect], [jobs]); without it,
    /// Kafka on 127.0.0.1:9092 and HTTP on 127.0.0.1:8080.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub async fn run(log: &Log, args: ServerArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::default(),
    };
    let max_body = usize::try_from(runnel_log::config::parse_size(&config.http.max_body)?)
        .context("[http] max_body is too large")?;
    let listeners = config.listeners()?;
    let client: SharedLogClient = Arc::new(log.clone());

    let broker = if listeners.is_empty() {
        None
    } else {
        Some(
            Broker::bind(
                log.clone(),
                BrokerConfig {
                    listeners,
                    auto_create_topics: config.broker.auto_create_topics,
                    default_partitions: config.broker.default_partitions.max(1),
                    ..Default::default()
                },
            )
            .await?,
        )
    };
    let file = super::connect::worker_file(config.connect.worker_file.as_deref())?;
    // Bound before the worker starts: Kafka Connect names a worker by its REST address.
    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for HTTP: set [http] listen in the config",
                config.http.listen
            )
        })?;
    let http_addr = listener.local_addr()?;
    // Connectors created over REST are kept in the config topic and come back on restart,
    // as a standalone `runnel connect` keeps them; the worker file's win over stored ones.
    let worker = Worker::open(
        client.clone(),
        &file.storage,
        &http_addr.to_string(),
        file.connectors,
    )
    .await?;
    for name in worker.names() {
        eprintln!("started connector {name}");
    }
    let jobs = jobs::Jobs::new(client.clone(), worker.clone(), log.dir())?;
    jobs.start_saved(config.jobs.dir.as_deref())?;

    let sources = metrics::Sources {
        log: Some(log.clone()),
        broker: broker.as_ref().map(|b| b.metrics.clone()),
        jobs: Some({
            let jobs = jobs.clone();
            Arc::new(move || jobs.views())
        }),
        worker: Some(worker.clone()),
    };
    let app = http::router(
        jobs.clone(),
        rest::router(worker.clone()),
        sources,
        config.http.token.clone(),
        max_body,
    )
    // Past the token's layer: the console's page and scripts hold no data (see console).
    .merge(console::assets());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let serving = broker.clone().map(|b| tokio::spawn(b.serve()));
    if let Some(b) = &broker {
        for (protocol, addr) in b.listener_addrs() {
            match protocol {
                SecurityProtocol::Plaintext => println!("listening on {addr}"),
                other => println!("listening on {}://{addr}", other.name()),
            }
        }
    }
    println!("HTTP on http://{http_addr}");
    let http = axum::serve(listener, app);
    tokio::select! {
        r = http => r.context("the HTTP server stopped")?,
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {},
    }
    eprintln!("stopping: jobs after their next commit, then connectors and the broker");
    jobs.stop_all(Duration::from_secs(30)).await;
    worker.shutdown().await;
    if let (Some(b), Some(s)) = (broker, serving) {
        s.abort();
        let _ = s.await;
        tokio::task::spawn_blocking(move || b.save_producer_state()).await?;
    }
    Ok(())
}
