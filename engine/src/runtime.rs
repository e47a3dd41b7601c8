//! Running a topology: [`App`] (worker threads over a log client) and the [`Worker`] loop.
//!
//! Contract (at-least-once):
//! - Tasks are created for every partition of every sub-topology and spread round-robin over
//!   `num_threads` worker threads; a worker polls the partitions of its tasks with one consumer
//!   of the application's group (`application_id`), processes runs of records per partition,
//!   and sends what the tasks produced to the log through its producer.
//! - Every `commit_interval`: barrier through every task, dirty store entries to the
//!   changelogs, flush the producer, then commit in one request both the input positions and
//!   the changelogs' end offsets. A restart restores each store from its changelog up to the
//!   committed changelog offset only, and rewrites the keys written after it (by a run that
//!   died before committing) with their restored values — so state always matches the
//!   committed input positions, and a crash can only re-emit results, never double-count.
//! - Exactly-once ([`ProcessingGuarantee::ExactlyOnce`], Kafka Streams' `exactly_once_v2`):
//!   each worker's producer is transactional (`<application.id>-worker-<n>`, so a restarted
//!   instance fences the previous one and aborts what it left open); every commit interval
//!   (100 ms by default) one transaction holds the outputs, the changelog and repartition
//!   writes, and the input positions and changelog ends as transactional offsets. Readers are
//!   `read_committed`, restores read committed changelog data only, and a fenced worker stops
//!   with the fencing error.
//! - Instances (see [`crate::instance`]): every process running the application joins its
//!   group (`application_id`); the leader assigns the tasks over the instances, and each runs
//!   its own on its worker threads. Commits carry the instance's group generation, so a
//!   member that lost its tasks to a rebalance cannot commit for them; a rebalance stops the
//!   workers after a last commit (and a local checkpoint) and starts them on the new tasks.
//! - The unit of backpressure is the producer's buffer (`send` waits when it is full), which
//!   holds the worker's loop, which stops polling.

use crate::dsl::{Data, Key};
use crate::error::{EngineError, QueryRefused, Result};
use crate::operator::TaskMetrics;
use crate::query::{self, Queries, TableRows, TaskAnswer};
use crate::stats::{AppStats, OperatorStats, TaskStats};
use crate::task::{Input, OnDeserializeError, Task};
use crate::topology::{Instantiation, NodeKind, TopicName, Topology, changelog_topic};
use runnel_log::{
    CleanupPolicy, Compression, ConsumerConfig, GroupMetadata, LogConsumer, LogProducer,
    OffsetReset, ProducerConfig, RecordRun, SharedLogClient, TopicConfig, TopicPartition,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedReceiver;

/// Application settings, named after Kafka Streams'.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// Group id, prefix of internal topics (`<id>-<node>-repartition`, `<id>-<store>-changelog`).
    pub application_id: String,
    pub num_threads: usize,
    pub commit_interval: Duration,
    /// A partition without records for this long does not hold the watermark back.
    pub idle_timeout: Duration,
    /// Stop once every input is consumed up to where it ended at start, with all windows closed.
    pub until_end: bool,
    pub on_deserialize_error: OnDeserializeError,
    /// Late records go here (they are always counted).
    pub late_records_topic: Option<String>,
    /// Where local checkpoints of the stores go (`None`, the default: none, so a restart
    /// replays each changelog in full). One directory per machine; files are per app and task.
    pub state_dir: Option<std::path::PathBuf>,
    /// How often stores are checkpointed locally (also at a clean stop).
    pub checkpoint_interval: Duration,
    /// `processing.guarantee`; set it with [`StreamsConfig::guarantee`], which also picks the
    /// guarantee's default commit interval.
    pub processing_guarantee: ProcessingGuarantee,
    /// `num.standby.replicas`: how many other instances keep a warm copy of each task's
    /// state (see [`crate::standby`]), so that a failover restores little.
    pub num_standby_replicas: usize,
    /// The codec of every batch the app writes (outputs, changelogs, repartition topics):
    /// Kafka's producer `compression.type`. A topic with its own codec gets that one.
    pub compression: Compression,
    /// Where stores keep their entries unless chosen by name
    /// ([`crate::StreamsBuilder::store_storage`]): memory (the default) or disk under
    /// `state_dir` (a private directory without one), for the kinds of store that can.
    pub storage: crate::state::Storage,
}

/// Kafka Streams' `processing.guarantee`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessingGuarantee {
    /// Outputs flushed, then input positions committed: a crash may re-emit outputs.
    #[default]
    AtLeastOnce,
    /// Outputs, state changes and input positions committed in one transaction per commit
    /// interval: a crash changes nothing a `read_committed` reader sees.
    ExactlyOnce,
}

impl std::str::FromStr for ProcessingGuarantee {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "at-least-once" | "at_least_once" => Ok(Self::AtLeastOnce),
            "exactly-once" | "exactly_once" | "exactly_once_v2" => Ok(Self::ExactlyOnce),
            o => Err(EngineError::Config(format!(
                "guarantee {o:?} is not one of \"at-least-once\", \"exactly-once\""
            ))),
        }
    }
}

impl std::fmt::Display for ProcessingGuarantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AtLeastOnce => "at-least-once",
            Self::ExactlyOnce => "exactly-once",
        })
    }
}

