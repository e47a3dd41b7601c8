//! The connector worker: keeps the connectors and runs each as tasks on the tokio runtime
//! ([`crate::runtime::task`]: source and sink loops, restarts with backoff); pauses, resumes,
//! stops, restarts and deletes them. Connectors are independent: one failing or being deleted
//! never touches another.
//!
//! A worker made by [`Worker::new`] keeps its connectors in memory, for callers that declare
//! them at each start (a job file, tests). One made by [`Worker::open`] keeps them in the config
//! topic and publishes statuses to the status topic ([`Storage`]): the changes the REST API asks
//! for — [`Worker::submit`], [`Worker::remove`], [`Worker::set_target`] — are checked, stored,
//! then applied, one at a time, and return once the statuses they changed are written, so what
//! was answered survives a crash; at start the worker reads
//! the topic back and starts what it holds, in its target state. The worker file's connectors
//! are written to the topic at start and win over the topic's of the same name (the file is the
//! worker's declaration, as in Kafka Connect's standalone mode); their stored target states
//! stay, so a connector of the file stopped over REST stays stopped. [`Worker::create`] and
//! [`Worker::delete`] change the connectors in memory only.
//!
//! A worker made by [`Worker::member`] is one of a group ([`crate::runtime::group`] runs its
//! membership): the config and status topics are shared ([`Shared`]), the changes the REST
//! API asks for are only stored (they return once this worker reads them back; the REST API
//! sends them to the group's leader, [`crate::runtime::forward`]), and the group decides
//! which worker runs a connector and which runs each of its tasks ([`Worker::run_only`]);
//! reads answer for every connector of the group, with the statuses its workers published
//! (this worker's own, fresher, over them). A restart asks each task's worker to restart it.
//!
//! Each connector runs as the tasks [`registry::task_configs`] plans from its configuration
//! (`tasks.max`). The plan depends on the configuration alone, so restarting a connector itself
//! changes nothing: only its tasks restart (`includeTasks`), or all of them for a new
//! configuration. A STOPPED connector has no task; its configuration and offsets stay.

use crate::api::Kind;
use crate::config::ConnectorConfig;
use crate::error::{ConnectError, Result};
use crate::registry;
use crate::runtime::configs::{ConfigTopic, Stored, TargetState};
use crate::runtime::forward;
use crate::runtime::offsets::{self, Offsets};
use crate::runtime::shared::Shared;
use crate::runtime::status::{Active, ActiveTopics, Publisher, State, Status, TaskStatus};
use crate::runtime::task::{self, Control, TaskContext};
use runnel_log::SharedLogClient;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where a worker keeps what outlives it; Kafka Connect's worker properties of the same names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// `config.storage.topic`: connector configurations and target states.
    pub config_topic: String,
    /// `status.storage.topic`: connector and task statuses, active topics.
    pub status_topic: String,
    /// `offset.storage.topic`: source offsets ([`offsets`]).
    pub offset_topic: String,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            config_topic: "connect-configs".into(),
            status_topic: "connect-status".into(),
            offset_topic: offsets::OFFSETS_TOPIC.into(),
        }
    }
}

/// What of a connector a worker runs: the connector itself (it publishes its status) and
/// which of its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub connector: bool,
    /// `None`: all of them.
    pub tasks: Option<BTreeSet<u32>>,
}

impl Part {
    /// The whole connector: a worker alone runs every connector so.
    const ALL: Part = Part {
        connector: true,
        tasks: None,
    };

    fn runs(&self, task: u32) -> bool {
        self.tasks.as_ref().is_none_or(|t| t.contains(&task))
    }
}

/// How [`Worker::submit`] takes a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submit {
    /// A new connector (`POST /connectors`), in this target state (KIP-980's `initial_state`).
    Create(TargetState),
    /// A new connector, or a new configuration of one (`PUT /connectors/{name}/config`).
    Upsert,
}

