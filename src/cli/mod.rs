//! Command-line interface: the top-level arguments, the dispatch to one module per command,
//! and the helpers they share (opening and closing the data directory, parsing durations and
//! sizes).
//!
//! Every error a user can cause comes back as an `anyhow::Error` whose message is one line
//! saying what is wrong and how to fix it; `main` prints it as `error: ...` with exit code 1.
//! Durations and sizes are parsed here rather than by clap for that reason; what clap itself
//! rejects (an unknown flag, a missing argument, a value outside a fixed list) keeps clap's
//! message with usage and its exit code 2.

mod bench;
mod bench_broker;
mod bench_compression;
mod bench_connect;
mod bench_engine;
mod bench_sql;
mod broker;
mod connect;
mod consume;
mod deliveries;
mod groups;
mod output;
mod produce;
mod quickstart;
mod run;
mod server;
mod topics;
mod users;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use runnel_broker::{Bootstrap, BrokerError, ClientSecurity, RemoteLog};
use runnel_log::{Log, LogError, SharedLogClient};
use std::fs::TryLockError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runnel: a durable, partitioned commit log in one binary, used the way Kafka is.
#[derive(Debug, Parser)]
#[command(name = "runnel", version, propagate_version = true)]
pub struct Cli {
    /// The data directory holding the topics (bench uses a temporary one).
    #[arg(
        long,
        global = true,
        env = "RUNNEL_DATA_DIR",
        default_value = "./runnel-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,

    /// Run topics, groups, produce and consume against a Kafka-protocol broker (`runnel broker`, Kafka,
    /// Redpanda) at HOST:PORT instead of the data directory.
    #[arg(
        long,
        global = true,
        env = "RUNNEL_BOOTSTRAP",
        value_name = "HOST:PORT"
    )]
    bootstrap: Option<String>,

    /// Kafka client properties for `--bootstrap` from a file (`key=value` lines, as Kafka's
    /// tools' `--command-config`): `security.protocol`, `sasl.mechanism`, `sasl.username`,
    /// `sasl.password`, `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`.
    #[arg(
        long,
        global = true,
        env = "RUNNEL_COMMAND_CONFIG",
        value_name = "FILE"
    )]
    command_config: Option<PathBuf>,

    /// One Kafka client property for `--bootstrap` (repeatable; over `--command-config`), as
    /// kcat's `-X`: `-X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512 ...`.
    #[arg(
        short = 'X',
        long = "client-property",
        global = true,
        value_name = "KEY=VALUE"
    )]
    client_properties: Vec<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Data(DataCommand),
    /// Measure throughput and latency (on a temporary data directory).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Show a SQL job's plans and topology without running it.
    Explain(run::ExplainArgs),
    /// Manage the users of a broker's security file (SASL PLAIN and SCRAM).
    #[command(subcommand)]
    Users(users::UsersCommand),
}

/// The commands that work on the data directory.
#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Send one record per input line to a topic.
    Produce(produce::ProduceArgs),
    /// Print the records of a topic.
    Consume(consume::ConsumeArgs),
    /// List and describe consumer groups.
    #[command(subcommand)]
    Groups(groups::GroupsCommand),
    /// Serve Kafka's wire protocol over the data directory (any Kafka client can connect).
    Broker(broker::BrokerArgs),
    /// Produce ride-hailing events to `rides`, read them back and summarize them per region.
    Quickstart(quickstart::QuickstartArgs),
    /// Run connectors (files ↔ topics) from a worker file and a Kafka Connect REST API.
    Connect(connect::ConnectArgs),
    /// Run a SQL job declared in a TOML file (and the connectors it declares).
    Run(run::RunArgs),
    /// Serve the Kafka protocol, Connect, SQL jobs and /metrics from one process.
    Server(server::ServerArgs),
}

