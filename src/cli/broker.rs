//! `runnel broker`: serves Kafka's wire protocol over the data directory until SIGINT/SIGTERM.
//!
//! Metrics (requests and latency per API, bytes in/out, connections) are logged through
//! `tracing` at info level (`RUST_LOG=info`) every `--stats-interval` and printed to stdout
//! when the broker stops (SIGINT or SIGTERM); with `--http ADDR`, also at `/metrics` in
//! Prometheus' format.

use super::duration_arg;
use super::server::metrics::Sources;
use anyhow::Result;
use clap::Args;
use runnel_broker::security::tls::TlsFiles;
use runnel_broker::{Broker, BrokerConfig, Listener, SecurityProtocol};
use runnel_log::Log;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// A listener (repeatable; Kafka's `listeners`): `[PROTOCOL://]HOST:PORT` with PLAINTEXT
    /// (the default), SSL, SASL_PLAINTEXT or SASL_SSL. Port 0 picks a free one; each chosen
    /// address is printed.
    #[arg(
        long,
        default_value = "127.0.0.1:9092",
        value_name = "[PROTOCOL://]HOST:PORT"
    )]
    listen: Vec<Listener>,
    /// Create topics that clients ask for and that do not exist.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    auto_create_topics: bool,
    /// Partitions of an auto-created topic.
    #[arg(long, default_value_t = 1, value_name = "N")]
    default_partitions: u32,
    /// The address given to clients of the listener of the same protocol in Metadata and
    /// FindCoordinator, when it is not the listen address (a proxy, NAT, a container): Kafka's
    /// `advertised.listeners`. Repeatable.
    #[arg(long, value_name = "[PROTOCOL://]HOST:PORT")]
    advertised_listener: Vec<Listener>,
    /// PEM certificate chain of the SSL and SASL_SSL listeners.
    #[arg(long, value_name = "FILE", requires = "ssl_key")]
    ssl_cert: Option<PathBuf>,
    /// PEM private key of `--ssl-cert`.
    #[arg(long, value_name = "FILE", requires = "ssl_cert")]
    ssl_key: Option<PathBuf>,
    /// Require TLS clients to present a certificate signed by this PEM CA (Kafka's
    /// `ssl.client.auth=required`); their principal is `User:CN=<common name>`.
    #[arg(long, value_name = "FILE", requires = "ssl_cert")]
    ssl_client_ca: Option<PathBuf>,
    /// Users for SASL (add them with `runnel users add`) and ACLs: see the README.
    #[arg(long, value_name = "FILE", env = "RUNNEL_SECURITY_FILE")]
    security_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks a free one; printed).
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<String>,
    /// How often to log a metrics summary (e.g. 60s; 0s turns it off).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    stats_interval: String,
}

pub async fn run(log: &Log, args: BrokerArgs) -> Result<()> {
    let interval = duration_arg("--stats-interval", &args.stats_interval)?;
    if args.default_partitions == 0 {
        anyhow::bail!("--default-partitions must be at least 1");
    }
    let broker = Broker::bind(
        log.clone(),
        BrokerConfig {
            listeners: args.listen.clone(),
            auto_create_topics: args.auto_create_topics,
            default_partitions: args.default_partitions,
            advertised_listeners: args.advertised_listener.clone(),
            tls: args
                .ssl_cert
                .clone()
                .zip(args.ssl_key.clone())
                .map(|(cert, key)| TlsFiles {
                    cert,
                    key,
                    client_ca: args.ssl_client_ca.clone(),
                }),
            security_file: args.security_file.clone(),
        },
    )
    .await?;
    // Installed before the line below: a script that reads it may send SIGTERM at once, and
    // the default action would kill the broker without closing the log.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ctrl_c = tokio::signal::ctrl_c();
    // Scripts read these lines to learn the ports when --listen ends in :0.
    for (protocol, addr) in broker.listener_addrs() {
        match protocol {
            SecurityProtocol::Plaintext => println!("listening on {addr}"),
            other => println!("listening on {}://{addr}", other.name()),
        }
    }
    let metrics = broker.metrics.clone();
    let _http = match &args.http {
        Some(addr) => {
            let sources = Sources {
                log: Some(log.clone()),
                broker: Some(metrics.clone()),
                ..Default::default()
            };
            Some(super::server::metrics::serve(addr, sources).await?)
        }
        None => None,
    };
    let mut serve = tokio::spawn(broker.clone().serve());
    if !interval.is_zero() {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::info!("broker metrics\n{}", metrics.summary());
            }
        });
    }
    tokio::select! {
        r = ctrl_c => r?,
        _ = term.recv() => {},
        r = &mut serve => r??,
    }
    // Ends the connections too, so that the caller can close the log cleanly right away.
    serve.abort();
    let _ = serve.await;
    // Appends still running finish under the partitions' producer locks, which the save takes.
    tokio::task::spawn_blocking(move || broker.save_producer_state()).await?;
    println!("{}", metrics.summary());
    Ok(())
}