/// A connector as the REST API shows it.
#[derive(Debug, Clone)]
pub struct View {
    pub config: ConnectorConfig,
    pub kind: Kind,
    /// RUNNING, PAUSED or STOPPED: what was asked of it (its tasks say how that goes).
    pub state: State,
    pub tasks: Vec<TaskView>,
    /// The topics it used (KIP-558), in order.
    pub topics: Vec<String>,
    /// The worker running it (empty when none does).
    pub worker_id: String,
}

/// A task as the REST API shows it.
#[derive(Debug, Clone)]
pub struct TaskView {
    pub id: u32,
    pub config: ConnectorConfig,
    pub status: Status,
    /// The worker running it (empty when none does).
    pub worker_id: String,
}

struct Entry {
    config: ConnectorConfig,
    kind: Kind,
    target: TargetState,
    control: watch::Sender<Control>,
    /// What of it runs here.
    part: Part,
    /// Those of its tasks that run here, by id; none while STOPPED.
    tasks: BTreeMap<u32, Task>,
    /// How many tasks ever had a status published (to delete them all).
    published: u32,
    topics: ActiveTopics,
}

struct Task {
    config: ConnectorConfig,
    status: TaskStatus,
    handle: JoinHandle<()>,
}

/// See the module documentation. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    pub(super) client: SharedLogClient,
    connectors: Arc<Mutex<BTreeMap<String, Entry>>>,
    pub(super) offsets: Arc<tokio::sync::Mutex<Offsets>>,
    /// `offset.storage.topic`.
    pub(super) offset_topic: Arc<str>,
    /// Every connector's active topics.
    active: Active,
    configs: Option<Arc<ConfigTopic>>,
    pub(super) publisher: Publisher,
    /// One stored change at a time: checked, stored, applied.
    pub(super) changes: Arc<tokio::sync::Mutex<()>>,
    /// The group's topics, for a worker of a group.
    shared: Option<Arc<Shared>>,
}

impl Worker {
    /// A worker over `client` that keeps its connectors in memory, with the source offsets
    /// stored in `connect-offsets` loaded.
    ///
    /// # Errors
    /// When the offsets topic cannot be created or read ([`ConnectError::Log`]).
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is started before it returns.
    pub async fn new(client: SharedLogClient) -> Result<Self> {
        let storage = Storage::default();
        let none = (Publisher::default(), Active::default());
        Self::assemble(client, &storage, None, none, None).await
    }

    /// A worker over `client` that keeps its connectors in `storage`'s topics, its statuses
    /// naming it `worker_id` (Kafka Connect names a worker by its REST address): it stores the
    /// `declared` connectors (the worker file's) and starts them with those stored before.
    /// A stored connector whose configuration is refused now (its class gone, say) is logged
    /// and left out; a new configuration over `PUT /connectors/{name}/config` brings it back.
    ///
    /// # Errors
    /// When a topic cannot be created, read or written ([`ConnectError::Log`]).
    ///
    /// # Panics
    /// Outside a tokio runtime: the tasks are spawned on the current one.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped part way, some declared connectors may be stored, none started.
    pub async fn open(
        client: SharedLogClient,
        storage: &Storage,
        worker_id: &str,
        declared: Vec<ConnectorConfig>,
    ) -> Result<Self> {
        let (configs, mut stored) = ConfigTopic::open(&client, &storage.config_topic).await?;
        let (publisher, active) =
            Publisher::open(&client, &storage.status_topic, worker_id).await?;
        for c in declared {
            let s = stored.entry(c.name.clone()).or_default();
            if s.props != c.props {
                configs.put(&c.name, &c.props).await?;
                s.props = c.props;
            }
        }
        let statuses = (publisher, Arc::new(std::sync::Mutex::new(active)));
        let configs = Some(Arc::new(configs));
        let worker = Self::assemble(client, storage, configs, statuses, None).await?;
        for (name, s) in stored {
            let config = ConnectorConfig {
                name: name.clone(),
                props: s.props,
            };
            if let Err(e) = worker.insert(config, s.target, Part::ALL) {
                tracing::error!(connector = %name, error = %e, "a stored connector was not started: give it a configuration that works with PUT /connectors/{name}/config, or delete it");
            }
        }
        Ok(worker)
    }

