//! The test driver: runs a topology in process against a temporary log, with several
//! partitions per input topic, so tests exercise the real runtime (tasks, repartition topics,
//! changelogs, commits) and not a simulation of it.

use crate::error::Result;
use crate::operator::TaskMetrics;
use crate::runtime::{StreamsConfig, Worker, plan};
use crate::serdes::{DefaultSerde, Serde};
use crate::state::KeyValueStore;
use crate::topology::{TopicName, Topology};
use runnel_log::{
    ConsumerConfig, Log, OffsetReset, Producer, ProducerConfig, ProducerRecord, Record,
    SharedLogClient, TopicConfig, TopicPartition,
};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

/// See the module documentation.
pub struct TestDriver {
    log: Log,
    client: SharedLogClient,
    rt: tokio::runtime::Runtime,
    topology: Option<Topology>,
    worker: Option<Worker>,
    config: StreamsConfig,
    partitions: u32,
    producer: Producer,
    _dir: tempfile::TempDir,
}

impl TestDriver {
    /// A driver whose input topics have 2 partitions.
    ///
    /// # Panics
    ///
    /// As [`with_partitions`](Self::with_partitions).
    pub fn new(topology: Topology) -> Self {
        Self::with_partitions(topology, 2)
    }

    /// A driver whose input topics have `partitions` partitions.
    ///
    /// # Panics
    ///
    /// If called inside an async context (the driver runs its own tokio runtime: use it from a
    /// plain `#[test]`), or if no temporary directory can be created.
    pub fn with_partitions(topology: Topology, partitions: u32) -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let log = Log::open(dir.path()).expect("opening a log in a temporary directory");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("starting a tokio runtime");
        let producer = rt.block_on(async { Producer::new(log.clone(), ProducerConfig::default()) });
        let mut config = StreamsConfig::new("test-app");
        config.num_threads = 1;
        Self {
            client: Arc::new(log.clone()),
            log,
            rt,
            topology: Some(topology),
            worker: None,
            config,
            partitions,
            producer,
            _dir: dir,
        }
    }

    /// Settings used when the topology starts (at the first `run`).
    pub fn config_mut(&mut self) -> &mut StreamsConfig {
        &mut self.config
    }

    /// The log the driver runs on (to create topics with other partition counts, read, ...).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Creates `name` with `partitions` partitions if it does not exist.
    ///
    /// # Panics
    ///
    /// If the log refuses it (an invalid topic name).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let cfg = TopicConfig {
            partitions,
            ..Default::default()
        };
        self.rt
            .block_on(self.client.ensure_topic(name, &cfg))
            .expect("creating a topic");
    }

    /// Appends a record (partitioned by key, as Kafka's default partitioner does).
    ///
    /// # Panics
    ///
    /// If the topic cannot be created (an invalid name), or the key or value does not serialize.
    pub fn pipe<K: DefaultSerde, V: DefaultSerde>(
        &mut self,
        topic: &str,
        key: K,
        value: V,
        timestamp: i64,
    ) {
        self.pipe_with(
            topic,
            &*K::default_serde(),
            &*V::default_serde(),
            key,
            value,
            timestamp,
        )
    }

    /// Appends a deletion of `key`.
    ///
    /// # Panics
    ///
    /// If the topic cannot be created (an invalid name), or the key does not serialize.
    pub fn pipe_tombstone<K: DefaultSerde>(&mut self, topic: &str, key: K, timestamp: i64) {
        let mut k = Vec::new();
        K::default_serde()
            .serialize(&key, &mut k)
            .expect("serializing the key");
        self.pipe_bytes(topic, Some(&k), None, timestamp);
    }

    /// Appends a record serialized with `ks` and `vs`.
    ///
    /// # Panics
    ///
    /// If the topic cannot be created (an invalid name), or `ks` or `vs` fails.
    pub fn pipe_with<K: 'static, V: 'static>(
        &mut self,
        topic: &str,
        ks: &dyn Serde<K>,
        vs: &dyn Serde<V>,
        key: K,
        value: V,
        timestamp: i64,
    ) {
        let (mut k, mut v) = (Vec::new(), Vec::new());
        let kp = ks.serialize(&key, &mut k).expect("serializing the key");
        let vp = vs.serialize(&value, &mut v).expect("serializing the value");
        self.pipe_bytes(topic, kp.then_some(&k[..]), vp.then_some(&v[..]), timestamp);
    }

    /// Appends raw bytes (for malformed input).
    ///
    /// # Panics
    ///
    /// If the topic cannot be created (an invalid name) or the log refuses the record.
    pub fn pipe_bytes(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) {
        self.create_topic(topic, self.partitions);
        let rec = ProducerRecord {
            topic,
            partition: None,
            key,
            value,
            headers: &[],
            timestamp: Some(timestamp),
        };
        self.rt.block_on(async {
            let f = self.producer.send(rec).await.expect("appending");
            f.await.expect("appending")
        });
    }

    fn worker(&mut self) -> Result<&mut Worker> {
        if self.worker.is_none() {
            let _runtime = self.rt.enter();
            let topology = self
                .topology
                .take()
                .expect("topology present until started");
            for st in &topology.subtopologies {
                for s in &st.sources {
                    if let TopicName::External(t) = s {
                        self.create_topic(t, self.partitions);
                    }
                }
            }
            let plan = Arc::new(
                self.rt
                    .block_on(plan(&topology, &self.client, &self.config))?,
            );
            let specs: Vec<(usize, u32)> = topology
                .subtopologies
                .iter()
                .flat_map(|st| (0..plan.tasks_of[st.id]).map(move |p| (st.id, p)))
                .collect();
            let w = Worker::new(
                Arc::new(topology),
                self.client.clone(),
                self.config.clone(),
                plan,
                &specs,
                0,
                self.rt.handle().clone(),
                Default::default(),
                crate::runtime::Member {
                    group: runnel_log::GroupMetadata::unmanaged(&self.config.application_id),
                    slot: 0,
                },
            )?;
            self.worker = Some(w);
        }
        Ok(self.worker.as_mut().expect("just set"))
    }

    /// Processes everything available (through repartition topics too), then commits.
    ///
    /// # Errors
    ///
    /// What [`App::run`](crate::App::run) returns, at the first `run` from starting the topology
    /// (`NotCoPartitioned`, `Topology`, `Store`) and from processing and committing after it
    /// (`Deserialize`, `TaskFailed`, `Log`, ...).
    pub fn try_run(&mut self) -> Result<()> {
        let w = self.worker()?;
        let mut quiet = 0;
        while quiet < 2 {
            let n = w.step(Duration::from_millis(20))?;
            w.commit()?;
            quiet = if n == 0 { quiet + 1 } else { 0 };
        }
        Ok(())
    }

    /// [`try_run`](Self::try_run), panicking on error.
    ///
    /// # Panics
    ///
    /// On any error [`try_run`](Self::try_run) returns.
    pub fn run(&mut self) {
        self.try_run().expect("running the topology");
    }

    /// Ends the input: processes everything, then the final watermark closes every window.
    ///
    /// # Errors
    ///
    /// As [`try_run`](Self::try_run), also from reading the inputs' end offsets.
    pub fn try_finish(&mut self) -> Result<()> {
        self.try_run()?;
        let w = self.worker()?;
        w.mark_ends()?;
        for _ in 0..10_000 {
            if w.all_finished() {
                break;
            }
            w.step(Duration::from_millis(5))?;
            w.commit()?;
        }
        w.commit()?;
        self.try_run()
    }

    /// [`try_finish`](Self::try_finish), panicking on error.
    ///
    /// # Panics
    ///
    /// On any error [`try_finish`](Self::try_finish) returns.
    pub fn finish(&mut self) {
        self.try_finish().expect("finishing the topology");
    }

    /// Every record of `topic`, ordered by (timestamp, partition, offset).
    pub fn read_records(&self, topic: &str) -> Vec<(u32, Record)> {
        let n = self
            .rt
            .block_on(self.client.partition_count(topic))
            .ok()
            .flatten()
            .unwrap_or(0);
        let tps: Vec<TopicPartition> = (0..n).map(|p| TopicPartition::new(topic, p)).collect();
        let ends = self
            .rt
            .block_on(self.client.end_offsets(&tps))
            .expect("end offsets");
        let mut out = Vec::new();
        self.rt.block_on(async {
            let mut c = self.client.consumer(ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                enable_auto_commit: false,
                ..Default::default()
            });
            c.assign(tps.clone()).expect("assign");
            let total: u64 = ends.iter().sum();
            let mut got = 0;
            while got < total {
                let recs = c.poll(Duration::from_millis(100)).await.expect("poll");
                got += recs.len() as u64;
                out.extend(recs.into_iter().map(|r| (r.partition, r.record)));
            }
        });
        out.sort_by_key(|(p, r)| (r.timestamp, *p, r.offset));
        out
    }

    /// Key and value of every record of `topic` (see [`read_records`](Self::read_records)).
    ///
    /// # Panics
    ///
    /// If a key or value does not deserialize with the default serde of `K` or `V` (the wrong
    /// types for the topic).
    pub fn read<K: DefaultSerde, V: DefaultSerde>(&self, topic: &str) -> Vec<(K, V)> {
        let (ks, vs) = (K::default_serde(), V::default_serde());
        self.read_records(topic)
            .into_iter()
            .map(|(_, r)| {
                (
                    ks.deserialize(r.key.as_deref()).expect("key"),
                    vs.deserialize(r.value.as_deref()).expect("value"),
                )
            })
            .collect()
    }

    /// `topic` read as a table: latest value per key, tombstones delete.
    ///
    /// # Panics
    ///
    /// If a key or value does not deserialize with the default serde of `K` or `V`.
    pub fn table<K: DefaultSerde + Hash + Eq, V: DefaultSerde>(
        &self,
        topic: &str,
    ) -> HashMap<K, V> {
        let (ks, vs) = (K::default_serde(), V::default_serde());
        let mut t = HashMap::new();
        for (_, r) in self.read_records(topic) {
            let k = ks.deserialize(r.key.as_deref()).expect("key");
            match r.value {
                Some(v) => {
                    t.insert(k, vs.deserialize(Some(&v)).expect("value"));
                }
                None => {
                    t.remove(&k);
                }
            }
        }
        t
    }

    /// The contents of a key-value store, over all tasks.
    pub fn kv_store<K: Hash + Eq + Clone + 'static, V: Clone + 'static>(
        &self,
        name: &str,
    ) -> HashMap<K, V> {
        let mut out = HashMap::new();
        if let Some(w) = &self.worker {
            for t in &w.tasks {
                for (h, _) in &t.stores {
                    if h.dynamic.borrow().name() == name
                        && let Some(s) = h.typed::<KeyValueStore<K, V>>()
                    {
                        s.borrow()
                            .for_each(&mut |k, v| {
                                out.insert(k.clone(), v.clone());
                                Ok(())
                            })
                            .expect("the store's entries read");
                    }
                }
            }
        }
        out
    }

    /// Moves wall-clock time forward for the topology (wall-clock punctuations, idle inputs),
    /// then processes what that triggers.
    ///
    /// # Errors
    ///
    /// As [`try_run`](Self::try_run).
    pub fn advance_wall_clock(&mut self, by: Duration) -> Result<()> {
        let w = self.worker()?;
        for t in &mut w.tasks {
            t.clock_skew += by;
        }
        self.try_run()
    }

    /// Records in, out, late and dead-lettered so far.
    pub fn metrics(&self) -> TaskMetrics {
        self.worker
            .as_ref()
            .map(|w| w.metrics())
            .unwrap_or_default()
    }
}