/// Runs the parsed command.
///
/// # Errors
///
/// The subcommand's error, for `main` to print: a data directory that does not exist for a
/// reading command, or held by another process (`LogError::DataDirLocked`), `--bootstrap` with
/// a command that needs a data directory, client security properties that are wrong
/// (`BrokerError::Config`, `BrokerError::Tls`), a broker that cannot be reached, and each
/// command's own failures. A missing topic on a broker comes with the `--bootstrap topics
/// create` hint.
///
/// # Cancel safety
///
/// Not cancel safe, and not meant to be dropped: it is the whole command, which `main` runs to
/// its end. Dropped, it leaves what the command did so far (topics created, records produced),
/// and does not wait for the embedded log to close its partitions.
pub async fn run(cli: Cli) -> Result<()> {
    let cmd = match cli.command {
        Command::Bench(cmd) => return bench::run(cmd).await,
        Command::Explain(args) => return run::explain(args),
        Command::Users(cmd) => return users::run(cmd),
        Command::Data(cmd) => cmd,
    };
    let dir = cli.data_dir.as_path();
    if let Some(addr) = cli.bootstrap.as_deref() {
        let target = Bootstrap {
            addr: addr.to_string(),
            security: client_security(cli.command_config.as_deref(), &cli.client_properties)?,
        };
        let bootstrap = addr;
        match cmd {
            DataCommand::Topics(cmd) => {
                let remote = RemoteLog::connect_to(target).await?;
                let result = topics::run_remote(&remote, cmd).await;
                return result.map_err(|e| with_remote_hint(e, bootstrap));
            }
            DataCommand::Groups(cmd) => {
                let remote = RemoteLog::connect_to(target).await?;
                let result = groups::run_remote(&remote, cmd).await;
                return result.map_err(|e| with_remote_hint(e, bootstrap));
            }
            _ => {}
        }
        let client = log_client(Some(target), dir).await?;
        let result = match cmd {
            DataCommand::Produce(args) => {
                produce::run(produce::Target::Client(&client), args).await
            }
            DataCommand::Consume(args) => consume::run(&client, args).await,
            DataCommand::Connect(args) => connect::run(client, None, args).await,
            DataCommand::Run(args) => run::run(client, None, args).await,
            _ => bail!(
                "--bootstrap (RUNNEL_BOOTSTRAP) works with topics, groups, produce, consume, connect and run; the other commands work on a data directory: drop --bootstrap"
            ),
        };
        return result.map_err(|e| with_remote_hint(e, bootstrap));
    }
    // Reading commands do not create a data directory for a mistyped --data-dir.
    let creates = matches!(
        cmd,
        DataCommand::Quickstart(_)
            | DataCommand::Broker(_)
            | DataCommand::Connect(_)
            | DataCommand::Run(_)
            | DataCommand::Server(_)
            | DataCommand::Topics(topics::TopicsCommand::Create(_))
    );
    if !creates && !dir.is_dir() {
        bail!(
            "data directory {} does not exist; create a topic with `runnel topics create NAME`, or point --data-dir (or RUNNEL_DATA_DIR) at an existing one",
            dir.display()
        );
    }
    let log = Log::open(dir)?;
    let result = match cmd {
        DataCommand::Topics(cmd) => topics::run(&log, cmd),
        DataCommand::Produce(args) => produce::run(produce::Target::Embedded(&log), args).await,
        DataCommand::Consume(args) => {
            let client: SharedLogClient = Arc::new(log.clone());
            consume::run(&client, args).await
        }
        DataCommand::Groups(cmd) => groups::run(&log, cmd),
        DataCommand::Quickstart(args) => quickstart::run(&log, args).await,
        DataCommand::Broker(args) => broker::run(&log, args).await,
        DataCommand::Connect(args) => {
            connect::run(Arc::new(log.clone()), Some(log.clone()), args).await
        }
        DataCommand::Run(args) => run::run(Arc::new(log.clone()), Some(log.clone()), args).await,
        DataCommand::Server(args) => server::run(&log, args).await,
    };
    close_log(log);
    result
}