    /// A worker of a group over `client`, sharing `storage`'s topics with the others, its
    /// statuses naming it `worker_id`: it stores the `declared` connectors that the config
    /// topic does not hold as they are, and runs nothing until [`run_only`](Self::run_only)
    /// says what.
    ///
    /// # Errors
    /// When a topic cannot be created, read or written ([`ConnectError::Log`]).
    ///
    /// # Panics
    /// Outside a tokio runtime: the topics' tails are spawned on the current one.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped part way, some declared connectors may be stored.
    pub async fn member(
        client: SharedLogClient,
        storage: &Storage,
        worker_id: &str,
        declared: Vec<ConnectorConfig>,
    ) -> Result<Self> {
        let shared = Shared::open(&client, &storage.config_topic, &storage.status_topic).await?;
        let (configs, _) = ConfigTopic::open(&client, &storage.config_topic).await?;
        let (publisher, _) = Publisher::open(&client, &storage.status_topic, worker_id).await?;
        for c in declared {
            if shared.connector(&c.name).map(|s| s.props) != Some(c.props.clone()) {
                configs.put(&c.name, &c.props).await?;
            }
        }
        let statuses = (publisher, shared.active().clone());
        let (configs, shared) = (Some(Arc::new(configs)), Some(Arc::new(shared)));
        Self::assemble(client, storage, configs, statuses, shared).await
    }

    async fn assemble(
        client: SharedLogClient,
        storage: &Storage,
        configs: Option<Arc<ConfigTopic>>,
        (publisher, active): (Publisher, Active),
        shared: Option<Arc<Shared>>,
    ) -> Result<Self> {
        let offsets = offsets::open(&client, &storage.offset_topic).await?;
        Ok(Self {
            client,
            connectors: Arc::default(),
            offsets: Arc::new(tokio::sync::Mutex::new(offsets)),
            offset_topic: storage.offset_topic.as_str().into(),
            active,
            configs,
            publisher,
            changes: Arc::default(),
            shared,
        })
    }

    /// The group's topics, for a worker of a group.
    pub(super) fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// Runs `desired` (connector name → stored configuration and target state, and the part
    /// of it to run here) and nothing else: starts the connectors it does not run yet, gives
    /// those it runs a new configuration or target state, and deletes the others (their
    /// statuses go: a worker of a group stops what it gives up with
    /// [`shutdown`](Self::shutdown) instead). A configuration refused now is logged and left
    /// out.
    ///
    /// # Panics
    /// Outside a tokio runtime, as [`create`](Self::create).
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped part way, some connectors are as desired, others not yet.
    pub(super) async fn run_only(&self, desired: BTreeMap<String, (Stored, Part)>) {
        let gone: Vec<String> = (self.lock().keys())
            .filter(|n| !desired.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            for h in self.take(&name).unwrap_or_default() {
                let _ = h.await;
            }
        }
        for (name, (stored, part)) in desired {
            let config = ConnectorConfig {
                name: name.clone(),
                props: stored.props,
            };
            let now = self
                .with(&name, |e| (e.config.props.clone(), e.target))
                .ok();
            let done = match now {
                None => self.insert(config, stored.target, part),
                Some((props, target)) => {
                    let mut done = Ok(());
                    if props != config.props {
                        done = self.reconfigure(config).await;
                    }
                    if target != stored.target {
                        done = done.and(self.apply_target(&name, stored.target).await);
                    }
                    done
                }
            };
            if let Err(e) = done {
                tracing::error!(connector = %name, error = %e, "a connector of the group was not started: give it a configuration that works with PUT /connectors/{name}/config, or delete it");
            }
        }
        self.publisher.flush().await;
    }

    /// Whether connector `name` exists: in the group's config topic, or here.
    fn exists(&self, name: &str) -> bool {
        match &self.shared {
            Some(s) => s.connector(name).is_some(),
            None => self.lock().contains_key(name),
        }
    }

