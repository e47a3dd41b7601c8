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
        let dir = tempfile::tempdir()?;
        let rt = tokio::runtime::Runtime::new()?;
        let client: SharedLogClient = match std::env::var("RUNNEL_BOOTSTRAP") {
            Ok(addr) if !addr.is_empty() => {
                rt.block_on(runnel_broker::RemoteLog::connect(&addr))?
            }
            _ => Arc::new(Log::open(dir.path())?),
        };
        eprintln!("running on the {}", client.describe());
        Ok(Self {
            rt,
            client,
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
        println!("{}", topology.describe());
        let mut config = StreamsConfig::new(application_id);
        config.until_end = true;
        Ok(App::new(topology, self.client.clone(), config).run(self.rt.handle())?)
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
