//! An application instance in its group: the loop behind [`App::run`].
//!
//! Every process running an application (the same `application_id`: a SQL job's name, a DSL
//! app's id) is one member of the group `application_id`, over the embedded log or a broker.
//! The leader assigns the tasks (see [`crate::assign`]); each instance runs its own on its
//! worker threads until the group rebalances (an instance joined, left or died), then stops
//! them after a last commit and a local checkpoint of their stores, joins again, and starts
//! on its new tasks — restoring each store from its checkpoint when the task stayed, else
//! from the changelog (Kafka Streams' eager rebalancing).
//!
//! Contract:
//! - A task runs on one instance at a time: its previous holder committed and stopped it
//!   before the group's new generation began, or was dropped from the group, after which its
//!   commits (and, under exactly-once, its transactions' offsets) are refused for its old
//!   generation, so what it wrote after losing the task is never committed.
//! - An error that says this instance lost its place (its generation is stale, its
//!   transactional id was taken over) makes it rejoin, not stop.
//! - A bounded run (`until_end`) ends when every task of the job is done, wherever it ran:
//!   an instance whose tasks are done rejoins with them, and the leader assigns only the
//!   others (a dead instance's among them) or tells every instance the job is done.
//! - Without a `state_dir`, the instance checkpoints into a private directory only when it
//!   stops for a rebalance, and removes the directory when it stops.
//! - Over the embedded log one process runs the application, the only member: it holds
//!   every task, as before instances existed.

use crate::assign::{self, InstanceInfo, PROTOCOL, TaskAssignment, TaskInputs};
use crate::checkpoint;
use crate::error::{EngineError, Result};
use crate::runtime::{App, Member, RunSummary, Stop, add_metrics, plan};
use crate::standby;
use crate::stats::Assignment;
use crate::topology::TopicName;
use runnel_log::error::{GroupErrorKind, TxnErrorKind};
use runnel_log::{ConsumerConfig, LogError, TopicPartition};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::runtime::Handle;

/// How often an instance without tasks looks whether it should stop or rejoin.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// A state directory private to this process, removed when dropped.
struct PrivateStateDir(PathBuf);

