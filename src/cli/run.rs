//! `runnel run job.toml [--until-end]`: runs a SQL job (and the connectors its file declares)
//! until SIGINT/SIGTERM, or until its inputs are consumed and every window closed; with
//! `--http ADDR`, its metrics at `/metrics` meanwhile.
//! `runnel explain job.toml`: the DataFusion logical plans, the streaming steps and the
//! topology, without running anything.

use super::server::metrics::{JobView, Sources};
use anyhow::{Context, Result};
use clap::Args;
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use runnel_log::{Log, SharedLogClient};
use runnel_sql::SqlJob;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job file (TOML: [job], [[input]], [[output]], optional [[connector]]).
    job: PathBuf,
    /// Stop once the inputs are consumed up to where they ended at start and every window is
    /// closed (a batch run); without it the job runs until stopped.
    #[arg(long)]
    until_end: bool,
    /// The processing guarantee, overriding the job file's `[job] guarantee`:
    /// `at-least-once` or `exactly-once` (outputs, state and input offsets committed in one
    /// transaction every 100 ms; a crash changes nothing a read_committed reader sees).
    #[arg(long, value_name = "GUARANTEE")]
    guarantee: Option<runnel_engine::ProcessingGuarantee>,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks a free one; printed).
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<String>,
    /// Worker threads of this instance (Kafka Streams' `num.stream.threads`), overriding the
    /// job file's `[job] threads`; default: one per core.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Where the job's disk state (`[job] state = "disk"`) and local checkpoints are kept, so
    /// a restart reopens them and replays only the changelog after them; default: a
    /// directory private to this run, removed when it ends.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The job file.
    job: PathBuf,
}

pub fn explain(args: ExplainArgs) -> Result<()> {
    let job = SqlJob::load(&args.job)?;
    print!("{}", job.explain());
    Ok(())
}

/// `log`: the embedded log when the job runs on one (its partitions and groups are in the
/// metrics then).
pub async fn run(client: SharedLogClient, log: Option<Log>, args: RunArgs) -> Result<()> {
    let mut job = SqlJob::load(&args.job)?;
    if let Some(g) = args.guarantee {
        job.plan.job.guarantee = g;
    }
    if let Some(n) = args.threads {
        job.plan.job.threads = Some(n);
    }
    job.plan.job.state_dir = args.state_dir.clone();
    let connectors = start_connectors(&client, &job).await?;
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} generating inputs: {pos} events ({per_sec})")
            .expect("a valid template"),
    );
    job.prepare(&client, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    let app = job.app(client, args.until_end)?;
    let running = Arc::new(AtomicBool::new(true));
    let _http = match &args.http {
        Some(addr) => {
            let (name, stats, running) = (job.job().name.clone(), app.stats(), running.clone());
            let sources = Sources {
                log,
                worker: connectors.clone(),
                jobs: Some(Arc::new(move || {
                    vec![JobView {
                        name: name.clone(),
                        running: running.load(Ordering::Relaxed),
                        stats: stats.clone(),
                    }]
                })),
                ..Default::default()
            };
            Some(super::server::metrics::serve(addr, sources).await?)
        }
        None => None,
    };
    tokio::spawn(runnel::demo::report_assignments(app.stats()));
    let stop = app.stop_flag();
    tokio::spawn(async move {
        super::connect::shutdown().await;
        eprintln!("stopping the job after its next commit");
        stop.store(true, Ordering::SeqCst);
    });
    eprintln!(
        "running job {} ({} statement(s), {}); dead letters go to {}",
        job.job().name,
        job.plan.statements.len(),
        job.job().guarantee,
        job.job().dead_letter_topic
    );
    let handle = tokio::runtime::Handle::current();
    let summary = tokio::task::spawn_blocking(move || app.run(&handle))
        .await
        .context("the job's thread panicked");
    running.store(false, Ordering::Relaxed);
    let summary = summary??;
    drop(connectors);
    let m = summary.metrics;
    let mut table = Table::new();
    table.set_header(vec![
        "records in",
        "records out",
        "dead letters",
        "late records",
        "tasks",
        "commits",
    ]);
    table.add_row(vec![
        m.records_in.to_string(),
        m.records_out.to_string(),
        m.dead_letters.to_string(),
        m.late_records.to_string(),
        summary.tasks.to_string(),
        summary.commits.to_string(),
    ]);
    println!("{table}");
    Ok(())
}

/// The `[[connector]]` tables of a job file, as worker-file configurations (checked as a
/// worker file's are, errors naming the job file). `runnel run` and `runnel server` use it.
pub(super) fn job_connectors(job: &SqlJob) -> Result<Vec<runnel_connectors::ConnectorConfig>> {
    let declared = &job.job().connectors;
    if declared.is_empty() {
        return Ok(Vec::new());
    }
    let mut doc = toml::Table::new();
    doc.insert(
        "connector".into(),
        toml::Value::Array(declared.iter().cloned().map(toml::Value::Table).collect()),
    );
    let path = job.job().path.display().to_string();
    Ok(runnel_connectors::workerfile::parse(
        &path,
        &doc.to_string(),
    )?)
}

/// The `[[connector]]` tables of the job file, run by a worker in this process.
async fn start_connectors(
    client: &SharedLogClient,
    job: &SqlJob,
) -> Result<Option<runnel_connectors::Worker>> {
    let configs = job_connectors(job)?;
    if configs.is_empty() {
        return Ok(None);
    }
    let worker = runnel_connectors::Worker::new(client.clone()).await?;
    for c in configs {
        let name = c.name.clone();
        worker.create(c)?;
        eprintln!("started connector {name}");
    }
    Ok(Some(worker))
}
