//! A worker's membership of a group of workers (Kafka Connect's distributed mode, with its
//! eager rebalancing): the workers join the group `group.id`, the leader assigns the
//! connectors of the config topic and their tasks over them, each runs its share, and a
//! rebalance moves them.
//!
//! Contract:
//! - A worker joins with its REST URL as metadata (Kafka Connect's `ConnectProtocol` `url`).
//! - Connectors and tasks are separate units (Kafka Connect's `EagerAssignor`): the leader
//!   deals the connectors, by name, round robin over the members (by member id), then every
//!   connector's tasks, by (name, id), going on round the members from where the connectors
//!   left off. A connector's tasks are those its configuration plans (`tasks.max`); a STOPPED
//!   one has none.
//! - Every member receives the whole assignment (the leader's URL, and each member's URL and
//!   share), so any worker knows where to forward a REST request ([`crate::runtime::forward`]).
//!   A worker keeps the last one it received until the next arrives: a request during a
//!   rebalance goes where the previous generation said.
//! - Before each join the worker reads the config topic to its end, so the leader assigns
//!   what was stored before the rebalance; the leader rejoins (starting a rebalance) when the
//!   config topic's connectors or their task counts are no longer those it assigned.
//! - Eager: when the group rebalances (a worker joined, left, or its session expired), each
//!   worker stops everything it runs (statuses UNASSIGNED) before it joins again, so no
//!   task runs on two workers of one generation.
//! - Between rebalances, each worker applies the config topic's changes to its share (a new
//!   configuration, a target state, a deletion) as it reads them.
//! - The assignment travels as JSON user data in Kafka's consumer-protocol encoding, so
//!   Kafka's tools describe the group.

use crate::config::ConnectorConfig;
use crate::error::{ConnectError, Result};
use crate::registry;
use crate::runtime::configs::TargetState;
use crate::runtime::shared::Shared;
use crate::runtime::worker::{Part, Worker};
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

/// A member's metadata: its REST URL (`host:port`, also its id in statuses).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Metadata {
    url: String,
}

/// One generation's assignment, the same for every member.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Assignment {
    /// The leader's REST URL: where writes go.
    pub leader_url: String,
    /// Each member's share, by member id.
    pub members: BTreeMap<String, Share>,
}

/// What one member runs.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Share {
    /// Its REST URL.
    pub url: String,
    pub connectors: BTreeSet<String>,
    /// (connector, task id).
    pub tasks: BTreeSet<(String, u32)>,
}

impl Assignment {
    /// The URL of the worker running connector `name`.
    pub fn connector_owner(&self, name: &str) -> Option<&str> {
        let mut all = self.members.values();
        all.find(|s| s.connectors.contains(name))
            .map(|s| s.url.as_str())
    }