/// Kafka Streams' commit interval under exactly-once.
pub const EXACTLY_ONCE_COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Kafka Streams' `transaction.timeout.ms` under exactly-once: how long a crashed instance's
/// open transaction holds `read_committed` readers back when nobody takes over its id.
const EXACTLY_ONCE_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

impl StreamsConfig {
    pub fn new(application_id: &str) -> Self {
        Self {
            application_id: application_id.into(),
            num_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            commit_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            until_end: false,
            on_deserialize_error: OnDeserializeError::default(),
            late_records_topic: None,
            state_dir: None,
            checkpoint_interval: Duration::from_secs(30),
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            num_standby_replicas: 0,
            compression: Compression::None,
            storage: crate::state::Storage::Memory,
        }
    }

    /// Sets the processing guarantee and its default commit interval (1 s at-least-once,
    /// 100 ms exactly-once, as in Kafka Streams); set `commit_interval` after this to change it.
    pub fn guarantee(mut self, guarantee: ProcessingGuarantee) -> Self {
        self.processing_guarantee = guarantee;
        self.commit_interval = match guarantee {
            ProcessingGuarantee::AtLeastOnce => Duration::from_secs(1),
            ProcessingGuarantee::ExactlyOnce => EXACTLY_ONCE_COMMIT_INTERVAL,
        };
        self
    }

