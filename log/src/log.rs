//! The embedded log: a data directory of topics, their partitions, and the background work.
//!
//! Layout: `DATA/<topic>-<partition>/<base_offset:020>.{log,index,timeindex}` for data,
//! `DATA/.runnel/topics/<topic>.json` for each topic's config, `DATA/.runnel/lock` held with an
//! exclusive file lock while a process has the directory open (two writers would corrupt it).
//!
//! One background thread flushes `interval` partitions, applies retention and compaction, and
//! expires consumer-group sessions. Dropping the last [`Log`] handle stops and joins that thread,
//! then closes every partition cleanly (indexes written, clean-shutdown marker) and releases the
//! directory lock — all before the drop returns, so the directory can be reopened at once.

use crate::clock::Clock;
use crate::compaction;
use crate::config::{CleanupPolicy, Durability, TopicConfig, validate_topic_name};
use crate::error::{LogError, Result};
use crate::group::GroupCoordinator;
use crate::partition::{FetchResult, Partition, PartitionStats};
use crate::txn::coordinator::TransactionCoordinator;
use crate::txn::state_log::TRANSACTION_STATE_TOPIC;
use crate::types::TopicPartition;
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The internal compacted topic holding committed consumer-group offsets.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often the background thread writes producer-state snapshots (they shorten the scan
/// that rebuilds producer state after a crash).
const PRODUCER_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);

/// How the background thread paces itself.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// How often retention and compaction run (Kafka's `log.retention.check.interval.ms`).
    pub cleaner_interval: Duration,
    /// The time that segment ageing, retention, compaction and transaction timeouts read
    /// (see [`Clock`]); tests pass a manual one.
    pub clock: Clock,
    /// The most memory one compaction pass may hold for its key map (Kafka's
    /// `log.cleaner.dedupe.buffer.size`): 24 bytes per distinct key; a partition with more
    /// dirty keys than fit is compacted in several passes.
    pub cleaner_dedupe_buffer_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            cleaner_interval: Duration::from_secs(30),
            clock: Clock::system(),
            cleaner_dedupe_buffer_bytes: 128 << 20,
        }
    }
}

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    pub name: Arc<str>,
    config: RwLock<TopicConfig>,
    partitions: RwLock<Vec<Arc<Partition>>>,
    /// `partitions.len()`, read by every `send` without taking the lock.
    partition_count: AtomicU32,
}

impl Topic {
    pub fn config(&self) -> TopicConfig {
        self.config.read().clone()
    }
    pub fn partition_count(&self) -> u32 {
        self.partition_count.load(Ordering::Acquire)
    }
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().clone()
    }
    /// Partition `id` of this topic.
    ///
    /// # Errors
    ///
    /// [`LogError::UnknownPartition`] when the topic has no partition `id`.
    pub fn partition(&self, id: u32) -> Result<Arc<Partition>> {
        let parts = self.partitions.read();
        parts
            .get(id as usize)
            .cloned()
            .ok_or_else(|| LogError::UnknownPartition {
                topic: self.name.to_string(),
                partition: id,
                partitions: parts.len() as u32,
            })
    }
}

/// What `describe` shows of a topic.
#[derive(Debug, Clone)]
pub struct TopicDescription {
    pub name: String,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionStats>,
}

struct Inner {
    dir: PathBuf,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    groups: GroupCoordinator,
    transactions: TransactionCoordinator,
    clock: Clock,
    cleaner_dedupe_buffer_bytes: usize,
    _lock: File,
}

#[derive(Default)]
struct StopSignal {
    stop: Mutex<bool>,
    signal: Condvar,
}

impl StopSignal {
    fn stopped(&self) -> bool {
        *self.stop.lock()
    }

    /// Waits up to `timeout` for the stop; returns whether it came.
    fn wait(&self, timeout: Duration) -> bool {
        let mut stopped = self.stop.lock();
        if !*stopped {
            self.signal.wait_for(&mut stopped, timeout);
        }
        *stopped
    }
}

