//! `/metrics`: what the server's parts count, in Prometheus' text format, gathered at each
//! scrape from where it is kept (the log's partitions and groups, the broker's request
//! counters, the jobs' statistics, the Connect worker's statuses, `/proc/self`). Nothing is
//! computed between scrapes, so an unscraped server pays only for its counters' atomic adds.
//!
//! Names follow Prometheus' conventions: `runnel_` prefix, `_total` counters, `_seconds`
//! histograms, `_bytes` sizes; labels `topic`, `partition`, `group`, `job`, `task`,
//! `connector`, `api`, `operator`.

use super::exposition::{Exposition, Kind};
use anyhow::{Context, Result};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use runnel_broker::metrics::Metrics as BrokerMetrics;
use runnel_connectors::Worker;
use runnel_engine::stats::AppStats;
use runnel_log::Log;
use std::sync::Arc;

/// A job as a scrape sees it.
pub struct JobView {
    pub name: String,
    pub running: bool,
    pub stats: Arc<AppStats>,
}

/// The jobs of the process, at each scrape.
pub type JobList = Arc<dyn Fn() -> Vec<JobView> + Send + Sync>;

/// The parts a scrape reads; any may be absent (`runnel run --http` has no broker, and over
/// `--bootstrap` no log of its own).
#[derive(Clone, Default)]
pub struct Sources {
    pub log: Option<Log>,
    pub broker: Option<Arc<BrokerMetrics>>,
    pub jobs: Option<JobList>,
    pub worker: Option<Worker>,
}

/// `GET /metrics` over `sources`.
pub fn router(sources: Sources) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let sources = sources.clone();
            async move {
                match tokio::task::spawn_blocking(move || render(&sources)).await {
                    Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
                        .into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
        }),
    )
}

/// The endpoint [`serve`] started; stops it when dropped (so that the log it reads closes).
pub struct Serving(tokio::task::JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `--http ADDR` of `runnel broker`, `run` and `connect`: serves `/metrics` on `addr` in the
/// background until the returned guard is dropped, and prints `HTTP on http://ADDR` for
/// scripts (port 0 picks a free one).
///
/// # Errors
///
/// When `addr` cannot be bound.
pub async fn serve(addr: &str, sources: Sources) -> Result<Serving> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for HTTP: use --http HOST:PORT"))?;
    println!("HTTP on http://{}", listener.local_addr()?);
    let app = router(sources);
    Ok(Serving(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    })))
}

/// One scrape's text.
pub fn render(s: &Sources) -> String {
    let mut e = Exposition::default();
    if let Some(log) = &s.log {
        log_metrics(&mut e, log);
        group_metrics(&mut e, log);
    }
    if let Some(b) = &s.broker {
        broker_metrics(&mut e, b);
    }
    if let Some(jobs) = &s.jobs {
        job_metrics(&mut e, &jobs());
    }
    if let Some(w) = &s.worker {
        connector_metrics(&mut e, w);
    }
    process_metrics(&mut e);
    e.finish()
}

fn log_metrics(e: &mut Exposition, log: &Log) {
    let mut parts = Vec::new();
    for name in log.topic_names() {
        if let Ok(t) = log.topic(&name) {
            for p in t.partitions() {
                parts.push((name.clone(), p));
            }
        }
    }
    let io: Vec<_> = parts.iter().map(|(_, p)| p.io_stats()).collect();
    let stats: Vec<_> = parts.iter().map(|(_, p)| p.stats()).collect();
    let label = |i: usize| (parts[i].0.as_str(), parts[i].1.id.to_string());
    macro_rules! per_partition {
        ($name:expr, $kind:expr, $help:expr, $value:expr) => {{
            let mut f = e.family($name, $kind, $help);
            for i in 0..parts.len() {
                let (topic, partition) = label(i);
                let v: u64 = $value(i);
                f.sample(&[("topic", topic), ("partition", &partition)], v as f64);
            }
        }};
    }
    per_partition!(
        "runnel_log_appended_records_total",
        Kind::Counter,
        "Records appended to the partition since the process opened it.",
        |i: usize| io[i].appended_records
    );
    per_partition!(
        "runnel_log_appended_bytes_total",
        Kind::Counter,
        "Bytes of record batches appended to the partition since the process opened it.",
        |i: usize| io[i].appended_bytes
    );
    per_partition!(
        "runnel_log_read_records_total",
        Kind::Counter,
        "Offsets handed to readers of the partition (consumers, fetches).",
        |i: usize| io[i].read_records
    );
    per_partition!(
        "runnel_log_read_bytes_total",
        Kind::Counter,
        "Bytes of record batches handed to readers of the partition.",
        |i: usize| io[i].read_bytes
    );
    per_partition!(
        "runnel_log_end_offset",
        Kind::Gauge,
        "The partition's high watermark (the next offset to be written).",
        |i: usize| stats[i].end_offset
    );
    per_partition!(
        "runnel_log_start_offset",
        Kind::Gauge,
        "The partition's first readable offset (retention moves it).",
        |i: usize| stats[i].start_offset
    );
    per_partition!(
        "runnel_log_size_bytes",
        Kind::Gauge,
        "Bytes of the partition's segment files.",
        |i: usize| stats[i].size_bytes
    );
    per_partition!(
        "runnel_log_segments",
        Kind::Gauge,
        "Segment files of the partition.",
        |i: usize| stats[i].segments as u64
    );
    e.family(
        "runnel_log_fsync_seconds",
        Kind::Histogram,
        "Latency of each fsync (fdatasync) of a log file.",
    )
    .histogram(&[], &runnel_log::stats::FSYNC_LATENCY.snapshot());
}

