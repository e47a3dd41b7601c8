//! A worker's membership of a group of workers (Kafka Connect's distributed mode, with its
//! eager rebalancing): the workers join the group `group.id`, the leader assigns the
//! connectors of the config topic over them, each runs its own with all their tasks, and a
//! rebalance moves them.
//!
//! Contract:
//! - The unit of assignment is a connector with all its tasks; the leader deals the
//!   connectors, by name, round robin over the members, by member id: counts differ by one
//!   at most.
//! - Before each join the worker reads the config topic to its end, so the leader assigns
//!   what was stored before the rebalance; the leader rejoins (starting a rebalance) when the
//!   config topic's connectors are no longer those it assigned (one created or deleted).
//! - Eager: when the group rebalances (a worker joined, left, or its session expired), each
//!   worker stops everything it runs (statuses UNASSIGNED) before it joins again, so no
//!   connector runs on two workers of one generation.
//! - Between rebalances, each worker applies the config topic's changes to its own
//!   connectors (a new configuration, a target state, a deletion) as it reads them: the
//!   REST API of any worker only stores the change.
//! - The assignment travels as JSON user data in Kafka's consumer-protocol encoding, so
//!   Kafka's tools describe the group.

use crate::error::{ConnectError, Result};
use crate::runtime::shared::Shared;
use crate::runtime::worker::Worker;
use runnel_log::assignor::{self, MemberSubscription};
use runnel_log::{GroupMember, Joined, LogError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// The assignor's name.
const PROTOCOL: &str = "connect-round-robin";

/// How often the worker looks whether the group asks it to rejoin.
const REJOIN_CHECK: Duration = Duration::from_millis(100);

/// A member's metadata, and its assignment.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Assignment {
    /// The worker's REST address (its id in statuses).
    #[serde(default)]
    url: String,
    /// The connectors it runs.
    #[serde(default)]
    connectors: BTreeSet<String>,
}

/// Runs `worker` (made by [`Worker::member`]) as `member` of its group until `stop` turns
/// true, then stops its connectors and leaves the group. A join that fails (the broker gone)
/// is logged and tried again a second later.
///
/// # Errors
/// [`ConnectError::Config`] for a worker that is not of a group.
///
/// # Cancel safety
/// Not cancel safe: dropped, the worker's connectors run on, and the member is gone without
/// leaving (the group waits for its session to expire). Use `stop`.
pub async fn run(
    worker: Worker,
    mut member: Box<dyn GroupMember>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let shared = worker
        .shared()
        .cloned()
        .ok_or_else(|| ConnectError::Config {
            connector: String::new(),
            message: "a worker of a group is made by Worker::member".into(),
        })?;
    let me = Assignment {
        url: worker.worker_id().into(),
        ..Default::default()
    };
    let metadata = MemberSubscription {
        member_id: String::new(),
        topics: Vec::new(),
        owned_partitions: Vec::new(),
        user_data: serde_json::to_vec(&me).expect("plain data serializes"),
    }
    .encode();
    while !*stop.borrow() {
        let (mine, joined, assigned) = match join(&shared, &mut *member, &metadata).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "joining the worker group failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!(generation = joined.metadata.generation, leader = joined.leader,
            connectors = ?mine.connectors, "joined the worker group");
        let rejoin = member.rejoin_flag();
        let mut changes = shared.changes();
        let mut tick = tokio::time::interval(REJOIN_CHECK);
        loop {
            changes.mark_unchanged();
            if joined.leader && shared.names() != assigned {
                tracing::info!("the connectors changed; rebalancing the worker group");
                break;
            }
            let pick = |n: &str| mine.connectors.contains(n);
            worker.run_only(shared.connectors(pick)).await;
            let rejoin = loop {
                tokio::select! {
                    _ = changes.changed() => break false,
                    _ = tick.tick() => if rejoin.load(Ordering::Acquire) { break true },
                    _ = stop.changed() => break true,
                }
            };
            if rejoin {
                break;
            }
        }
        worker.shutdown().await;
    }
    if let Err(e) = member.leave().await {
        tracing::warn!(error = %e, "leaving the worker group failed; it drops this worker once its session expires");
    }
    Ok(())
}

/// Reads the config topic to its end, then joins: this worker's assignment, the join, and
/// (on the leader) the connectors it assigned.
///
/// # Cancel safety
/// Not cancel safe, as [`GroupMember::join`].
async fn join(
    shared: &Shared,
    member: &mut dyn GroupMember,
    metadata: &[u8],
) -> Result<(Assignment, Joined, BTreeSet<String>)> {
    shared.catch_up().await?;
    let mut assigned = BTreeSet::new();
    let mut assign = |_: &str, members: &[(String, Vec<u8>)]| {
        assigned = shared.names();
        deal(&assigned, members)
    };
    let joined = member
        .join(PROTOCOL, metadata.to_vec(), &mut assign)
        .await?;
    Ok((decode(&joined.assignment)?, joined, assigned))
}

/// The leader's part: `connectors` dealt round robin over `members` (by member id).
fn deal(
    connectors: &BTreeSet<String>,
    members: &[(String, Vec<u8>)],
) -> runnel_log::Result<Vec<(String, Vec<u8>)>> {
    let mut ids: Vec<&String> = members.iter().map(|(id, _)| id).collect();
    ids.sort();
    let mut each: BTreeMap<&String, Assignment> =
        ids.iter().map(|id| (*id, Assignment::default())).collect();
    for (name, id) in connectors.iter().zip(ids.iter().cycle()) {
        if let Some(a) = each.get_mut(id) {
            a.connectors.insert(name.clone());
        }
    }
    Ok(each
        .into_iter()
        .map(|(id, a)| {
            let data = serde_json::to_vec(&a).expect("plain data serializes");
            (id.clone(), assignor::encode_assignment_with(&[], &data))
        })
        .collect())
}

fn decode(bytes: &[u8]) -> runnel_log::Result<Assignment> {
    let (_, data) = assignor::decode_assignment_with(bytes)?;
    serde_json::from_slice(&data).map_err(|e| {
        LogError::Protocol(format!(
            "the worker group's assignment is not a connector assignment ({e}): give the \
             workers a group id of their own"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectors_are_dealt_evenly_and_decoded_back() {
        let names: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        let members = [("m2".to_string(), vec![]), ("m1".to_string(), vec![])];
        let got: BTreeMap<String, Vec<String>> = deal(&names, &members)
            .unwrap()
            .into_iter()
            .map(|(id, b)| (id, decode(&b).unwrap().connectors.into_iter().collect()))
            .collect();
        assert_eq!(got["m1"], ["a", "c"]);
        assert_eq!(got["m2"], ["b"]);
    }
}
