//! Standby replicas (`num_standby_replicas`): warm copies of other instances' task state.
//!
//! An instance given standby tasks keeps, for each, the task's stores restored from their
//! changelogs up to the offsets the active task committed, and checkpoints them locally
//! (see [`crate::checkpoint`]). When the task later moves here (its active instance died or
//! left), the worker loads that checkpoint and replays only the changelog after it, instead
//! of all of it; the assignor prefers the instance with the checkpoint.
//!
//! Contract: a standby applies only committed changelog records (below the committed
//! changelog offset, read with `read_committed`), so its checkpoint never holds state the
//! active task did not commit, and a worker accepts it. It runs until the generation ends.

use crate::checkpoint;
use crate::error::{EngineError, Result};
use crate::runtime::Stop;
use crate::state::StoreHandle;
use crate::stats::AppStats;
use crate::topology::{Topology, changelog_topic};
use runnel_log::{ConsumerConfig, OffsetReset, SharedLogClient, TopicPartition};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// How often a standby writes its checkpoints (when it applied something since).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// How long a standby waits when it is caught up.
const CAUGHT_UP_WAIT: Duration = Duration::from_millis(200);

/// One store of a standby task.
struct Replica {
    task: String,
    store: StoreHandle,
    changelog: TopicPartition,
    /// The next changelog offset to apply.
    position: u64,
    dirty: bool,
}

/// Keeps the stores of `tasks` (`(sub-topology, partition, name)`) warm until `stop`;
/// returns how many changelog records it applied. Each checkpoint written when every store
/// has caught up with what its task committed is told to `stats` as `generation`'s.
///
/// # Errors
///
/// The log's errors; `EngineError::Store` for a changelog record the store refuses;
/// `EngineError::Io` when a checkpoint cannot be written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    topology: &Topology,
    client: &SharedLogClient,
    rt: &Handle,
    app: &str,
    state_dir: &Path,
    storage: crate::state::Storage,
    tasks: &[(usize, u32, String)],
    stop: &Stop,
    stats: &AppStats,
    generation: i32,
) -> Result<u64> {
    let mut replicas = Vec::new();
    for (st, partition, task) in tasks {
        for name in &topology.subtopologies[*st].stores {
            let def = (topology.stores.iter())
                .find(|s| &s.name == name)
                .expect("declared store");
            replicas.push(Replica {
                task: task.clone(),
                store: def.instantiate(),
                changelog: TopicPartition::new(changelog_topic(name).resolve(app), *partition),
                position: 0,
                dirty: false,
            });
        }
    }
    if replicas.is_empty() {
        return Ok(0);
    }
    let tps: Vec<TopicPartition> = replicas.iter().map(|r| r.changelog.clone()).collect();
    let committed = rt.block_on(client.committed_offsets(app, &tps))?;
    for (r, c) in replicas.iter_mut().zip(committed) {
        let c = c.unwrap_or(0);
        r.position = checkpoint::open(Some(state_dir), app, &r.task, &r.store, storage, c, true)?;
    }
    let mut consumer = client.consumer(ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        enable_auto_commit: false,
        ..Default::default()
    });
    consumer.assign(tps.clone())?;
    let index: HashMap<TopicPartition, usize> = tps
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, tp)| (tp, i))
        .collect();
    let behind = |replicas: &[Replica], committed: &[Option<u64>]| {
        (replicas.iter().zip(committed)).any(|(r, c)| r.position < c.unwrap_or(0))
    };
    let mut committed = rt.block_on(client.committed_offsets(app, &tps))?;
    let mut applied = 0u64;
    let mut last_checkpoint = Instant::now();
    while !stop.requested() {
        if behind(&replicas, &committed) {
            for (r, c) in replicas.iter().zip(&committed) {
                // Only where the consumer went past what was committed (or never read):
                // a seek drops what it has fetched ahead.
                if r.position < c.unwrap_or(0)
                    && consumer.position(&r.changelog) != Some(r.position)
                {
                    consumer.seek(&r.changelog, r.position)?;
                }
            }
            let records = rt.block_on(consumer.poll(Duration::from_millis(100)))?;
            for rec in records {
                let tp = TopicPartition::new(&*rec.topic, rec.partition);
                let i = index[&tp];
                let (r, upto) = (&mut replicas[i], committed[i].unwrap_or(0));
                if rec.record.offset < r.position || rec.record.offset >= upto {
                    continue;
                }
                if let Some(key) = rec.record.key.as_deref() {
                    let mut s = r.store.dynamic.borrow_mut();
                    s.apply_change(key, rec.record.value.as_deref())
                        .map_err(|reason| EngineError::Store {
                            store: s.name().to_string(),
                            reason: format!("{tp} offset {}: {reason}", rec.record.offset),
                        })?;
                    applied += 1;
                }
                r.position = rec.record.offset + 1;
                r.dirty = true;
            }
            // Past markers and aborted records too, up to what is committed.
            for (r, c) in replicas.iter_mut().zip(&committed) {
                if let Some(p) = consumer.position(&r.changelog) {
                    r.position = r.position.max(p.min(c.unwrap_or(0)));
                }
            }
        } else {
            // Caught up with the committed offsets last read: asks again (one request to
            // the group's coordinator), and waits when there is nothing new.
            committed = rt.block_on(client.committed_offsets(app, &tps))?;
            if !behind(&replicas, &committed) {
                std::thread::sleep(CAUGHT_UP_WAIT);
            }
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            write_checkpoints(&mut replicas, app, state_dir)?;
            last_checkpoint = Instant::now();
            if !behind(&replicas, &committed) {
                stats.standby_caught_up(generation, tasks.len());
            }
        }
    }
    write_checkpoints(&mut replicas, app, state_dir)?;
    rt.block_on(consumer.close())?;
    Ok(applied)
}

fn write_checkpoints(replicas: &mut [Replica], app: &str, state_dir: &Path) -> Result<()> {
    for r in replicas.iter_mut().filter(|r| r.dirty) {
        let mut s = r.store.dynamic.borrow_mut();
        let file = checkpoint::path(state_dir, app, &r.task, s.name());
        checkpoint::write(&file, r.position, &mut *s)?;
        r.dirty = false;
    }
    Ok(())
}
