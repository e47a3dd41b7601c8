//! `runnel bench nexmark`: the Nexmark queries over generated events.
//!
//! The nine queries of `examples/nexmark/` are built into the binary, so the bench runs from any
//! directory; `--dir` runs the `*.toml` files of another directory instead. Each query runs on a
//! fresh temporary data directory: the generator fills its inputs (the events of all kinds are
//! generated; each query keeps the kinds it reads), then the job runs until its inputs are
//! consumed and every window closed. Two rates are printed: events / running time (the query
//! alone, the figure the per-core targets are about) and events / (generating + running)
//! time (the generator in the loop, as the Nexmark benchmark counts). With `--repeat N` each
//! query runs N times and the medians are printed; `--json` prints one JSON object per query
//! instead of the table, for scripts.

use super::output;
use anyhow::{Context, Result, bail};
use clap::Args;
use runnel::log::{Log, SharedLogClient};
use runnel::sql::SqlJob;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The queries of `examples/nexmark/`, as the binary carries them.
const BUILT_IN: [(&str, &str); 9] = [
    ("q0", include_str!("../../examples/nexmark/q0.toml")),
    ("q1", include_str!("../../examples/nexmark/q1.toml")),
    ("q2", include_str!("../../examples/nexmark/q2.toml")),
    ("q3", include_str!("../../examples/nexmark/q3.toml")),
    ("q4", include_str!("../../examples/nexmark/q4.toml")),
    ("q5", include_str!("../../examples/nexmark/q5.toml")),
    ("q6", include_str!("../../examples/nexmark/q6.toml")),
    ("q7", include_str!("../../examples/nexmark/q7.toml")),
    ("q8", include_str!("../../examples/nexmark/q8.toml")),
];

#[derive(Debug, Args)]
pub struct NexmarkArgs {
    /// Events generated per query (all kinds: 2 % persons, 6 % auctions, 92 % bids).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Only these queries, comma-separated (e.g. --queries q0,q5); all of them by default.
    #[arg(long, alias = "query", value_delimiter = ',', value_name = "QUERIES")]
    queries: Vec<String>,
    /// Run the query files (`*.toml`) of this directory instead of the built-in queries.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Runs per query; the medians are printed.
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: usize,
    /// One JSON object per query on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// 20000 events: a smoke test, not for numbers.
    #[arg(long)]
    quick: bool,
}

/// A query to run: its name, where its text came from (for errors) and the text.
struct Query {
    name: String,
    origin: PathBuf,
    text: String,
}

/// One query's medians over its runs.
struct Measured {
    generating_s: f64,
    running_s: f64,
    records_written: u64,
}

pub async fn run(args: NexmarkArgs) -> Result<()> {
    let events = if args.quick { 20_000 } else { args.events };
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let queries = select(load(args.dir.as_deref())?, &args.queries)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut t = output::table(
        &[
            "query",
            "events",
            "generating s",
            "running s",
            "events/s running",
            "per core running",
            "events/s with generator",
            "per core with generator",
            "records written",
        ],
        &[1, 2, 3, 4, 5, 6, 7, 8],
    );
    for query in queries {
        let m = measure(&query, events, args.repeat).await?;
        let running = events as f64 / m.running_s;
        let total = events as f64 / (m.generating_s + m.running_s);
        if args.json {
            output::print(serde_json::json!({
                "query": query.name,
                "events": events,
                "runs": args.repeat,
                "cores": cores,
                "generating_s": m.generating_s,
                "running_s": m.running_s,
                "events_per_s_running": running.round(),
                "per_core_running": (running / cores as f64).round(),
                "events_per_s_with_generator": total.round(),
                "per_core_with_generator": (total / cores as f64).round(),
                "records_written": m.records_written,
            }))?;
        } else {
            let k = |r: f64| format!("{:.0} K", r / 1e3);
            t.add_row(vec![
                query.name,
                events.to_string(),
                format!("{:.2}", m.generating_s),
                format!("{:.2}", m.running_s),
                k(running),
                k(running / cores as f64),
                k(total),
                k(total / cores as f64),
                m.records_written.to_string(),
            ]);
        }
    }
    if args.json {
        return Ok(());
    }
    output::print(t)?;
    output::print(format!(
        "{cores} cores; medians of {} run(s); running = the job alone, after its inputs were \
         generated",
        args.repeat
    ))
}

/// The built-in queries, or the `*.toml` files of `dir`, in query order (q2 before q10).
fn load(dir: Option<&Path>) -> Result<Vec<Query>> {
    let Some(dir) = dir else {
        return Ok(BUILT_IN
            .iter()
            .map(|(name, text)| Query {
                name: (*name).to_string(),
                origin: PathBuf::from(format!("built-in nexmark/{name}.toml")),
                text: (*text).to_string(),
            })
            .collect());
    };
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the query directory {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        queries.push(Query {
            name,
            origin: path,
            text,
        });
    }
    if queries.is_empty() {
        bail!("{} holds no query files (*.toml)", dir.display());
    }
    queries.sort_by(|a, b| (a.name.len(), &a.name).cmp(&(b.name.len(), &b.name)));
    Ok(queries)
}

/// The queries named in `wanted` (all when it is empty); an unknown name is an error listing
/// the known ones.
fn select(queries: Vec<Query>, wanted: &[String]) -> Result<Vec<Query>> {
    if let Some(unknown) = wanted
        .iter()
        .find(|w| !queries.iter().any(|q| &q.name == *w))
    {
        let known: Vec<&str> = queries.iter().map(|q| q.name.as_str()).collect();
        bail!(
            "no query named {unknown:?}; the queries are {}",
            known.join(", ")
        );
    }
    Ok(queries
        .into_iter()
        .filter(|q| wanted.is_empty() || wanted.contains(&q.name))
        .collect())
}

async fn measure(query: &Query, events: u64, repeat: usize) -> Result<Measured> {
    let text = query
        .text
        .replace("events = 1000000", &format!("events = {events}"));
    let mut generating = Vec::with_capacity(repeat);
    let mut running = Vec::with_capacity(repeat);
    let mut records_written = 0;
    for run in 1..=repeat {
        let job = SqlJob::parse(&query.origin, &text)?;
        let tmp = tempfile::Builder::new()
            .prefix("runnel-bench-nexmark-")
            .tempdir()?;
        let log = Log::open(tmp.path())?;
        let client: SharedLogClient = Arc::new(log.clone());
        let pb = output::spinner(
            "{spinner} {msg} {elapsed}",
            &format!("running {} ({run}/{repeat})", query.name),
        );
        let started = Instant::now();
        job.prepare(&client, |_| {}).await?;
        let generated = started.elapsed();
        let app = job.app(client, true)?;
        let handle = tokio::runtime::Handle::current();
        let summary = tokio::task::spawn_blocking(move || app.run(&handle)).await??;
        let ran = started.elapsed() - generated;
        pb.finish_and_clear();
        generating.push(generated.as_secs_f64());
        running.push(ran.as_secs_f64());
        records_written = summary.metrics.records_out;
        drop(job);
        super::close_log(log);
    }
    Ok(Measured {
        generating_s: output::median(&mut generating),
        running_s: output::median(&mut running),
        records_written,
    })
}