    fn exactly_once(&self) -> bool {
        self.processing_guarantee == ProcessingGuarantee::ExactlyOnce
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunSummary {
    pub metrics: TaskMetrics,
    pub tasks: usize,
    pub commits: u64,
    /// Changelog records replayed at start (after any local checkpoint).
    pub restored_records: u64,
}

/// Topics resolved for one application: partition counts and task layout.
pub(crate) struct Plan {
    pub partitions_of: HashMap<String, u32>,
    /// Per sub-topology: its task count.
    pub tasks_of: Vec<u32>,
    /// Repartition topic → number of upstream tasks writing into it.
    pub writers_of: HashMap<String, u32>,
}

/// Resolves partition counts, checks co-partitioning, creates internal and missing output topics.
pub(crate) async fn plan(
    topology: &Topology,
    client: &SharedLogClient,
    config: &StreamsConfig,
) -> Result<Plan> {
    let app = &config.application_id;
    let mut partitions_of = HashMap::new();
    let mut tasks_of = vec![0u32; topology.subtopologies.len()];
    let mut writers_of = HashMap::new();
    let sink_st: HashMap<String, usize> = topology
        .subtopologies
        .iter()
        .flat_map(|st| {
            st.nodes
                .iter()
                .filter_map(move |&n| match &topology.nodes[n].kind {
                    NodeKind::Sink { topic } => Some((topic.resolve(app), st.id)),
                    _ => None,
                })
        })
        .collect();
    for st in &topology.subtopologies {
        let mut counts = BTreeMap::new();
        for t in &st.sources {
            if let TopicName::External(name) = t {
                let n = client.partition_count(name).await?.ok_or_else(|| {
                    EngineError::Log(runnel_log::LogError::UnknownTopic(name.clone()))
                })?;
                counts.insert(name.clone(), n);
            }
        }
        let distinct: std::collections::BTreeSet<u32> = counts.values().copied().collect();
        if distinct.len() > 1 {
            return Err(EngineError::NotCoPartitioned {
                topics: counts.keys().cloned().collect::<Vec<_>>().join(", "),
                counts: counts
                    .iter()
                    .map(|(t, n)| format!("{t}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut n = distinct.into_iter().next();
        for t in &st.sources {
            if let TopicName::Internal(_) = t {
                let name = t.resolve(app);
                let upstream = sink_st.get(&name).map_or(1, |&u| tasks_of[u].max(1));
                writers_of.insert(name.clone(), upstream);
                let count = *n.get_or_insert(upstream);
                counts.insert(name, count);
            }
        }
        let n = n.unwrap_or(1);
        tasks_of[st.id] = n;
        for (name, count) in counts {
            partitions_of.insert(name, count);
        }
    }
    let dlq = format!("{app}-dlq");
    let mut ensure = vec![(dlq, 1, CleanupPolicy::Delete)];
    if let Some(t) = &config.late_records_topic {
        ensure.push((t.clone(), 1, CleanupPolicy::Delete));
    }
    for (topic, _) in topology.internal_topics() {
        let name = topic.resolve(app);
        if let Some(&n) = partitions_of.get(&name) {
            ensure.push((name, n, CleanupPolicy::Delete));
        }
    }
    for st in &topology.subtopologies {
        for store in &st.stores {
            ensure.push((
                changelog_topic(store).resolve(app),
                tasks_of[st.id],
                CleanupPolicy::Compact,
            ));
        }
        for &n in &st.nodes {
            if let NodeKind::Sink {
                topic: TopicName::External(t),
            } = &topology.nodes[n].kind
            {
                ensure.push((t.clone(), tasks_of[st.id], CleanupPolicy::Delete));
            }
        }
    }
    for (name, partitions, cleanup_policy) in ensure {
        let cfg = TopicConfig {
            partitions,
            cleanup_policy,
            ..Default::default()
        };
        let n = client.ensure_topic(&name, &cfg).await?;
        partitions_of.insert(name, n);
    }
    Ok(Plan {
        partitions_of,
        tasks_of,
        writers_of,
    })
}

/// Runs a topology until stopped (or, with `until_end`, until the inputs are consumed).
pub struct App {
    pub(crate) topology: Arc<Topology>,
    pub(crate) client: SharedLogClient,
    pub(crate) config: StreamsConfig,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) stats: Arc<AppStats>,
    queries: Arc<Queries>,
}

impl App {
    pub fn new(topology: Topology, client: SharedLogClient, config: StreamsConfig) -> Self {
        Self {
            topology: Arc::new(topology),
            client,
            config,
            stop: Arc::new(AtomicBool::new(false)),
            stats: Arc::default(),
            queries: Arc::default(),
        }
    }

    /// The running application's figures, as of each worker's last commit (see
    /// [`crate::stats`]); the same handle before, during and after [`run`](Self::run).
    pub fn stats(&self) -> Arc<AppStats> {
        self.stats.clone()
    }

    /// Interactive queries of the running application's stores (see [`crate::query`]).
    pub fn queries(&self) -> Arc<Queries> {
        self.queries.clone()
    }

    /// Reads the aggregation store `store` as the table it emits: the rows of `key` (or of
    /// every key) per task, as the aggregation would emit them now, handed to `finish` on the
    /// task's worker thread (to turn them into what the caller keeps).
    ///
    /// # Errors
    ///
    /// `EngineError::Query`: the store is unknown or not an aggregation's
    /// ([`QueryRefused::NotATable`]), or as [`Queries::query`]. A task whose store holds other
    /// types than `K` and `A`, or whose `finish` fails, answers with the error.
    pub fn query_table<K, A, T>(
        &self,
        store: &str,
        key: Option<K>,
        timeout: Duration,
        finish: impl Fn(TableRows<K, A>) -> std::result::Result<T, String> + Send + Sync + 'static,
    ) -> Result<Vec<TaskAnswer<T>>>
    where
        K: Key + Send + Sync,
        A: Data,
        T: Send + 'static,
    {
        let def = self.topology.stores.iter().find(|s| s.name == store);
        let def =
            def.ok_or_else(|| EngineError::Query(QueryRefused::UnknownStore(store.into())))?;
        let reader = (def.reader.clone())
            .ok_or_else(|| EngineError::Query(QueryRefused::NotATable(store.into())))?;
        self.queries.query(store, timeout, move |h| {
            let rows = reader(h, key.as_ref().map(|k| k as &dyn std::any::Any))?;
            let rows = rows
                .downcast::<TableRows<K, A>>()
                .map_err(|_| "the store's key or value type is not the one asked for")?;
            finish(*rows)
        })
    }

    /// Set to stop the application after its next commit.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Runs on worker threads; blocks until done. `rt` runs the log client's async parts.
    ///
    /// # Errors
    ///
    /// The first error of any worker thread (the others then stop at their next commit):
    /// - `EngineError::Log` from the log client: `LogError::UnknownTopic` for a missing input
    ///   topic, or a failure to create the internal and output topics, poll, produce, commit
    ///   (a fenced transactional producer with exactly-once);
    /// - `EngineError::NotCoPartitioned` if inputs read by one task differ in partition count;
    /// - `EngineError::Topology` if a node uses a store it did not declare, or with another type;
    /// - `EngineError::Store` if a changelog record or local checkpoint cannot be restored into
    ///   its store, or a store's changes cannot be encoded at a commit;
    /// - `EngineError::Deserialize` for a record that does not deserialize, with
    ///   [`OnDeserializeError::Fail`];
    /// - `EngineError::TaskFailed` when an operator fails (or user code panics) on a record;
    /// - `EngineError::Io` if a local checkpoint cannot be written (`state_dir`).
    ///
    /// # Panics
    ///
    /// If called from inside an async context (it blocks on `rt`): call it from a plain thread,
    /// or through `spawn_blocking`.
    pub fn run(&self, rt: &Handle) -> Result<RunSummary> {
        crate::instance::run(self, rt)
    }

    /// Runs `specs` (sub-topology, partition) on worker threads as `member` until `stop`, or
    /// with `until_end` until they are all done.
    pub(crate) fn run_tasks(
        &self,
        rt: &Handle,
        config: &StreamsConfig,
        plan: &Arc<Plan>,
        specs: &[(usize, u32)],
        member: &Member,
        stop: &Stop,
    ) -> Result<TasksRun> {
        let threads = config.num_threads.clamp(1, specs.len().max(1));
        tracing::debug!(app = %config.application_id, tasks = specs.len(), threads,
            log = %self.client.describe(), "starting\n{}", self.topology.describe());
        let mut per_thread: Vec<Vec<(usize, u32)>> = vec![Vec::new(); threads];
        for (i, s) in specs.iter().enumerate() {
            per_thread[i % threads].push(*s);
        }
        let (started, ready) = (
            Instant::now(),
            Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        );
        let handles: Vec<_> = per_thread
            .into_iter()
            .enumerate()
            .map(|(i, specs)| {
                let (topology, client, config, plan, stop, rt, stats) = (
                    self.topology.clone(),
                    self.client.clone(),
                    config.clone(),
                    plan.clone(),
                    stop.clone(),
                    rt.clone(),
                    self.stats.clone(),
                );
                let (queries, member, ready) =
                    (self.queries.clone(), member.clone(), ready.clone());
                std::thread::Builder::new()
                    .name(format!("runnel-stream-{i}"))
                    .spawn(move || -> Result<(RunSummary, Vec<String>)> {
                        // Log clients may spawn tasks (a network client's connections).
                        let handle = rt.clone();
                        let _runtime = handle.enter();
                        let generation = member.group.generation;
                        let built = Worker::new(
                            topology,
                            client,
                            config,
                            plan,
                            &specs,
                            i,
                            rt,
                            stats.clone(),
                            member,
                        );
                        let r = built.and_then(|mut w| {
                            if ready.fetch_add(1, Ordering::AcqRel) + 1 == threads {
                                stats.processing_from(generation, started.elapsed());
                            }
                            w.queries = Some(queries.register());
                            let summary = w.run_loop(&stop)?;
                            let finished = (w.tasks.iter())
                                .filter(|t| t.finished)
                                .map(|t| t.name.to_string())
                                .collect();
                            Ok((summary, finished))
                        });
                        if r.is_err() {
                            stop.ended.store(true, Ordering::Release);
                        }
                        r
                    })
                    .expect("spawning a worker thread")
            })
            .collect();
        let mut run = TasksRun {
            summary: RunSummary::default(),
            finished: Vec::new(),
        };
        let mut first_err = None;
        for h in handles {
            match h.join().expect("worker threads return errors, not panics") {
                Ok((s, finished)) => {
                    run.summary.tasks += s.tasks;
                    run.summary.commits += s.commits;
                    run.summary.restored_records += s.restored_records;
                    add_metrics(&mut run.summary.metrics, &s.metrics);
                    run.finished.extend(finished);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(run), Err)
    }
}

/// What one generation's workers did, and which of their tasks are done (`until_end`).
pub(crate) struct TasksRun {
    pub summary: RunSummary,
    pub finished: Vec<String>,
}

/// Who the workers commit as: the instance's group generation, and its slot (which names
/// its transactional ids under exactly-once).
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub group: GroupMetadata,
    pub slot: u32,
}

/// When the workers of a generation stop (after a last commit): the application is asked
/// to stop, the group rebalances, or a worker failed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stop {
    pub app: Arc<AtomicBool>,
    pub rejoin: Arc<AtomicBool>,
    /// Set when a worker failed, or the generation's work ended (the standbys then stop).
    pub ended: Arc<AtomicBool>,
    /// Whether the stores are checkpointed when the workers stop for good (a `state_dir` the
    /// user set); they always are when they stop for a rebalance.
    pub checkpoint_on_exit: bool,
}

impl Stop {
    pub(crate) fn requested(&self) -> bool {
        [&self.app, &self.rejoin, &self.ended]
            .iter()
            .any(|f| f.load(Ordering::Acquire))
    }
}

pub(crate) fn add_metrics(a: &mut TaskMetrics, b: &TaskMetrics) {
    a.records_in += b.records_in;
    a.records_out += b.records_out;
    a.late_records += b.late_records;
    a.dead_letters += b.dead_letters;
}

/// Polled record runs (or the poll's error), from the prefetch task to the worker.
type Feed = tokio::sync::mpsc::Receiver<runnel_log::Result<Vec<RecordRun>>>;

/// How long a bounded run may go without records before it says what it waits for.
const STALL_REPORT: Duration = Duration::from_secs(10);

/// How many polled batches may wait for the worker: the bound of the prefetch channel.
const PREFETCH_BATCHES: usize = 4;

/// One thread's tasks, consumer and producer.
pub(crate) struct Worker {
    pub tasks: Vec<Task>,
    /// Polls in `step` until [`Worker::start_prefetch`] hands it to a prefetch task.
    consumer: Option<Box<dyn LogConsumer>>,
    /// Who commits the offsets: the instance's group generation.
    group: GroupMetadata,
    feed: Option<Feed>,
    producer: Box<dyn LogProducer>,
    client: SharedLogClient,
    config: StreamsConfig,
    rt: Handle,
    last_commit: Instant,
    last_checkpoint: Instant,
    pub commits: u64,
    pub restored_records: u64,
    route: HashMap<(Arc<str>, u32), (usize, usize)>,
    prefetch: Arc<PrefetchStats>,
    /// Where this worker's tasks' figures go after each commit (and its restore's progress).
    stats: Arc<AppStats>,
    /// Interactive queries for this worker's tasks (none in the test driver).
    queries: Option<UnboundedReceiver<query::Request>>,
}

/// What the prefetch task did, for the report of a run that waits.
#[derive(Default)]
struct PrefetchStats {
    polls: std::sync::atomic::AtomicU64,
    records: std::sync::atomic::AtomicU64,
}

impl Worker {
    // Each part comes from a different owner (the app, the plan, the thread); a struct to
    // carry them would be built at the two call sites only to be taken apart here.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        topology: Arc<Topology>,
        client: SharedLogClient,
        config: StreamsConfig,
        plan: Arc<Plan>,
        specs: &[(usize, u32)],
        index: usize,
        rt: Handle,
        stats: Arc<AppStats>,
        member: Member,
    ) -> Result<Self> {
        let app = config.application_id.clone();
        let children = topology.children();
        let mut tasks = Vec::new();
        for &(st_id, partition) in specs {
            let st = &topology.subtopologies[st_id];
            let mut stores = HashMap::new();
            let mut store_list = Vec::new();
            for name in &st.stores {
                let def = topology
                    .stores
                    .iter()
                    .find(|s| &s.name == name)
                    .expect("declared store");
                let handle = def.instantiate();
                stores.insert(name.clone(), handle.clone());
                store_list.push((
                    handle,
                    TopicPartition::new(changelog_topic(name).resolve(&app), partition),
                ));
            }
            let mut inst = Instantiation::new(&app, &children, &stores, &topology.weights);
            inst.on_deserialize_error = config.on_deserialize_error;
            let mut marker_topics = Vec::new();
            for &n in st.nodes.iter().rev() {
                let node = &topology.nodes[n];
                inst.current = n;
                inst.node_name = Arc::from(node.name.as_str());
                inst.parents = &node.parents;
                (node.build)(&mut inst)?;
                if let NodeKind::Sink {
                    topic: t @ TopicName::Internal(_),
                } = &node.kind
                {
                    let name = t.resolve(&app);
                    let count = plan.partitions_of.get(&name).copied().unwrap_or(1);
                    marker_topics.push((Arc::<str>::from(name), count));
                }
            }
            let name: Arc<str> = Arc::from(format!("{st_id}_{partition}"));
            let late = config.late_records_topic.as_deref().map(Arc::<str>::from);
            let mut sources = Vec::new();
            let mut inputs = Vec::new();
            for (topic, bootstrap, op) in std::mem::take(&mut inst.sources) {
                let writers = plan.writers_of.get(&topic).copied();
                inputs.push(Input::new(
                    TopicPartition::new(topic, partition),
                    sources.len(),
                    bootstrap,
                    writers,
                ));
                sources.push(op);
            }
            let wall = std::mem::take(&mut inst.wall_punctuators);
            tasks.push(Task {
                cx: crate::operator::TaskCx::new(name.clone(), partition, late),
                operators: st
                    .nodes
                    .iter()
                    .map(|&n| (n, Arc::from(topology.nodes[n].name.as_str())))
                    .collect(),
                name,
                sources,
                inputs,
                stores: store_list,
                wall,
                idle_timeout: config.idle_timeout,
                finished: false,
                marker_topics,
                last_mark: None,
                last_mark_at: Instant::now(),
                clock_skew: Duration::ZERO,
            });
        }
        let consumer = client.consumer(ConsumerConfig {
            group_id: Some(app.clone()),
            client_id: format!("{app}-worker"),
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            // Small polls: the prefetch channel holds a few of them per worker.
            fetch_max_bytes: 4 << 20,
            ..Default::default()
        });
        // The producer's buffer is the worker's backpressure: small, so memory stays bounded.
        // Ids per slot: an instance that takes a dead one's slot fences it at once.
        let transactional_id = config.exactly_once().then(|| match member.slot {
            0 => format!("{app}-worker-{index}"),
            slot => format!("{app}-{slot}-worker-{index}"),
        });
        let producer = client.producer(ProducerConfig {
            buffer_memory: 16 << 20,
            transactional_id,
            transaction_timeout: EXACTLY_ONCE_TRANSACTION_TIMEOUT,
            compression: config.compression,
            ..Default::default()
        });
        if config.exactly_once() {
            // Before the restore: fences the previous instance and aborts its open
            // transaction, so the changelogs hold only committed data to restore from.
            rt.block_on(producer.init_transactions())?;
            producer.begin_transaction()?;
        }
        let mut route = HashMap::new();
        for (t, task) in tasks.iter().enumerate() {
            for (i, input) in task.inputs.iter().enumerate() {
                route.insert(
                    (
                        Arc::<str>::from(input.tp.topic.as_str()),
                        input.tp.partition,
                    ),
                    (t, i),
                );
            }
        }
        let mut w = Self {
            tasks,
            consumer: Some(consumer),
            group: member.group,
            feed: None,
            producer,
            client,
            config,
            rt,
            last_commit: Instant::now(),
            last_checkpoint: Instant::now(),
            commits: 0,
            restored_records: 0,
            route,
            prefetch: Default::default(),
            stats,
            queries: None,
        };
        w.restore()?;
        for t in &mut w.tasks {
            t.write_restart_markers();
        }
        w.send_outputs()?;
        w.start_inputs()?;
        Ok(w)
    }

    /// Restores every store up to its committed changelog offset; marks later keys dirty.
    fn restore(&mut self) -> Result<()> {
        let app = self.config.application_id.clone();
        for task in &mut self.tasks {
            for (store, tp) in &task.stores {
                let (committed, end) = self.rt.block_on(async {
                    let c = self
                        .client
                        .committed_offsets(&app, std::slice::from_ref(tp))
                        .await?;
                    let e = self.client.end_offsets(std::slice::from_ref(tp)).await?;
                    Ok::<_, EngineError>((c[0].unwrap_or(0), e[0]))
                })?;
                let from = crate::checkpoint::open(
                    self.config.state_dir.as_deref(),
                    &app,
                    &task.name,
                    store,
                    self.config.storage,
                    committed,
                    end > 0,
                )?;
                if end == 0 {
                    continue;
                }
                let mut consumer = self.client.consumer(ConsumerConfig {
                    auto_offset_reset: OffsetReset::Earliest,
                    enable_auto_commit: false,
                    ..Default::default()
                });
                consumer.assign(vec![tp.clone()])?;
                consumer.seek(tp, from)?;
                let mut position = from;
                self.stats.restore_planned(committed.saturating_sub(from));
                let mut restored = 0u64;
                let mut rewritten = 0u64;
                while position < end {
                    let recs = self
                        .rt
                        .block_on(consumer.poll(Duration::from_millis(200)))?;
                    let mut s = store.dynamic.borrow_mut();
                    // Past markers and aborted records too, which are not returned.
                    let before = position;
                    position = consumer.position(tp).unwrap_or(position).max(position);
                    self.stats.restored(
                        position
                            .min(committed)
                            .saturating_sub(before.min(committed)),
                    );
                    for r in recs {
                        let rec = &r.record;
                        let Some(key) = rec.key.as_deref() else {
                            continue;
                        };
                        let res = if rec.offset < committed {
                            restored += 1;
                            s.apply_change(key, rec.value.as_deref())
                        } else {
                            rewritten += 1;
                            s.mark_dirty_encoded(key)
                        };
                        res.map_err(|reason| EngineError::Store {
                            store: s.name().to_string(),
                            reason: format!("{tp} offset {}: {reason}", rec.offset),
                        })?;
                    }
                }
                tracing::info!(task = %task.name, changelog = %tp, checkpoint = from, restored, rewritten, "restored store");
                self.restored_records += restored;
                self.rt.block_on(consumer.close())?;
            }
        }
        Ok(())
    }

    /// Assigns the inputs; with `until_end`, notes where each ends.
    fn start_inputs(&mut self) -> Result<()> {
        let all: Vec<TopicPartition> = self
            .tasks
            .iter()
            .flat_map(|t| t.inputs.iter().map(|i| i.tp.clone()))
            .collect();
        let committed = self.rt.block_on(
            self.client
                .committed_offsets(&self.config.application_id, &all),
        )?;
        let mut it = committed.into_iter();
        for t in &mut self.tasks {
            for i in &mut t.inputs {
                i.position = it.next().flatten();
            }
        }
        // Tables first: read every bootstrap input to its current end before anything else.
        let boot: Vec<TopicPartition> = self
            .tasks
            .iter()
            .flat_map(|t| {
                t.inputs
                    .iter()
                    .filter(|i| i.bootstrap)
                    .map(|i| i.tp.clone())
            })
            .collect();
        if !boot.is_empty() {
            let ends = self.rt.block_on(self.client.end_offsets(&boot))?;
            self.polling()?.assign(boot.clone())?;
            loop {
                let behind = boot.iter().zip(&ends).any(|(tp, &end)| {
                    let (t, i) = self.route[&(Arc::<str>::from(tp.topic.as_str()), tp.partition)];
                    self.tasks[t].inputs[i].position.unwrap_or(0) < end
                        && self
                            .consumer
                            .as_ref()
                            .and_then(|c| c.position(tp))
                            .is_none_or(|p| p < end)
                });
                if !behind {
                    break;
                }
                self.step(Duration::from_millis(100))?;
            }
        }
        self.polling()?.assign(all)?;
        for t in &self.tasks {
            for i in &t.inputs {
                if let Some(p) = i.position {
                    self.consumer
                        .as_mut()
                        .expect("not handed over yet")
                        .seek(&i.tp, p)?;
                }
            }
        }
        if self.config.until_end {
            self.mark_ends()?;
        }
        Ok(())
    }

    /// Bounded run: every external input ends at its current end offset.
    pub fn mark_ends(&mut self) -> Result<()> {
        let tps: Vec<TopicPartition> = self
            .tasks
            .iter()
            .flat_map(|t| t.inputs.iter().map(|i| i.tp.clone()))
            .collect();
        let ends = self.rt.block_on(self.client.end_offsets(&tps))?;
        let mut it = ends.into_iter();
        for t in &mut self.tasks {
            for i in 0..t.inputs.len() {
                t.inputs[i].end_offset = Some(it.next().expect("one end per input"));
                t.check_ended(i);
            }
            t.guard(Task::advance_watermark)?;
        }
        self.send_outputs()?;
        Ok(())
    }

    /// Polls once and processes what came. Returns the number of records (markers excluded).
    pub fn step(&mut self, timeout: Duration) -> Result<usize> {
        self.answer_queries();
        let runs = match (&mut self.feed, &mut self.consumer) {
            (Some(feed), _) => {
                let queries = self.queries.as_mut();
                let waited = self.rt.block_on(async {
                    tokio::time::timeout(timeout, async {
                        match queries {
                            // A query wakes an idle worker: it is answered at the next step.
                            Some(q) => tokio::select! {
                                batch = feed.recv() => Ok(batch),
                                Some(request) = q.recv() => Err(request),
                            },
                            None => Ok(feed.recv().await),
                        }
                    })
                    .await
                });
                match waited {
                    Ok(Ok(Some(batch))) => batch?,
                    Ok(Ok(None)) => {
                        return Err(EngineError::Config("the prefetch task stopped".into()));
                    }
                    Ok(Err(request)) => {
                        self.answer(request);
                        Vec::new()
                    }
                    Err(_) => Vec::new(),
                }
            }
            (None, Some(c)) => self.rt.block_on(c.poll_runs(timeout))?,
            (None, None) => unreachable!("a worker has a consumer or a feed"),
        };
        let mut n = 0;
        for run in &runs {
            n += run.len() - run.with_headers().filter(crate::task::is_marker).count();
            if let Some(&(t, i)) = self.route.get(&(run.topic.clone(), run.partition)) {
                self.process(t, i, run)?;
            }
        }
        self.confirm_idle_inputs()?;
        for t in &mut self.tasks {
            let now = t.now();
            let now_ms = runnel_log::types::now_ms() + t.clock_skew.as_millis() as i64;
            t.guard(|t| {
                t.fire_wall_clock(now, now_ms)?;
                t.advance_watermark()
            })?;
            t.write_markers(false);
        }
        self.send_outputs()?;
        Ok(n)
    }

    /// Answers the interactive queries that are waiting, on the tasks' stores as they are.
    fn answer_queries(&mut self) {
        while let Some(request) = self.queries.as_mut().and_then(|q| q.try_recv().ok()) {
            self.answer(request);
        }
    }

    fn answer(&self, request: query::Request) {
        let name = request.store().to_string();
        let frames = self.tasks.iter().map(|t| {
            let frame = TaskAnswer {
                task: t.name.to_string(),
                watermark: (t.cx.watermark > i64::MIN).then_some(t.cx.watermark),
                positions: t
                    .inputs
                    .iter()
                    .map(|i| (i.tp.topic.clone(), i.tp.partition, i.position))
                    .collect(),
                value: Ok(()),
            };
            let store = t
                .stores
                .iter()
                .map(|(s, _)| s)
                .find(|s| s.dynamic.borrow().name() == name);
            (frame, store)
        });
        request.answer(frames);
    }

    /// An input without records for the idle timeout is idle only if it is caught up: one
    /// that still has records to read (a slow worker, a long restore) stays active. Records
    /// below the log start were deleted by retention before they were read: the input's
    /// position moves past them (with a warning), so that a bounded run whose remaining input
    /// was deleted ends instead of waiting for it.
    fn confirm_idle_inputs(&mut self) -> Result<()> {
        let mut candidates = Vec::new();
        for (t, task) in self.tasks.iter().enumerate() {
            let now = task.now();
            for (i, input) in task.inputs.iter().enumerate() {
                if input.idle_candidate(task.idle_timeout, now) {
                    candidates.push((t, i, input.tp.clone()));
                }
            }
        }
        if candidates.is_empty() {
            return Ok(());
        }
        let tps: Vec<TopicPartition> = candidates.iter().map(|(_, _, tp)| tp.clone()).collect();
        let ends = self.rt.block_on(self.client.end_offsets(&tps))?;
        let starts = self.rt.block_on(self.client.start_offsets(&tps))?;
        for (((t, i, tp), end), start) in candidates.into_iter().zip(ends).zip(starts) {
            let task = &mut self.tasks[t];
            let now = task.now();
            let input = &mut task.inputs[i];
            if let Some(p) = input.position.filter(|&p| p < start) {
                tracing::warn!(
                    topic = %tp.topic, partition = tp.partition, from = p, to = start,
                    "input records were deleted by retention before they were read; skipped"
                );
            }
            if input.position.unwrap_or(0) < start {
                input.position = Some(start);
                task.check_ended(i);
            }
            if task.inputs[i].position.unwrap_or(0) < end {
                task.inputs[i].still_active(now);
            }
        }
        Ok(())
    }

    fn process(&mut self, t: usize, i: usize, run: &RecordRun) -> Result<()> {
        self.tasks[t].guard(|task| task.process(i, run))
    }

    fn send_outputs(&mut self) -> Result<()> {
        for t in &mut self.tasks {
            if !t.cx.out.is_empty() {
                self.rt.block_on(t.cx.out.send(&*self.producer))?;
            }
        }
        Ok(())
    }

    /// Flushes outputs and changelogs, then commits input positions and changelog ends (the
    /// test driver's commit; the runtime commits through `commit_and_checkpoint`).
    #[cfg(feature = "test-util")]
    pub fn commit(&mut self) -> Result<()> {
        self.commit_and_checkpoint(false)
    }

    /// Commits; checkpoints the stores locally when due or `checkpoint` is set.
    fn commit_and_checkpoint(&mut self, checkpoint: bool) -> Result<()> {
        let started = Instant::now();
        for t in &mut self.tasks {
            t.guard(Task::prepare_commit)?;
        }
        self.send_outputs()?;
        self.rt.block_on(self.producer.flush())?;
        let changelogs: Vec<TopicPartition> = self
            .tasks
            .iter()
            .flat_map(|t| t.stores.iter().map(|(_, tp)| tp.clone()))
            .collect();
        let ends = self.rt.block_on(self.client.end_offsets(&changelogs))?;
        let mut offsets: Vec<(TopicPartition, u64)> =
            self.tasks.iter().flat_map(|t| t.positions()).collect();
        offsets.extend(changelogs.into_iter().zip(ends.iter().copied()));
        if self.config.exactly_once() {
            self.rt.block_on(async {
                self.producer
                    .send_offsets_to_transaction(&offsets, &self.group)
                    .await?;
                self.producer.commit_transaction().await
            })?;
            self.producer.begin_transaction()?;
        } else {
            self.rt
                .block_on(self.client.commit_offsets(&self.group, &offsets))?;
        }
        self.commits += 1;
        self.last_commit = Instant::now();
        self.publish_stats(self.last_commit - started);
        let due = self.last_checkpoint.elapsed() >= self.config.checkpoint_interval;
        if let Some(dir) = self.config.state_dir.clone().filter(|_| checkpoint || due) {
            // Nothing ran since the commit: each store is exactly its changelog up to `end`.
            let mut ends = ends.into_iter();
            for t in &self.tasks {
                for (store, _) in &t.stores {
                    let end = ends.next().expect("one end offset per store");
                    let mut s = store.dynamic.borrow_mut();
                    let file = crate::checkpoint::path(
                        &dir,
                        &self.config.application_id,
                        &t.name,
                        s.name(),
                    );
                    crate::checkpoint::write(&file, end, &mut *s)?;
                }
            }
            self.last_checkpoint = Instant::now();
        }
        Ok(())
    }

    fn polling(&mut self) -> Result<&mut Box<dyn LogConsumer>> {
        self.consumer.as_mut().ok_or_else(|| {
            EngineError::Config("the consumer was handed to the prefetch task".into())
        })
    }

    /// Moves polling to a task on the runtime that fetches ahead into a bounded channel, so
    /// decoding the next records overlaps processing these. The channel's bound
    /// ([`PREFETCH_BATCHES`] polls) is where a slow worker holds its input back.
    pub fn start_prefetch(&mut self) {
        let Some(mut consumer) = self.consumer.take() else {
            return;
        };
        let (tx, rx) = tokio::sync::mpsc::channel(PREFETCH_BATCHES);
        let stats = self.prefetch.clone();
        self.rt.spawn(async move {
            loop {
                let batch = consumer.poll_runs(Duration::from_millis(100)).await;
                stats.polls.fetch_add(1, Ordering::Relaxed);
                if let Ok(b) = &batch {
                    let records: usize = b.iter().map(RecordRun::len).sum();
                    stats.records.fetch_add(records as u64, Ordering::Relaxed);
                }
                let failed = batch.is_err();
                if matches!(&batch, Ok(b) if b.is_empty()) {
                    if tx.is_closed() {
                        break;
                    }
                    continue;
                }
                if tx.send(batch).await.is_err() || failed {
                    break;
                }
            }
            let _ = consumer.close().await;
        });
        self.feed = Some(rx);
    }

    pub fn all_finished(&self) -> bool {
        self.tasks.iter().all(|t| t.finished)
    }

    /// Hands every task's figures to the application's [`AppStats`].
    fn publish_stats(&self, commit_took: Duration) {
        let tasks = self.tasks.iter().map(|t| {
            let stats = TaskStats {
                metrics: t.cx.metrics,
                watermark: (t.cx.watermark > i64::MIN).then_some(t.cx.watermark),
                store_entries: t
                    .stores
                    .iter()
                    .map(|(s, _)| s.dynamic.borrow().len() as u64)
                    .sum(),
                operators: t
                    .operators
                    .iter()
                    .map(|(i, name)| {
                        let (records_in, records_out) = t.cx.operators.of(*i);
                        OperatorStats {
                            name: name.clone(),
                            records_in,
                            records_out,
                        }
                    })
                    .collect(),
            };
            (t.name.to_string(), stats)
        });
        self.stats.committed(commit_took, tasks);
    }

    pub fn metrics(&self) -> TaskMetrics {
        let mut m = TaskMetrics::default();
        for t in &self.tasks {
            add_metrics(&mut m, &t.cx.metrics);
        }
        m
    }

    /// The unfinished tasks' inputs that have not ended, and where each is.
    fn waiting_for(&self) -> String {
        self.tasks
            .iter()
            .filter(|t| !t.finished)
            .flat_map(|t| {
                t.inputs
                    .iter()
                    .filter(|i| !i.ended)
                    .map(move |i| format!("task {}: {}", t.name, i.waiting_for()))
            })
            .collect::<Vec<_>>()
            .join("; ")
            + &format!(
                " (this worker polled {} times, {} records)",
                self.prefetch.polls.load(Ordering::Relaxed),
                self.prefetch.records.load(Ordering::Relaxed)
            )
    }

    fn run_loop(&mut self, stop: &Stop) -> Result<RunSummary> {
        self.start_prefetch();
        let mut last_progress = Instant::now();
        loop {
            if self.step(Duration::from_millis(100))? > 0 {
                last_progress = Instant::now();
            } else if self.config.until_end
                && !self.all_finished()
                && last_progress.elapsed() >= STALL_REPORT
            {
                tracing::warn!(waiting_for = %self.waiting_for(), "no records for {STALL_REPORT:?} and the inputs have not all ended");
                last_progress = Instant::now();
            }
            let done = self.config.until_end && self.all_finished();
            let stopping = done || stop.requested();
            // A disk store whose cache is full of uncommitted entries has it written out now.
            let store_full = || {
                (self.tasks.iter().flat_map(|t| &t.stores))
                    .any(|(s, _)| s.dynamic.borrow().wants_commit())
            };
            if stopping || self.last_commit.elapsed() >= self.config.commit_interval || store_full()
            {
                let rebalance = stop.rejoin.load(Ordering::Acquire);
                self.commit_and_checkpoint(stopping && (rebalance || stop.checkpoint_on_exit))?;
            }
            if stopping {
                break;
            }
        }
        Ok(RunSummary {
            metrics: self.metrics(),
            tasks: self.tasks.len(),
            commits: self.commits,
            restored_records: self.restored_records,
        })
    }
}