    /// The error for connector `name`, which does not run here: in a group, one that exists
    /// but was moved since the request was routed here.
    fn missing(&self, name: &str) -> ConnectError {
        match &self.shared {
            Some(_) if self.exists(name) => ConnectError::Rebalancing(format!(
                "connector {name:?} does not run on this worker any more"
            )),
            _ => ConnectError::NotFound(name.into()),
        }
    }

    /// For a worker of a group: waits until it reads back what it stored.
    async fn read_back(&self) -> Result<bool> {
        match &self.shared {
            Some(s) => s.catch_up().await.map(|()| true),
            None => Ok(false),
        }
    }

    /// Checks the configuration (building the connector once) and starts it, in memory only.
    ///
    /// # Errors
    /// [`ConnectError::Config`] or [`ConnectError::UnknownClass`] for a configuration
    /// [`registry::build`] refuses; [`ConnectError::Exists`] for a name already running.
    ///
    /// # Panics
    /// Outside a tokio runtime: the connector's tasks are spawned on the current one.
    pub fn create(&self, config: ConnectorConfig) -> Result<()> {
        self.insert(config, TargetState::Started, Part::ALL)
    }

    /// Stores and applies a configuration: a new connector, or (with [`Submit::Upsert`]) a new
    /// configuration of one, whose tasks then restart with it. Returns whether it created one.
    ///
    /// # Errors
    /// What [`create`](Self::create) says of the configuration; [`ConnectError::Exists`] for
    /// [`Submit::Create`] of a name taken; [`ConnectError::Log`] when it cannot be stored
    /// (nothing changed then).
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped part way, the configuration may be stored and not applied (the
    /// worker applies it when it starts again).
    pub async fn submit(&self, config: ConnectorConfig, how: Submit) -> Result<bool> {
        check(&config)?;
        let _one = self.changes.lock().await;
        let exists = self.exists(&config.name);
        let target = match how {
            Submit::Create(_) if exists => return Err(ConnectError::Exists(config.name)),
            Submit::Create(t) => t,
            Submit::Upsert => TargetState::Started,
        };
        if let Some(c) = &self.configs {
            // A new connector's target state goes first (as Kafka Connect's KIP-980 writes
            // it), so a crash between the two never starts what should be stopped.
            if !exists {
                c.put_target(&config.name, target).await?;
            }
            c.put(&config.name, &config.props).await?;
        }
        if self.read_back().await? {
            return Ok(!exists);
        }
        if exists {
            self.reconfigure(config).await?;
        } else {
            self.insert(config, target, Part::ALL)?;
        }
        self.publisher.flush().await;
        Ok(!exists)
    }

    fn insert(&self, config: ConnectorConfig, target: TargetState, part: Part) -> Result<()> {
        let kind = check(&config)?;
        let mut all = self.lock();
        if all.contains_key(&config.name) {
            return Err(ConnectError::Exists(config.name));
        }
        let name = config.name.clone();
        let (control, _) = watch::channel(control(target));
        let mut entry = Entry {
            topics: ActiveTopics::new(&self.publisher, &name, &self.active),
            config,
            kind,
            target,
            control,
            part,
            tasks: BTreeMap::new(),
            published: 0,
        };
        if target != TargetState::Stopped {
            self.start_tasks(&mut entry, BTreeMap::new())?;
        }
        if entry.part.connector {
            self.publisher.connector(&name, state(target));
        }
        all.insert(name, entry);
        Ok(())
    }

    /// Starts those of the tasks `entry`'s configuration plans that its part runs here,
    /// carrying over `carry`'s counters (of the tasks they replace, by id).
    fn start_tasks(&self, entry: &mut Entry, mut carry: BTreeMap<u32, Status>) -> Result<()> {
        let configs = registry::task_configs(&entry.config)?;
        let count = configs.len() as u32;
        for (id, config) in (0..count).zip(configs) {
            if !entry.part.runs(id) {
                continue;
            }
            let status = carry
                .remove(&id)
                .unwrap_or_else(|| Status::new(State::Running));
            let task = self.spawn(entry, id, count, config, status, None);
            entry.tasks.insert(id, task);
        }
        entry.published = entry.published.max(count);
        Ok(())
    }

    /// Task `id` of `count` of `entry`, starting once `after` (the task it replaces) is gone.
    fn spawn(
        &self,
        entry: &Entry,
        id: u32,
        count: u32,
        config: ConnectorConfig,
        mut status: Status,
        after: Option<JoinHandle<()>>,
    ) -> Task {
        let control = entry.control.subscribe();
        status.state = match *control.borrow() {
            Control::Run => State::Running,
            Control::Pause => State::Paused,
        };
        status.trace = None;
        let status = TaskStatus::new(&self.publisher, &entry.config.name, id, status);
        let ctx = TaskContext {
            id,
            count,
            control,
            status: status.clone(),
            topics: entry.topics.clone(),
        };
        let run = task::supervise(self.clone(), config.clone(), ctx);
        let handle = tokio::spawn(async move {
            if let Some(previous) = after {
                let _ = previous.await;
            }
            run.await;
        });
        Task {
            config,
            status,
            handle,
        }
    }

    /// Starts `config`'s tasks in place of the connector's (after those are gone).
    async fn reconfigure(&self, config: ConnectorConfig) -> Result<()> {
        let name = config.name.clone();
        let old = {
            let mut all = self.lock();
            let e = all
                .get_mut(&name)
                .ok_or_else(|| ConnectError::NotFound(name.clone()))?;
            e.config = config;
            std::mem::take(&mut e.tasks)
        };
        let carry = old.iter().map(|(id, t)| (*id, t.status.get())).collect();
        for h in stop(old) {
            let _ = h.await;
        }
        let mut all = self.lock();
        if let Some(e) = all.get_mut(&name)
            && e.target != TargetState::Stopped
            && e.tasks.is_empty()
        {
            self.start_tasks(e, carry)?;
        }
        Ok(())
    }

    /// Stores and applies connector `name`'s target state: PAUSED tasks wait, STOPPED ones are
    /// shut down (gone when it returns), STARTED ones run (started again after a stop).
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector; [`ConnectError::Log`] when
    /// the state cannot be stored (nothing changed then).
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped part way, the state may be stored and not applied (the worker
    /// applies it when it starts again).
    pub async fn set_target(&self, name: &str, target: TargetState) -> Result<()> {
        let _one = self.changes.lock().await;
        if !self.exists(name) {
            return Err(ConnectError::NotFound(name.into()));
        }
        if let Some(c) = &self.configs {
            c.put_target(name, target).await?;
        }
        if self.read_back().await? {
            return Ok(());
        }
        self.apply_target(name, target).await
    }

    /// Applies connector `name`'s target state, in memory.
    async fn apply_target(&self, name: &str, target: TargetState) -> Result<()> {
        let stopped = {
            let mut all = self.lock();
            let e = all
                .get_mut(name)
                .ok_or_else(|| ConnectError::NotFound(name.into()))?;
            e.target = target;
            if e.part.connector {
                self.publisher.connector(name, state(target));
            }
            if target == TargetState::Stopped {
                stop(std::mem::take(&mut e.tasks))
            } else {
                e.control.send_replace(control(target));
                if e.tasks.is_empty() {
                    self.start_tasks(e, BTreeMap::new())?;
                }
                for t in e.tasks.values() {
                    // A failed task stays FAILED until it restarts, in the new state.
                    if t.status.get().state != State::Failed {
                        t.status.set(state(target), None);
                    }
                }
                Vec::new()
            }
        };
        for h in stopped {
            let _ = h.await;
        }
        self.publisher.flush().await;
        Ok(())
    }

    /// Restarts connector `name` (`POST /connectors/{name}/restart`): the connector itself
    /// (which never fails: it is skipped with `only_failed`), and with `include_tasks` its
    /// tasks, or only the FAILED ones with `only_failed`, each by the worker of the group
    /// running it. Returns the connector as it was asked, RESTARTING for what restarts (Kafka
    /// Connect's answer).
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector; in a group,
    /// [`ConnectError::Rebalancing`] for a task no worker runs now, and what the worker
    /// running a task answers.
    ///
    /// # Panics
    /// Outside a tokio runtime, as [`create`](Self::create).
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped part way, some tasks are restarted and others not.
    pub async fn restart(
        &self,
        name: &str,
        include_tasks: bool,
        only_failed: bool,
    ) -> Result<View> {
        let mut view = self.view(name)?;
        if !only_failed {
            view.state = State::Restarting;
        }
        for t in &mut view.tasks {
            if include_tasks && (!only_failed || t.status.state == State::Failed) {
                match self.task_owner(name, t.id)? {
                    None => self.restart_task(name, t.id)?,
                    Some(url) => forward::restart_task(&url, name, t.id).await?,
                }
                t.status.state = State::Restarting;
            }
        }
        Ok(view)
    }

    /// In a group, the URL of the worker running task `id` of connector `name` when it is
    /// another; `None` when it runs here (or the worker is alone).
    fn task_owner(&self, name: &str, id: u32) -> Result<Option<String>> {
        let Some(s) = &self.shared else {
            return Ok(None);
        };
        let owner = s
            .assignment()
            .and_then(|a| a.task_owner(name, id).map(String::from));
        match owner {
            Some(url) if url == self.worker_id() => Ok(None),
            Some(url) => Ok(Some(url)),
            None => Err(ConnectError::Rebalancing(format!(
                "no worker runs task {id} of connector {name:?} now"
            ))),
        }
    }

    /// Restarts task `id` of connector `name`, which runs here: the new task starts once the
    /// old one is gone.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector,
    /// [`ConnectError::TaskNotFound`] when it has no such task (a STOPPED one has none); in a
    /// group, [`ConnectError::Rebalancing`] when the task does not run here (any more).
    ///
    /// # Panics
    /// Outside a tokio runtime, as [`create`](Self::create).
    pub fn restart_task(&self, name: &str, id: u32) -> Result<()> {
        let mut all = self.lock();
        let e = all.get_mut(name).ok_or_else(|| self.missing(name))?;
        let count = registry::task_configs(&e.config)?.len() as u32;
        let Some(old) = e.tasks.remove(&id) else {
            return Err(match id < count && e.target != TargetState::Stopped {
                true => ConnectError::Rebalancing(format!(
                    "task {id} of connector {name:?} does not run on this worker any more"
                )),
                false => ConnectError::TaskNotFound {
                    connector: name.into(),
                    task: id,
                },
            });
        };
        old.handle.abort();
        let task = self.spawn(e, id, count, old.config, old.status.get(), Some(old.handle));
        e.tasks.insert(id, task);
        Ok(())
    }

    /// Stores the deletion of connector `name` and stops it (its tasks are gone when it
    /// returns); its offsets stay.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector; [`ConnectError::Log`] when
    /// the deletion cannot be stored (nothing changed then).
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped part way, the deletion may be stored and the connector still
    /// running (until the worker starts again).
    pub async fn remove(&self, name: &str) -> Result<()> {
        let _one = self.changes.lock().await;
        if !self.exists(name) {
            return Err(ConnectError::NotFound(name.into()));
        }
        if let Some(c) = &self.configs {
            c.remove(name).await?;
        }
        if self.read_back().await? {
            return Ok(());
        }
        for h in self.take(name)? {
            let _ = h.await;
        }
        self.publisher.flush().await;
        Ok(())
    }

    /// Stops connector `name` and forgets it, in memory only; its stored offsets stay.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector.
    pub fn delete(&self, name: &str) -> Result<()> {
        self.take(name).map(drop)
    }

    /// Removes connector `name`, aborts its tasks (returned, to wait for) and deletes its
    /// statuses and active topics.
    fn take(&self, name: &str) -> Result<Vec<JoinHandle<()>>> {
        let e = self.lock().remove(name).ok_or_else(|| self.missing(name))?;
        let handles = stop(e.tasks);
        e.topics.reset();
        self.publisher.forget(name, e.published);
        Ok(handles)
    }

    /// Stops every connector and waits until their tasks are gone, so sinks are dropped
    /// (a Parquet sink closes its files) before the process exits; the statuses say
    /// UNASSIGNED.
    ///
    /// # Cancel safety
    /// Not cancel safe: the worker forgets every connector first, so dropped part way it
    /// leaves those not aborted yet running, out of its reach.
    pub async fn shutdown(&self) {
        let entries = std::mem::take(&mut *self.lock());
        for (name, e) in entries {
            for h in stop(e.tasks) {
                let _ = h.await;
            }
            if e.part.connector {
                self.publisher.connector(&name, State::Unassigned);
            }
        }
        self.publisher.flush().await;
    }

    /// The names of the connectors, in order.
    pub fn names(&self) -> Vec<String> {
        match &self.shared {
            Some(s) => s.names().into_iter().collect(),
            None => self.lock().keys().cloned().collect(),
        }
    }

    /// The configuration of connector `name`, as given.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector.
    pub fn config(&self, name: &str) -> Result<ConnectorConfig> {
        self.view(name).map(|v| v.config)
    }

    /// Whether connector `name` is a source or a sink.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector.
    pub fn kind(&self, name: &str) -> Result<Kind> {
        self.view(name).map(|v| v.kind)
    }

    /// Connector `name`: its configuration, state, tasks and topics. In a group, what runs
    /// here is shown as it is here, the rest as its workers published it.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector.
    pub fn view(&self, name: &str) -> Result<View> {
        let me = self.worker_id();
        let Some(shared) = &self.shared else {
            return self.with(name, |e| View {
                config: e.config.clone(),
                kind: e.kind,
                state: state(e.target),
                tasks: (e.tasks.iter())
                    .map(|(id, t)| local_task(*id, t, me))
                    .collect(),
                topics: e.topics.list(),
                worker_id: me.into(),
            });
        };
        let mut view = reported_view(shared, name)?;
        if let Some(e) = self.lock().get(name) {
            if e.part.connector {
                view.state = state(e.target);
                view.worker_id = me.into();
            }
            for t in &mut view.tasks {
                if let Some(here) = e.tasks.get(&t.id) {
                    *t = local_task(t.id, here, me);
                }
            }
        }
        Ok(view)
    }

    /// Connector `name`'s status over its tasks: FAILED (with why) when one of them is, else
    /// its own state; the counters are the sums of its tasks'.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector.
    pub fn status(&self, name: &str) -> Result<Status> {
        let view = self.view(name)?;
        let mut s = Status::new(view.state);
        for t in view.tasks {
            let t = t.status;
            s.restarts += t.restarts;
            s.records += t.records;
            s.errors += t.errors;
            s.dead_letters += t.dead_letters;
            if t.state == State::Failed && s.state != State::Failed {
                s.state = State::Failed;
                s.trace = t.trace;
            }
        }
        Ok(s)
    }

    /// Forgets the topics connector `name` used (`PUT /connectors/{name}/topics/reset`),
    /// wherever it runs: the workers running its tasks read the tombstones and publish a
    /// topic again when they next use it.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector.
    pub fn reset_topics(&self, name: &str) -> Result<()> {
        if !self.exists(name) {
            return Err(ConnectError::NotFound(name.into()));
        }
        ActiveTopics::new(&self.publisher, name, &self.active).reset();
        Ok(())
    }

    /// The name this worker gives itself in statuses.
    pub fn worker_id(&self) -> &str {
        self.publisher.worker_id()
    }

    /// The stored source offsets of connector `name`: (partition, offset). In a group they
    /// are read from the offsets topic, which the workers running its tasks write.
    ///
    /// # Errors
    /// When the offsets topic cannot be read ([`ConnectError::Log`]).
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub(super) async fn source_offsets(&self, name: &str) -> Result<Vec<(Value, Value)>> {
        let all = match self.shared {
            Some(_) => offsets::load(&self.client, &self.offset_topic).await?,
            None => self.offsets.lock().await.clone(),
        };
        Ok(all
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, p), o)| (serde_json::from_str(p).unwrap_or_default(), o.clone()))
            .collect())
    }

    /// Whether connector `name` is STOPPED.
    ///
    /// # Errors
    /// [`ConnectError::NotFound`] when there is no such connector.
    pub(super) fn stopped(&self, name: &str) -> Result<bool> {
        match &self.shared {
            Some(s) => s
                .connector(name)
                .map(|c| c.target == TargetState::Stopped)
                .ok_or_else(|| ConnectError::NotFound(name.into())),
            None => self.with(name, |e| e.target == TargetState::Stopped),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.connectors.lock().expect("not poisoned")
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&Entry) -> T) -> Result<T> {
        let found = self.lock().get(name).map(f);
        found.ok_or_else(|| self.missing(name))
    }
}

