//! What the examples share: a temporary embedded log (or a broker, see [`Demo::new`]), a deterministic random source, JSON
//! records in, a bounded run of a topology, JSON records out.

use anyhow::Result;
use runnel_engine::{App, RunSummary, StreamsConfig, Topology};
use runnel_log::{Log, ProducerConfig, ProducerRecord, SharedLogClient, TopicConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// A temporary data directory with an embedded log, deleted on drop.
pub struct Demo {
    pub rt: tokio::runtime::Runtime,
    pub client: SharedLogClient,
    /// Over a broker, where other processes may run the same application.
    pub remote: bool,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// With `RUNNEL_BOOTSTRAP=HOST:PORT` set, the log is that broker's instead (Runnel's own
    /// or any Kafka-compatible one); topics then outlive the run.
    ///
    /// # Errors
    ///
    /// If no temporary directory or tokio runtime can be made, the log cannot be opened
    /// (`LogError`), or the broker at `RUNNEL_BOOTSTRAP` cannot be reached (`BrokerError::Connect`
    /// and the others of `RemoteLog::connect`).
    ///
    /// # Panics
    ///
    /// If called inside an async context (it blocks on its own runtime).
    pub fn new() -> Result<Self> {
        let bootstrap = std::env::var("RUNNEL_BOOTSTRAP").ok();
        Self::connect(bootstrap.as_deref().filter(|a| !a.is_empty()))
    }

    /// Over the broker at `bootstrap` when given, else a temporary embedded log.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    ///
    /// # Panics
    ///
    /// If called inside an async context (it blocks on its own runtime).
    pub fn connect(bootstrap: Option<&str>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let rt = tokio::runtime::Runtime::new()?;
        let client: SharedLogClient = match bootstrap {
            Some(addr) => rt.block_on(runnel_broker::RemoteLog::connect(addr))?,
            None => Arc::new(Log::open(dir.path())?),
        };
        eprintln!("running on the {}", client.describe());
        Ok(Self {
            rt,
            client,
            remote: bootstrap.is_some(),
            _dir: dir,
        })
    }

    /// Appends `(key, event time, value as JSON)` records to `topic`, created with `partitions`.
    ///
    /// # Errors
    ///
    /// If the topic cannot be created, a value does not serialize to JSON, or the log refuses a
    /// record or its flush (`LogError`). Records sent before the error stay written.
    ///
    /// # Panics
    ///
    /// If called inside an async context (it blocks on the demo's runtime).
    pub fn produce<T: Serialize>(
        &self,
        topic: &str,
        partitions: u32,
        records: impl IntoIterator<Item = (String, i64, T)>,
    ) -> Result<()> {
        self.rt.block_on(async {
            let cfg = TopicConfig {
                partitions,
                ..Default::default()
            };
            self.client.ensure_topic(topic, &cfg).await?;
            let p = self.client.producer(ProducerConfig::default());
            for (key, ts, value) in records {
                let v = serde_json::to_vec(&value)?;
                p.send(
                    ProducerRecord::new(topic, &v)
                        .key(key.as_bytes())
                        .timestamp(ts),
                )
                .await?;
            }
            p.flush().await?;
            Ok(())
        })
    }

    /// Prints the topology, then runs it until its inputs are consumed and windows closed.
    ///
    /// # Errors
    ///
    /// What [`App::run`] returns (`EngineError`): a missing input topic, a task that fails, ...
    ///
    /// # Panics
    ///
    /// If called inside an async context (it blocks on the demo's runtime).
    pub fn run(&self, topology: Topology, application_id: &str) -> Result<RunSummary> {
        self.run_with(topology, StreamsConfig::new(application_id))
    }

    /// [`run`](Self::run) with `config` (its `until_end` set). Over a broker, the process is
    /// one instance of the application: it prints the tasks its group hands it.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// # Panics
    ///
    /// If called inside an async context (it blocks on the demo's runtime).
    pub fn run_with(&self, topology: Topology, mut config: StreamsConfig) -> Result<RunSummary> {
        println!("{}", topology.describe());
        config.until_end = true;
        let app = App::new(topology, self.client.clone(), config);
        let report = self
            .remote
            .then(|| self.rt.spawn(report_assignments(app.stats())));
        let summary = app.run(self.rt.handle());
        if let Some(r) = report {
            r.abort();
        }
        Ok(summary?)
    }

    /// Every record of `topic` as (key, JSON value).
    ///
    /// # Errors
    ///
    /// As [`read_json`](crate::rides::read_json).
    ///
    /// # Panics
    ///
    /// If called inside an async context (it blocks on the demo's runtime).
    pub fn read<T: DeserializeOwned>(&self, topic: &str) -> Result<Vec<(String, T)>> {
        self.rt
            .block_on(crate::rides::read_json(&self.client, topic))
    }
}

/// A small deterministic random source (a 64-bit LCG), so every run generates the same data.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Uniform in `0..n`.
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Prints which tasks this instance holds whenever its group hands it new ones (the
/// application's other instances, over a broker, hold the rest), how long after an
/// assignment it was processing again and how much changelog that replayed, and when its
/// standby replicas have caught up. `runnel run` and the examples print these lines.
pub async fn report_assignments(stats: Arc<runnel_engine::stats::AppStats>) {
    let (mut shown, mut shown_processing, mut shown_standby) = (None, None, None);
    let mut replayed_before = 0;
    loop {
        let processing = stats.processing();
        if let Some((generation, took)) = processing.filter(|_| processing != shown_processing) {
            let replayed = stats.restore_progress().0;
            eprintln!(
                "processing (generation {generation}) {took:.2?} after the assignment, {} changelog record(s) replayed",
                replayed - replayed_before
            );
            (shown_processing, replayed_before) = (processing, replayed);
        }
        let standby = stats.standby_checkpointed();
        if let Some((generation, tasks)) = standby.filter(|_| standby != shown_standby) {
            eprintln!(
                "standby copies of {tasks} task(s) checkpointed up to what they committed (generation {generation})"
            );
            shown_standby = standby;
        }
        let now = stats.assignment();
        if let Some(a) = now.as_ref().filter(|_| now != shown) {
            let tasks = if a.tasks.is_empty() {
                "none".to_string()
            } else {
                a.tasks.join(", ")
            };
            eprintln!(
                "holding {} task(s): {tasks} (generation {}, {} instance(s))",
                a.tasks.len(),
                a.generation,
                a.instances
            );
            shown = now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