impl Drop for PrivateStateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// See the module documentation.
pub(crate) fn run(app: &App, rt: &Handle) -> Result<RunSummary> {
    let id = app.config.application_id.clone();
    let plan = Arc::new(rt.block_on(plan(&app.topology, &app.client, &app.config))?);
    let mut inputs = TaskInputs::new();
    let mut specs = std::collections::BTreeMap::new();
    for st in &app.topology.subtopologies {
        for p in 0..plan.tasks_of[st.id] {
            let name = format!("{}_{p}", st.id);
            let tps = (st.sources.iter())
                .map(|t: &TopicName| TopicPartition::new(t.resolve(&id), p))
                .collect();
            inputs.insert(name.clone(), tps);
            specs.insert(name, (st.id, p));
        }
    }
    // Only tasks with stores have state for a standby to keep warm.
    let stateful = |task: &str| {
        (specs.get(task)).is_some_and(|&(st, _)| !app.topology.subtopologies[st].stores.is_empty())
    };
    let topics: Vec<String> = (inputs.values().flatten())
        .map(|tp| tp.topic.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut config = app.config.clone();
    let checkpoint_on_exit = config.state_dir.is_some();
    let _private = match &config.state_dir {
        Some(_) => None,
        None => {
            // Unique within the process too: two apps starting in the same millisecond
            // shared one directory, and the first to stop removed the other's stores.
            static STARTED: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "runnel-state-{}-{}-{}",
                std::process::id(),
                runnel_log::types::now_ms(),
                STARTED.fetch_add(1, Ordering::Relaxed)
            ));
            config.state_dir = Some(dir.clone());
            config.checkpoint_interval = Duration::MAX;
            Some(PrivateStateDir(dir))
        }
    };
    let state_dir = config.state_dir.clone().expect("set above");
    let mut member = app.client.group_member(ConsumerConfig {
        group_id: Some(id.clone()),
        client_id: format!("{id}-instance"),
        ..Default::default()
    })?;
    let mut info = InstanceInfo::default();
    let mut summary = RunSummary::default();
    let mut ran = BTreeSet::new();
    let outcome = loop {
        if app.stop.load(Ordering::Acquire) {
            break Ok(());
        }
        info.checkpointed = checkpoint::tasks(&state_dir, &id);
        let metadata = info.encode(topics.clone());
        let mut assign = |_: &str, members: &[(String, Vec<u8>)]| {
            assign::assign_members(&inputs, (config.num_standby_replicas, &stateful), members)
                .map_err(|e| LogError::InvalidConfig(e.to_string()))
        };
        let joined = rt.block_on(member.join(PROTOCOL, metadata, &mut assign))?;
        let mine = TaskAssignment::decode(&joined.assignment)?;
        tracing::info!(app = %id, generation = joined.metadata.generation, instances = mine.instances,
            slot = mine.slot, tasks = %mine.tasks.join(", "), standby = %mine.standby.join(", "), "holding tasks");
        app.stats.assigned(Assignment {
            generation: joined.metadata.generation,
            instances: mine.instances,
            slot: mine.slot,
            tasks: mine.tasks.clone(),
        });
        info.slot = Some(mine.slot);
        info.owned = mine.tasks.clone();
        info.finished = mine.finished.clone();
        if mine.done {
            break Ok(());
        }
        ran.extend(mine.tasks.iter().cloned());
        let mine_specs: Vec<(usize, u32)> = (mine.tasks.iter())
            .filter_map(|t| specs.get(t).copied())
            .collect();
        let stop = Stop {
            app: app.stop.clone(),
            rejoin: member.rejoin_flag(),
            ended: Default::default(),
            checkpoint_on_exit,
        };
        let standby_tasks: Vec<(usize, u32, String)> = (mine.standby.iter())
            .filter_map(|t| specs.get(t).map(|&(st, p)| (st, p, t.clone())))
            .collect();
        let standby = (!standby_tasks.is_empty()).then(|| {
            let parts = (app.topology.clone(), app.client.clone());
            let (rt, stop, dir, id) = (rt.clone(), stop.clone(), state_dir.clone(), id.clone());
            let (stats, generation) = (app.stats.clone(), joined.metadata.generation);
            let storage = config.storage;
            std::thread::Builder::new()
                .name("runnel-standby".into())
                .spawn(move || {
                    let _runtime = rt.enter();
                    let (topology, client) = parts;
                    let ran = standby::run(&topology, &client, &rt, &id, &dir, storage, &standby_tasks, &stop, &stats, generation);
                    match ran {
                        Ok(applied) => tracing::debug!(app = %id, applied, "standby replicas stopped"),
                        Err(e) => tracing::warn!(app = %id, error = %e, "a standby replica stopped; its task restores from the changelog if it moves here"),
                    }
                })
                .expect("spawning the standby thread")
        });
        let as_member = Member {
            group: joined.metadata.clone(),
            slot: mine.slot,
        };
        let finished = if mine_specs.is_empty() {
            // Nothing to run: wait for the next rebalance (another instance finished its
            // tasks, joined or left), or the end.
            while !stop.app.load(Ordering::Acquire) && !stop.rejoin.load(Ordering::Acquire) {
                std::thread::sleep(IDLE_CHECK);
            }
            Vec::new()
        } else {
            match app.run_tasks(rt, &config, &plan, &mine_specs, &as_member, &stop) {
                Ok(run) => {
                    summary.commits += run.summary.commits;
                    summary.restored_records += run.summary.restored_records;
                    add_metrics(&mut summary.metrics, &run.summary.metrics);
                    run.finished
                }
                Err(e) if lost_place(&e) => {
                    tracing::warn!(app = %id, error = %e, "this instance lost its tasks to a rebalance; rejoining");
                    Vec::new()
                }
                Err(e) => break Err(e),
            }
        };
        // The standbys end with the generation's work (a rebalance stops both at once).
        stop.ended.store(true, Ordering::Release);
        if let Some(t) = standby {
            t.join()
                .expect("the standby thread returns errors, not panics");
        }
        // A bounded run whose tasks here are done rejoins at once when that is news: the
        // leader then says whether the whole job is done (a dead instance's tasks may not
        // be); otherwise it waits for the group's next rebalance.
        let known = info.finished.len();
        info.finished.extend(finished);
        info.finished.sort();
        info.finished.dedup();
        if info.finished.len() == known {
            while !stop.app.load(Ordering::Acquire) && !stop.rejoin.load(Ordering::Acquire) {
                std::thread::sleep(IDLE_CHECK);
            }
        }
    };
    if let Err(e) = rt.block_on(member.leave()) {
        tracing::debug!(app = %id, error = %e, "leaving the group failed; it drops this instance when its session expires");
    }
    summary.tasks = ran.len();
    outcome.map(|()| summary)
}

/// Whether `e` says this instance's generation or transactional id moved on without it: its
/// tasks belong to others now, and it must rejoin.
fn lost_place(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Log(LogError::Group {
            kind: GroupErrorKind::UnknownMember
                | GroupErrorKind::IllegalGeneration
                | GroupErrorKind::RebalanceInProgress,
            ..
        }) | EngineError::Log(LogError::Transaction {
            kind: TxnErrorKind::ProducerFenced,
            ..
        })
    )
}