    /// The URL of the worker running task `id` of connector `name`.
    pub fn task_owner(&self, name: &str, id: u32) -> Option<&str> {
        let task = (name.to_string(), id);
        let mut all = self.members.values();
        all.find(|s| s.tasks.contains(&task))
            .map(|s| s.url.as_str())
    }
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
    let me = Metadata {
        url: worker.worker_id().into(),
    };
    let metadata = MemberSubscription {
        member_id: String::new(),
        topics: Vec::new(),
        owned_partitions: Vec::new(),
        user_data: serde_json::to_vec(&me).expect("plain data serializes"),
    }
    .encode();
    while !*stop.borrow() {
        let joining = join(&shared, &mut *member, &me.url, &metadata).await;
        let (all, joined, assigned) = match joining {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "joining the worker group failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mine = all
            .members
            .get(&joined.metadata.member_id)
            .cloned()
            .unwrap_or_default();
        tracing::info!(generation = joined.metadata.generation, leader = joined.leader,
            connectors = ?mine.connectors, tasks = ?mine.tasks, "joined the worker group");
        shared.set_assignment(all);
        let rejoin = member.rejoin_flag();
        let mut changes = shared.changes();
        let mut tick = tokio::time::interval(REJOIN_CHECK);
        loop {
            changes.mark_unchanged();
            if joined.leader && units(&shared) != assigned {
                tracing::info!(
                    "the connectors or their tasks changed; rebalancing the worker group"
                );
                break;
            }
            worker.run_only(parts(&shared, &mine)).await;
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

/// The stored connectors `share` names, each with the part of it this worker runs.
fn parts(
    shared: &Shared,
    share: &Share,
) -> BTreeMap<String, (crate::runtime::configs::Stored, Part)> {
    let names: BTreeSet<&String> = (share.connectors.iter())
        .chain(share.tasks.iter().map(|(n, _)| n))
        .collect();
    shared
        .connectors(|n| names.contains(&n.to_string()))
        .into_iter()
        .map(|(name, stored)| {
            let part = Part {
                connector: share.connectors.contains(&name),
                tasks: Some(
                    (share.tasks.iter())
                        .filter(|(n, _)| *n == name)
                        .map(|(_, id)| *id)
                        .collect(),
                ),
            };
            (name, (stored, part))
        })
        .collect()
}

/// Every stored connector with its number of tasks: what the leader assigns.
fn units(shared: &Shared) -> BTreeMap<String, u32> {
    shared
        .connectors(|_| true)
        .into_iter()
        .map(|(name, s)| {
            let count = match s.target {
                TargetState::Stopped => 0,
                _ => {
                    let config = ConnectorConfig {
                        name: name.clone(),
                        props: s.props,
                    };
                    // A configuration refused now runs no task (its worker says why).
                    registry::task_configs(&config).map_or(0, |t| t.len() as u32)
                }
            };
            (name, count)
        })
        .collect()
}

/// Reads the config topic to its end, then joins: the group's assignment, the join, and
/// (on the leader) the units it assigned.
///
/// # Cancel safety
/// Not cancel safe, as [`GroupMember::join`].
async fn join(
    shared: &Shared,
    member: &mut dyn GroupMember,
    url: &str,
    metadata: &[u8],
) -> Result<(Assignment, Joined, BTreeMap<String, u32>)> {
    shared.catch_up().await?;
    let mut assigned = BTreeMap::new();
    let mut assign = |_: &str, members: &[(String, Vec<u8>)]| {
        assigned = units(shared);
        deal(&assigned, url, members)
    };
    let joined = member
        .join(PROTOCOL, metadata.to_vec(), &mut assign)
        .await?;
    Ok((decode(&joined.assignment)?, joined, assigned))
}

/// The leader's part (its URL `leader_url`): `units` (connector → task count) dealt round
/// robin over `members` (by member id), connectors first, then tasks; every member gets the
/// whole assignment.
fn deal(
    units: &BTreeMap<String, u32>,
    leader_url: &str,
    members: &[(String, Vec<u8>)],
) -> runnel_log::Result<Vec<(String, Vec<u8>)>> {
    let mut all = Assignment {
        leader_url: leader_url.into(),
        ..Default::default()
    };
    for (id, metadata) in members {
        let m = MemberSubscription::decode(id, metadata)?;
        let url = serde_json::from_slice::<Metadata>(&m.user_data)
            .map_err(|e| {
                LogError::Protocol(format!(
                    "member {id} of the worker group is not a connect worker ({e}): give the workers a group id of their own"
                ))
            })?
            .url;
        all.members.insert(
            id.clone(),
            Share {
                url,
                ..Default::default()
            },
        );
    }
    let ids: Vec<String> = all.members.keys().cloned().collect();
    let mut next = ids.iter().cycle();
    for name in units.keys() {
        if let Some(s) = next.next().and_then(|id| all.members.get_mut(id)) {
            s.connectors.insert(name.clone());
        }
    }
    for (name, &count) in units {
        for task in 0..count {
            if let Some(s) = next.next().and_then(|id| all.members.get_mut(id)) {
                s.tasks.insert((name.clone(), task));
            }
        }
    }
    let data = serde_json::to_vec(&all).expect("plain data serializes");
    let encoded = assignor::encode_assignment_with(&[], &data);
    Ok(ids.into_iter().map(|id| (id, encoded.clone())).collect())
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

    fn member(id: &str) -> (String, Vec<u8>) {
        let m = MemberSubscription {
            member_id: id.into(),
            topics: Vec::new(),
            owned_partitions: Vec::new(),
            user_data: serde_json::to_vec(&Metadata {
                url: format!("{id}:8083"),
            })
            .unwrap(),
        };
        (id.to_string(), m.encode())
    }

    #[test]
    fn connectors_then_tasks_are_dealt_round_robin_and_decoded_back() {
        let units: BTreeMap<String, u32> =
            [("a".into(), 1), ("b".into(), 4), ("c".into(), 0)].into();
        let got = deal(&units, "m1:8083", &[member("m2"), member("m1")]).unwrap();
        assert_eq!(got.len(), 2);
        let all = decode(&got[0].1).unwrap();
        assert_eq!(all, decode(&got[1].1).unwrap(), "one assignment for all");
        assert_eq!(all.leader_url, "m1:8083");
        let (m1, m2) = (&all.members["m1"], &all.members["m2"]);
        assert_eq!(m1.connectors, ["a", "c"].map(String::from).into());
        assert_eq!(m2.connectors, ["b"].map(String::from).into());
        let tasks = |s: &Share| {
            s.tasks
                .iter()
                .map(|(n, t)| format!("{n}{t}"))
                .collect::<Vec<_>>()
        };
        // After three connectors the next member is m2: a0, then b's four tasks alternate.
        assert_eq!(tasks(m2), ["a0", "b1", "b3"]);
        assert_eq!(tasks(m1), ["b0", "b2"]);
        assert_eq!(all.task_owner("b", 1), Some("m2:8083"));
        assert_eq!(all.connector_owner("c"), Some("m1:8083"));
        assert_eq!(all.task_owner("c", 0), None);
    }
}