fn group_metrics(e: &mut Exposition, log: &Log) {
    let mut rows = Vec::new();
    for (group, _) in log.groups().list_groups() {
        for (tp, c) in log.groups().describe_group(&group).offsets {
            let end = log
                .partition(&tp)
                .map(|p| p.high_watermark())
                .unwrap_or(c.offset);
            rows.push((group.clone(), tp, c.offset, end));
        }
    }
    let mut committed = e.family(
        "runnel_group_committed_offset",
        Kind::Gauge,
        "The offset a consumer group committed (the next offset it reads).",
    );
    for (g, tp, c, _) in &rows {
        let partition = tp.partition.to_string();
        let labels = [
            ("group", g.as_str()),
            ("topic", &tp.topic),
            ("partition", &partition),
        ];
        committed.sample(&labels, *c as f64);
    }
    let mut lag = e.family(
        "runnel_group_lag",
        Kind::Gauge,
        "Records between a group's committed offset and the partition's end.",
    );
    for (g, tp, c, end) in &rows {
        let partition = tp.partition.to_string();
        let labels = [
            ("group", g.as_str()),
            ("topic", &tp.topic),
            ("partition", &partition),
        ];
        lag.sample(&labels, end.saturating_sub(*c) as f64);
    }
}

fn broker_metrics(e: &mut Exposition, b: &BrokerMetrics) {
    let apis = b.api_snapshots();
    let mut requests = e.family(
        "runnel_broker_requests_total",
        Kind::Counter,
        "Kafka protocol requests answered, per API.",
    );
    for a in &apis {
        requests.sample(&[("api", a.api)], a.count as f64);
    }
    let mut errors = e.family(
        "runnel_broker_request_errors_total",
        Kind::Counter,
        "Kafka protocol requests answered with an error, per API.",
    );
    for a in &apis {
        errors.sample(&[("api", a.api)], a.errors as f64);
    }
    let mut latency = e.family(
        "runnel_broker_request_seconds",
        Kind::Histogram,
        "Time from a request's arrival to its answer being queued, per API.",
    );
    for a in &apis {
        latency.histogram(&[("api", a.api)], &a.latency);
    }
    use std::sync::atomic::Ordering::Relaxed;
    e.family(
        "runnel_broker_connections",
        Kind::Gauge,
        "Open client connections.",
    )
    .sample(&[], b.connections_open.load(Relaxed) as f64);
    e.family(
        "runnel_broker_connections_total",
        Kind::Counter,
        "Client connections accepted.",
    )
    .sample(&[], b.connections_total.load(Relaxed) as f64);
    e.family(
        "runnel_broker_received_bytes_total",
        Kind::Counter,
        "Bytes of requests received.",
    )
    .sample(&[], b.bytes_in.load(Relaxed) as f64);
    e.family(
        "runnel_broker_sent_bytes_total",
        Kind::Counter,
        "Bytes of responses sent.",
    )
    .sample(&[], b.bytes_out.load(Relaxed) as f64);
}