/// The log a component runs against: the Kafka-protocol broker at `bootstrap` (Runnel's own,
/// Kafka, Redpanda) when given, else the embedded log in `data_dir`. This is how `--bootstrap`
/// swaps the network client in for the engine, the connectors, produce and consume.
///
/// # Errors
///
/// `BrokerError` from `RemoteLog::connect_to` (`Connect`, `Tls`, `Authentication`, ...) with
/// `bootstrap`, else `LogError` from opening the data directory (`DataDirLocked` when another
/// process holds it).
///
/// # Cancel safety
///
/// Cancel safe: the client exists only once it returns; the embedded log opens without
/// awaiting.
pub async fn log_client(bootstrap: Option<Bootstrap>, data_dir: &Path) -> Result<SharedLogClient> {
    Ok(match bootstrap {
        Some(target) => RemoteLog::connect_to(target).await?,
        None => Arc::new(Log::open(data_dir)?),
    })
}

/// The client's security from `--command-config` and `-X` properties (these win).
fn client_security(file: Option<&Path>, properties: &[String]) -> Result<ClientSecurity> {
    let mut props = match file {
        Some(path) => ClientSecurity::properties_file(path)?,
        None => Default::default(),
    };
    for p in properties {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            anyhow!("-X {p:?}: expected KEY=VALUE, e.g. -X security.protocol=SASL_SSL")
        })?;
        props.insert(k.trim().to_string(), v.to_string());
    }
    let place = match file {
        Some(path) => format!("--command-config {}", path.display()),
        None => "-X".to_string(),
    };
    Ok(ClientSecurity::from_properties(&props, &place)?)
}

/// `e`, with a missing topic's hint (the log's, `runnel topics create`, works on a data
/// directory) replaced by one that works against the broker at `bootstrap`.
fn with_remote_hint(e: anyhow::Error, bootstrap: &str) -> anyhow::Error {
    let missing = match (
        e.downcast_ref::<LogError>(),
        e.downcast_ref::<BrokerError>(),
    ) {
        (Some(LogError::UnknownTopic(t)), _) => t.clone(),
        (_, Some(BrokerError::Log(LogError::UnknownTopic(t)))) => t.clone(),
        _ => return e,
    };
    anyhow!(
        "topic {missing:?} does not exist on the broker at {bootstrap}; create it with `runnel --bootstrap {bootstrap} topics create {missing} --partitions N`"
    )
}

/// Drops `log` and waits until it has closed its partitions cleanly (indexes written, clean
/// shutdown marked), so the process does not exit in the middle of that.
///
/// A closed producer's sender thread or a consumer's heartbeat task may still hold a clone of
/// the log for a moment; the last clone to go closes it. The directory lock
/// (`DATA/.runnel/lock`) is released last, so being able to take it shows the close is done.
/// Gives up after a while: a handle still held elsewhere must not hang the command.
fn close_log(log: Log) {
    let lock = log.dir().join(".runnel").join("lock");
    drop(log);
    let Ok(file) = std::fs::File::open(&lock) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match file.try_lock() {
            Ok(()) => return,
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                tracing::warn!(lock = %lock.display(), error = %e, "log not closed yet; exiting anyway");
                return;
            }
        }
    }
}

/// The message of a configuration error without the generic "invalid configuration" prefix.
fn config_message(e: LogError) -> String {
    match e {
        LogError::InvalidConfig(m) => m,
        other => other.to_string(),
    }
}

/// Parses a duration flag (`500ms`, `30s`, `7d`), naming the flag in the error.
fn duration_arg(flag: &str, value: &str) -> Result<Duration> {
    runnel_log::config::parse_duration(value).map_err(|e| anyhow!("{flag}: {}", config_message(e)))
}

/// Parses a size flag (`512`, `64KiB`, `1GiB`), naming the flag in the error.
fn size_arg(flag: &str, value: &str) -> Result<u64> {
    runnel_log::config::parse_size(value).map_err(|e| anyhow!("{flag}: {}", config_message(e)))
}

/// Like [`size_arg`], for sizes held in memory.
fn usize_arg(flag: &str, value: &str) -> Result<usize> {
    usize::try_from(size_arg(flag, value)?).with_context(|| format!("{flag}: {value} is too large"))
}
