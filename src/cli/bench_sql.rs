//! `runnel bench nexmark`: the Nexmark queries of `examples/nexmark/` over generated events.
//!
//! Each query runs on a fresh temporary data directory: the generator fills its inputs (the
//! events of all kinds are generated; each query keeps the kinds it reads), then the job runs
//! until its inputs are consumed and every window closed. Events/s = generated events / (time to
//! generate + time to run), as the Nexmark benchmark counts with its generator in the loop.

use super::output;
use anyhow::{Context, Result};
use clap::Args;
use runnel::log::{Log, SharedLogClient};
use runnel::sql::SqlJob;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct NexmarkArgs {
    /// Events generated per query (all kinds: 2 % persons, 6 % auctions, 92 % bids).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// The directory of query files.
    #[arg(long, default_value = "examples/nexmark")]
    queries: PathBuf,
    /// Only these queries (e.g. --query q0 --query q5).
    #[arg(long)]
    query: Vec<String>,
    /// 20000 events: a smoke test, not for numbers.
    #[arg(long)]
    quick: bool,
}

pub async fn run(args: NexmarkArgs) -> Result<()> {
    let events = if args.quick { 20_000 } else { args.events };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.queries)
        .with_context(|| format!("cannot read {}: pass --queries DIR", args.queries.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|f| f.extension().is_some_and(|e| e == "toml"));
    files.sort_by_key(|f| {
        let stem = f
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        (stem.len(), stem)
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut t = output::table(
        &[
            "query",
            "events",
            "generating s",
            "running s",
            "events/s",
            "per core",
            "records written",
        ],
        &[1, 2, 3, 4, 5, 6],
    );
    for file in files {
        let name = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !args.query.is_empty() && !args.query.contains(&name) {
            continue;
        }
        let text = std::fs::read_to_string(&file)?
            .replace("events = 1000000", &format!("events = {events}"));
        let job = SqlJob::parse(&file, &text)?;
        let tmp = tempfile::Builder::new()
            .prefix("runnel-bench-nexmark-")
            .tempdir()?;
        let log = Log::open(tmp.path())?;
        let client: SharedLogClient = Arc::new(log.clone());
        let pb = output::spinner("{spinner} {msg} {elapsed}", &format!("running {name}"));
        let started = Instant::now();
        job.prepare(&client, |_| {}).await?;
        let generated = started.elapsed().as_secs_f64();
        let app = job.app(client, true)?;
        let handle = tokio::runtime::Handle::current();
        let summary = tokio::task::spawn_blocking(move || app.run(&handle)).await??;
        let secs = started.elapsed().as_secs_f64();
        pb.finish_and_clear();
        t.add_row(vec![
            name,
            events.to_string(),
            format!("{generated:.2}"),
            format!("{:.2}", secs - generated),
            format!("{:.0} K", events as f64 / secs / 1e3),
            format!("{:.0} K", events as f64 / secs / 1e3 / cores as f64),
            summary.metrics.records_out.to_string(),
        ]);
        drop(job);
        super::close_log(log);
    }
    output::print(t)
}