fn job_metrics(e: &mut Exposition, all: &[JobView]) {
    let mut up = e.family(
        "runnel_job_running",
        Kind::Gauge,
        "1 while the job runs, 0 when it stopped or failed.",
    );
    for j in all {
        up.sample(&[("job", &j.name)], f64::from(u8::from(j.running)));
    }
    let tasks: Vec<_> = all.iter().map(|j| (j, j.stats.tasks())).collect();
    macro_rules! per_task {
        ($name:expr, $kind:expr, $help:expr, $value:expr) => {{
            let mut f = e.family($name, $kind, $help);
            for (j, ts) in &tasks {
                for (task, s) in ts {
                    if let Some(v) = $value(s) {
                        f.sample(&[("job", &j.name), ("task", task)], v);
                    }
                }
            }
        }};
    }
    use runnel_engine::stats::TaskStats;
    per_task!(
        "runnel_job_records_in_total",
        Kind::Counter,
        "Records the task read from its inputs.",
        |s: &TaskStats| Some(s.metrics.records_in as f64)
    );
    per_task!(
        "runnel_job_records_out_total",
        Kind::Counter,
        "Records the task wrote to its outputs.",
        |s: &TaskStats| Some(s.metrics.records_out as f64)
    );
    per_task!(
        "runnel_job_late_records_total",
        Kind::Counter,
        "Records that arrived after their window closed.",
        |s: &TaskStats| Some(s.metrics.late_records as f64)
    );
    per_task!(
        "runnel_job_dead_letters_total",
        Kind::Counter,
        "Records the task sent to the dead-letter topic.",
        |s: &TaskStats| Some(s.metrics.dead_letters as f64)
    );
    per_task!(
        "runnel_job_watermark_seconds",
        Kind::Gauge,
        "The task's watermark, as Unix time.",
        |s: &TaskStats| s.watermark.map(|w| w as f64 / 1000.0)
    );
    per_task!(
        "runnel_job_watermark_lag_seconds",
        Kind::Gauge,
        "How far the task's watermark is behind the wall clock.",
        |s: &TaskStats| s
            .watermark
            .map(|w| (runnel_log::types::now_ms() - w) as f64 / 1000.0)
    );
    per_task!(
        "runnel_job_state_entries",
        Kind::Gauge,
        "Entries in the task's state stores.",
        |s: &TaskStats| Some(s.store_entries as f64)
    );
    for (name, help, records_in) in [
        (
            "runnel_job_operator_records_in_total",
            "Records the operator received from its parents in the task.",
            true,
        ),
        (
            "runnel_job_operator_records_out_total",
            "Records the operator emitted to its children in the task.",
            false,
        ),
    ] {
        let mut f = e.family(name, Kind::Counter, help);
        for (j, ts) in &tasks {
            for (task, s) in ts {
                for op in &s.operators {
                    let v = if records_in {
                        op.records_in
                    } else {
                        op.records_out
                    };
                    f.sample(
                        &[("job", &j.name), ("task", task), ("operator", &op.name)],
                        v as f64,
                    );
                }
            }
        }
    }
    type Restore = fn((u64, u64)) -> u64;
    let restore: [(&str, Kind, &str, Restore); 2] = [
        (
            "runnel_job_restored_records_total",
            Kind::Counter,
            "Changelog records restored into the job's stores since it started.",
            |(done, _)| done,
        ),
        (
            "runnel_job_restore_pending_records",
            Kind::Gauge,
            "Changelog records the job's workers still have to restore before processing.",
            |(done, planned)| planned.saturating_sub(done),
        ),
    ];
    for (name, kind, help, value) in restore {
        let mut f = e.family(name, kind, help);
        for j in all {
            f.sample(
                &[("job", &j.name)],
                value(j.stats.restore_progress()) as f64,
            );
        }
    }
    let mut commits = e.family(
        "runnel_job_commit_seconds",
        Kind::Histogram,
        "Time each commit took (outputs flushed, offsets or transaction committed).",
    );
    for j in all {
        commits.histogram(&[("job", &j.name)], &j.stats.commit_latency.snapshot());
    }
}

fn connector_metrics(e: &mut Exposition, w: &Worker) {
    let names = w.names();
    let statuses: Vec<_> = names
        .iter()
        .filter_map(|n| w.status(n).ok().map(|s| (n, s)))
        .collect();
    let mut running = e.family(
        "runnel_connector_running",
        Kind::Gauge,
        "1 while the connector runs, 0 when paused, failed or stopped.",
    );
    for (n, s) in &statuses {
        let up = s.state == runnel_connectors::State::Running;
        running.sample(&[("connector", n)], f64::from(u8::from(up)));
    }
    let mut restarts = e.family(
        "runnel_connector_restarts_total",
        Kind::Counter,
        "Times the worker restarted the connector after a failure.",
    );
    for (n, s) in &statuses {
        restarts.sample(&[("connector", n)], s.restarts as f64);
    }
    drop(restarts);
    type Count = fn(&runnel_connectors::Status) -> u64;
    let counters: [(&str, &str, Count); 3] = [
        (
            "runnel_connector_records_total",
            "Records the connector read from its source or topics.",
            |s| s.records,
        ),
        (
            "runnel_connector_errors_total",
            "Bad records the connector skipped or set aside (errors.tolerance = all).",
            |s| s.errors,
        ),
        (
            "runnel_connector_dead_letters_total",
            "Bad records the connector wrote to its dead-letter topic.",
            |s| s.dead_letters,
        ),
    ];
    for (name, help, count) in counters {
        let mut f = e.family(name, Kind::Counter, help);
        for (n, s) in &statuses {
            f.sample(&[("connector", n)], count(s) as f64);
        }
    }
}

fn process_metrics(e: &mut Exposition) {
    let Some((cpu_seconds, rss_bytes)) = proc_self() else {
        return;
    };
    e.family(
        "runnel_process_cpu_seconds_total",
        Kind::Counter,
        "CPU time the process used (user and system).",
    )
    .sample(&[], cpu_seconds);
    e.family(
        "runnel_process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory of the process.",
    )
    .sample(&[], rss_bytes);
}

/// CPU seconds and resident bytes from `/proc/self/stat` (Linux).
fn proc_self() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may hold spaces, in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime, stime are fields 14 and 15, rss 24 (1-based, counting pid and comm).
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    Some(((ticks(14)? + ticks(15)?) / hz, ticks(24)? * page))
}