/// Shared by the [`Log`] handles; the last one's drop stops and joins the background threads,
/// whose `Arc<Inner>`s are then the last, so `Inner` is closed before that drop returns.
struct Owner {
    stop: Arc<StopSignal>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        *self.stop.stop.lock() = true;
        self.stop.signal.notify_all();
        for h in self.threads.lock().drain(..) {
            let _ = h.join();
        }
    }
}

/// Handle to an open data directory. Cheap to clone; all clones share the same log.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
    /// `None` only for the background thread's own handle, which must not keep it running.
    _owner: Option<Arc<Owner>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Log({})", self.inner.dir.display())
    }
}

impl Log {
    /// Opens (creating if needed) a data directory with default options.
    ///
    /// # Errors
    ///
    /// As [`open_with`](Self::open_with).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, LogOptions::default())
    }

    /// Opens (creating if needed) a data directory: takes its lock, recovers every partition
    /// (a torn tail after a crash is cut), loads group offsets and transactions, completes
    /// transactions a crash left prepared, and starts the background thread (flushes,
    /// retention, compaction, transaction timeouts, group sessions).
    ///
    /// # Errors
    ///
    /// - [`LogError::DataDirLocked`] when another process (or another open `Log` in this
    ///   one) holds the directory.
    /// - [`LogError::Io`] when the directory or a file in it cannot be created or read.
    /// - [`LogError::InvalidConfig`] when a stored topic config is not valid JSON.
    /// - [`LogError::Corrupt`] / [`LogError::InvalidBatch`] when the internal offsets or
    ///   transaction-state topics hold data that cannot be decoded.
    pub fn open_with(dir: impl AsRef<Path>, options: LogOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let meta = dir.join(".runnel").join("topics");
        std::fs::create_dir_all(&meta).map_err(|e| LogError::io(&meta, e))?;
        let lock = lock_data_dir(&dir)?;
        let started = Instant::now();
        let mut topics = BTreeMap::new();
        for entry in std::fs::read_dir(&meta).map_err(|e| LogError::io(&meta, e))? {
            let path = entry.map_err(|e| LogError::io(&meta, e))?.path();
            let Some(name) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| LogError::io(&path, e))?;
            let config: TopicConfig = serde_json::from_str(&text)
                .map_err(|e| LogError::InvalidConfig(format!("{}: {e}", path.display())))?;
            topics.insert(
                name.clone(),
                Arc::new(open_topic(&dir, &name, config, &options.clock)?),
            );
        }
        if !topics.contains_key(CONSUMER_OFFSETS_TOPIC) {
            let config = internal_topic_config();
            write_topic_config(&dir, CONSUMER_OFFSETS_TOPIC, &config)?;
            let t = open_topic(&dir, CONSUMER_OFFSETS_TOPIC, config, &options.clock)?;
            topics.insert(CONSUMER_OFFSETS_TOPIC.to_string(), Arc::new(t));
        }
        let offsets = topics[CONSUMER_OFFSETS_TOPIC].partition(0)?;
        let groups = GroupCoordinator::load(offsets)?;
        let txn_state = match topics.get(TRANSACTION_STATE_TOPIC) {
            Some(t) => Some(t.partition(0)?),
            None => None,
        };
        let transactions = TransactionCoordinator::load(txn_state, options.clock.clone())?;
        tracing::debug!(dir = %dir.display(), topics = topics.len(), elapsed = ?started.elapsed(), "opened log");
        let inner = Arc::new(Inner {
            dir,
            topics: RwLock::new(topics),
            groups,
            transactions,
            clock: options.clock.clone(),
            cleaner_dedupe_buffer_bytes: options.cleaner_dedupe_buffer_bytes,
            _lock: lock,
        });
        let stop = Arc::new(StopSignal::default());
        let owner = Arc::new(Owner {
            stop: stop.clone(),
            threads: Mutex::new(Vec::new()),
        });
        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            let handle = std::thread::Builder::new()
                .name(name.into())
                .spawn(body)
                .map_err(|e| LogError::io(".", e))?;
            owner.threads.lock().push(handle);
            Ok::<_, LogError>(())
        };
        {
            let (inner, stop) = (inner.clone(), stop.clone());
            spawn(
                "runnel-log-bg",
                Box::new(move || background_loop(&inner, &stop)),
            )?;
        }
        {
            // Its own thread, as Kafka's cleaner: a long compaction must not hold back
            // interval flushes, session expiry or transaction timeouts.
            let (inner, stop) = (inner.clone(), stop.clone());
            let interval = options.cleaner_interval;
            spawn(
                "runnel-log-cleaner",
                Box::new(move || {
                    while !stop.wait(interval) {
                        if let Err(e) = run_cleaner(&inner, &|| stop.stopped()) {
                            tracing::error!(error = %e, "retention/compaction failed; will retry");
                        }
                    }
                }),
            )?;
        }
        let log = Self {
            inner,
            _owner: Some(owner),
        };
        log.inner.transactions.recover(&log);
        let partitions: Vec<_> = (log.inner.topics.read().values())
            .flat_map(|t| t.partitions())
            .collect();
        log.inner.transactions.abort_hanging(&partitions);
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn groups(&self) -> &GroupCoordinator {
        &self.inner.groups
    }

    /// The transaction coordinator (its calls take this log, for the partitions they touch).
    pub fn transactions(&self) -> &TransactionCoordinator {
        &self.inner.transactions
    }

    /// Creates topic `name` with `config` and opens its partitions.
    ///
    /// # Errors
    ///
    /// - [`LogError::InvalidTopicName`] for a name Kafka would refuse.
    /// - [`LogError::InvalidConfig`] for a config that [`TopicConfig::validate`] refuses.
    /// - [`LogError::TopicExists`] when the name is taken.
    /// - [`LogError::Io`] when its directories or config file cannot be written.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>> {
        validate_topic_name(name)?;
        config.validate()?;
        let mut topics = self.inner.topics.write();
        if topics.contains_key(name) {
            return Err(LogError::TopicExists(name.to_string()));
        }
        remove_orphan_partitions(&self.inner.dir, name)?;
        write_topic_config(&self.inner.dir, name, &config)?;
        let topic = Arc::new(open_topic(
            &self.inner.dir,
            name,
            config,
            &self.inner.clock,
        )?);
        topics.insert(name.to_string(), topic.clone());
        tracing::info!(
            topic = name,
            partitions = topic.partition_count(),
            "created topic"
        );
        Ok(topic)
    }

    /// Topic `name`.
    ///
    /// # Errors
    ///
    /// [`LogError::UnknownTopic`] when there is none.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.inner
            .topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    /// The partition `tp`.
    ///
    /// # Errors
    ///
    /// [`LogError::UnknownTopic`] or [`LogError::UnknownPartition`].
    pub fn partition(&self, tp: &TopicPartition) -> Result<Arc<Partition>> {
        self.topic(&tp.topic)?.partition(tp.partition)
    }

    pub fn topic_names(&self) -> Vec<String> {
        self.inner.topics.read().keys().cloned().collect()
    }

    /// A topic's config and each partition's offsets, size and segment count.
    ///
    /// # Errors
    ///
    /// [`LogError::UnknownTopic`] when there is none.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let t = self.topic(name)?;
        Ok(TopicDescription {
            name: name.to_string(),
            config: t.config(),
            partitions: t.partitions().iter().map(|p| p.stats()).collect(),
        })
    }

    /// Deletes a topic and its data. Committed group offsets for it are dropped too; handles to
    /// its partitions still held elsewhere fail from now on instead of touching unlinked files.
    ///
    /// # Errors
    ///
    /// - [`LogError::InvalidConfig`] for the internal topics (`__consumer_offsets`,
    ///   `__transaction_state`).
    /// - [`LogError::UnknownTopic`] when there is none.
    /// - [`LogError::Io`] when its files cannot be removed (the topic is gone from this `Log`
    ///   either way; a crash in between leaves no data a new topic of the name would take).
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        if name == CONSUMER_OFFSETS_TOPIC || name == TRANSACTION_STATE_TOPIC {
            return Err(LogError::InvalidConfig(format!(
                "{name} is internal and cannot be deleted"
            )));
        }
        let topic = self
            .inner
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        // Data first, config last: a crash in between leaves a topic with empty partitions,
        // never partition directories that a new topic of the same name would take over.
        for p in topic.partitions() {
            p.mark_deleted();
            std::fs::remove_dir_all(p.dir()).map_err(|e| LogError::io(p.dir(), e))?;
        }
        let meta = topic_config_path(&self.inner.dir, name);
        std::fs::remove_file(&meta).map_err(|e| LogError::io(&meta, e))?;
        self.inner.groups.forget_topic(name)?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Grows a topic to `total` partitions (Kafka never shrinks a topic: keyed data would move).
    ///
    /// # Errors
    ///
    /// - [`LogError::UnknownTopic`] when there is none.
    /// - [`LogError::InvalidConfig`] when `total` is not larger than today's count, or above
    ///   the partition limit.
    /// - [`LogError::Io`] when a partition directory or the config cannot be written.
    pub fn add_partitions(&self, name: &str, total: u32) -> Result<()> {
        let topic = self.topic(name)?;
        let mut parts = topic.partitions.write();
        let current = parts.len() as u32;
        if total <= current {
            return Err(LogError::InvalidConfig(format!(
                "topic {name:?} already has {current} partitions; the new count must be larger"
            )));
        }
        let mut config = topic.config();
        config.partitions = total;
        config.validate()?;
        for id in current..total {
            parts.push(Arc::new(Partition::open(
                &self.inner.dir,
                topic.name.clone(),
                id,
                config.clone(),
                self.inner.clock.clone(),
            )?));
        }
        topic.partition_count.store(total, Ordering::Release);
        write_topic_config(&self.inner.dir, name, &config)?;
        *topic.config.write() = config;
        Ok(())
    }

    /// Replaces the stored config of topic `name` with `config` (same partition count: see
    /// [`add_partitions`](Self::add_partitions)). New partitions, [`Topic::config`] readers
    /// (the producer's codec choice, describe) see it at once; partitions already open keep
    /// the config they were opened with until the log is opened again.
    ///
    /// # Errors
    ///
    /// - [`LogError::UnknownTopic`] when there is none.
    /// - [`LogError::InvalidConfig`] when `config` changes the partition count or does not
    ///   validate.
    /// - [`LogError::Io`] when the config file cannot be written.
    pub fn alter_topic_config(&self, name: &str, config: TopicConfig) -> Result<()> {
        let topic = self.topic(name)?;
        let _parts = topic.partitions.write();
        let current = topic.config();
        if config.partitions != current.partitions {
            return Err(LogError::InvalidConfig(format!(
                "topic {name:?} has {} partitions; change the count with add_partitions",
                current.partitions
            )));
        }
        config.validate()?;
        write_topic_config(&self.inner.dir, name, &config)?;
        *topic.config.write() = config;
        Ok(())
    }

    /// Appends one encoded batch to a partition; returns its base offset. Blocking.
    ///
    /// # Errors
    ///
    /// As [`Log::partition`] and [`Partition::append`].
    pub fn append(&self, tp: &TopicPartition, batch: Vec<u8>) -> Result<u64> {
        self.partition(tp)?.append(batch)
    }

    /// Reads whole batches from `offset`, about `max_bytes`. Blocking.
    ///
    /// # Errors
    ///
    /// As [`Log::partition`] and [`Partition::read`].
    pub fn read(&self, tp: &TopicPartition, offset: u64, max_bytes: usize) -> Result<FetchResult> {
        self.partition(tp)?.read(offset, max_bytes)
    }

    /// Runs retention and compaction on every partition now (the background thread does this
    /// every `cleaner_interval`). Returns (segments deleted, records compacted away).
    ///
    /// # Errors
    ///
    /// The first [`LogError::Io`] or [`LogError::Corrupt`] a partition's retention or
    /// compaction meets; partitions after it are not cleaned this time.
    pub fn run_cleaner(&self) -> Result<(usize, u64)> {
        run_cleaner(&self.inner, &|| false)
    }
}