/// Connector `name` of the group, which runs elsewhere (or nowhere yet), as the shared topics
/// say: its tasks planned from its configuration, with the statuses their worker published.
fn reported_view(shared: &Shared, name: &str) -> Result<View> {
    let stored = shared
        .connector(name)
        .ok_or_else(|| ConnectError::NotFound(name.into()))?;
    let config = ConnectorConfig {
        name: name.into(),
        props: stored.props,
    };
    let kind = registry::build(&config)?.kind();
    let plans = match stored.target {
        TargetState::Stopped => Vec::new(),
        _ => registry::task_configs(&config)?,
    };
    let statuses = shared.statuses();
    let unassigned = || (State::Unassigned, None, String::new());
    let of = |r: &crate::runtime::shared::Reported| (r.state, r.trace.clone(), r.worker_id.clone());
    let (connector, _, worker_id) = statuses.connectors.get(name).map_or_else(unassigned, of);
    let tasks = (0..)
        .zip(plans)
        .map(|(id, config)| {
            let reported = statuses.tasks.get(&(name.to_string(), id));
            let (state, trace, worker_id) = reported.map_or_else(unassigned, of);
            let status = Status {
                trace,
                ..Status::new(state)
            };
            TaskView {
                id,
                config,
                status,
                worker_id,
            }
        })
        .collect();
    Ok(View {
        kind,
        state: match connector {
            State::Unassigned => State::Unassigned,
            _ => state(stored.target),
        },
        tasks,
        topics: ActiveTopics::new(&Publisher::default(), name, shared.active()).list(),
        worker_id,
        config,
    })
}

/// Checks a configuration as a worker starts it: its retry cap, the connector it builds, its
/// task plan. Returns the connector's kind.
///
/// # Errors
/// [`ConnectError::Config`] or [`ConnectError::UnknownClass`] for what it refuses.
pub(crate) fn check(config: &ConnectorConfig) -> Result<Kind> {
    task::retry_delay_max(config)?;
    let kind = registry::build(config)?.kind();
    registry::task_configs(config)?;
    Ok(kind)
}

/// Task `id` as it runs here, on worker `me`.
fn local_task(id: u32, t: &Task, me: &str) -> TaskView {
    TaskView {
        id,
        config: t.config.clone(),
        status: t.status.get(),
        worker_id: me.into(),
    }
}

/// Aborts `tasks`, their statuses saying UNASSIGNED; returns their handles, to wait until they
/// are gone.
fn stop(tasks: BTreeMap<u32, Task>) -> Vec<JoinHandle<()>> {
    tasks
        .into_values()
        .map(|t| {
            t.handle.abort();
            t.status.retire();
            t.handle
        })
        .collect()
}

/// A connector's state in its target state.
fn state(target: TargetState) -> State {
    match target {
        TargetState::Started => State::Running,
        TargetState::Paused => State::Paused,
        TargetState::Stopped => State::Stopped,
    }
}

/// What a connector's tasks do in its target state (a STOPPED one has none).
fn control(target: TargetState) -> Control {
    match target {
        TargetState::Paused => Control::Pause,
        _ => Control::Run,
    }
}