/// Retention and compaction of every partition; compaction stops early (between segments)
/// once `stopping` says so.
fn run_cleaner(inner: &Inner, stopping: &dyn Fn() -> bool) -> Result<(usize, u64)> {
    let now = inner.clock.now_ms();
    let topics: Vec<_> = inner.topics.read().values().cloned().collect();
    let (mut deleted, mut compacted) = (0, 0);
    for t in topics {
        let compact = t.config().cleanup_policy == CleanupPolicy::Compact;
        for p in t.partitions() {
            if compact {
                let budget = inner.cleaner_dedupe_buffer_bytes;
                compacted += compaction::compact(&p, now, budget, stopping)?;
            } else {
                deleted += p.apply_retention(now)?;
            }
        }
    }
    Ok((deleted, compacted))
}

fn background_loop(inner: &Arc<Inner>, stop: &StopSignal) {
    let tick = Duration::from_millis(20);
    let mut last_snapshot = Instant::now();
    // Not an owner: dropping the last user handle still stops this thread.
    let log = Log {
        inner: inner.clone(),
        _owner: None,
    };
    while !stop.wait(tick) {
        let topics: Vec<_> = inner.topics.read().values().cloned().collect();
        for t in &topics {
            if t.config().durability == Durability::Interval {
                for p in t.partitions() {
                    if let Err(e) = p.flush_if_due() {
                        tracing::error!(partition = ?p, error = %e, "flush failed");
                    }
                }
            }
        }
        inner.groups.expire_sessions();
        inner.transactions.abort_timed_out(&log);
        if last_snapshot.elapsed() >= PRODUCER_SNAPSHOT_INTERVAL {
            last_snapshot = Instant::now();
            for t in &topics {
                for p in t.partitions() {
                    p.save_producer_state();
                }
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.topics.read().values() {
            for p in t.partitions() {
                if let Err(e) = p.close() {
                    tracing::error!(partition = ?p, error = %e, "closing partition failed");
                }
            }
        }
    }
}

/// The internal topics' config (`__consumer_offsets`, `__transaction_state`): one compacted
/// partition, every write synced before it is answered.
pub(crate) fn internal_topic_config() -> TopicConfig {
    TopicConfig {
        partitions: 1,
        cleanup_policy: CleanupPolicy::Compact,
        durability: Durability::Always,
        retention_ms: None,
        segment_bytes: 16 << 20,
        ..Default::default()
    }
}

fn open_topic(dir: &Path, name: &str, config: TopicConfig, clock: &Clock) -> Result<Topic> {
    let name: Arc<str> = Arc::from(name);
    let partitions = (0..config.partitions)
        .map(|id| {
            Partition::open(dir, name.clone(), id, config.clone(), clock.clone()).map(Arc::new)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Topic {
        name,
        config: RwLock::new(config),
        partition_count: AtomicU32::new(partitions.len() as u32),
        partitions: RwLock::new(partitions),
    })
}

/// Removes `<name>-<n>` directories of a topic that has no config (left by a crash during
/// `delete_topic`), so a new topic of that name starts empty.
fn remove_orphan_partitions(dir: &Path, name: &str) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let path = entry.map_err(|e| LogError::io(dir, e))?.path();
        let file_name = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        let is_partition_of_name = file_name
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_partition_of_name && path.is_dir() {
            tracing::warn!(dir = %path.display(), "removing data left by an interrupted topic deletion");
            std::fs::remove_dir_all(&path).map_err(|e| LogError::io(&path, e))?;
        }
    }
    Ok(())
}

fn topic_config_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(".runnel")
        .join("topics")
        .join(format!("{name}.json"))
}

fn write_topic_config(dir: &Path, name: &str, config: &TopicConfig) -> Result<()> {
    let json = serde_json::to_string_pretty(config).expect("config serializes");
    crate::index::write_file(&topic_config_path(dir, name), json.as_bytes())
}

fn lock_data_dir(dir: &Path) -> Result<File> {
    let path = dir.join(".runnel").join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError::DataDirLocked {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(LogError::io(&path, e)),
    }
}
