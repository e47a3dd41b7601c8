//! Which instance of an application runs which tasks: the group protocol of the
//! application's instances (Kafka Streams' `StreamsPartitionAssignor`, simplified).
//!
//! Every process running an application joins the group `application_id` as one member (see
//! [`runnel_log::membership`]) with an [`InstanceInfo`]: its slot, the tasks it held and the
//! tasks it has a local checkpoint of. The leader runs [`assign_tasks`] and hands each
//! member a [`TaskAssignment`].
//!
//! Bounded runs (`until_end`): members report the tasks they finished; the leader hands the
//! union on (so it survives a change of leader) and says `done` when it holds every task.
//! Finished tasks are still assigned: a restarted writer must tell its readers again that
//! it ended, as after a crash of the only instance.
//!
//! Contract of [`assign_tasks`] (a pure function of its inputs):
//! - every task goes to exactly one member, and every member gets `floor(n/m)` or
//!   `floor(n/m) + 1` of the `n` tasks (balanced; a task is a unit of input partitions read
//!   together, so co-partitioned inputs never split);
//! - sticky: a member keeps the tasks it held as far as balance allows (when only some, one
//!   of each sub-topology in turn, those it has a checkpoint of first); a task nobody kept
//!   goes to a member with a checkpoint of its state when one has room, else to the least
//!   loaded member, preferring the one with fewest tasks of the same sub-topology (spread);
//! - standbys: each task that keeps state gets up to `num_standby_replicas` members other than its own that
//!   keep its state warm, preferring those with a checkpoint of it, then the fewest standbys;
//! - slots: each member gets a distinct slot number, its previous one when no member with a
//!   smaller id claims it too, else the lowest free one. A slot names the member's
//!   transactional ids under exactly-once, so an instance that takes over a dead one's slot
//!   fences it and aborts what it left open at once.
//!
//! Wire format: both directions are Kafka's consumer protocol (subscription: the input topics,
//! assignment: the input partitions of the assigned tasks), with this module's JSON as the
//! user data, so that Kafka's tools and `runnel groups describe` show who reads what.

use crate::error::{EngineError, Result};
use runnel_log::TopicPartition;
use runnel_log::assignor::{self, MemberSubscription};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The assignor's name in the group protocol.
pub(crate) const PROTOCOL: &str = "runnel-tasks";

/// What a member tells the leader when it joins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InstanceInfo {
    /// The slot it held in the last generation.
    pub slot: Option<u32>,
    /// Tasks (`<sub-topology>_<partition>`) it held in the last generation.
    pub owned: Vec<String>,
    /// Tasks it has a local checkpoint of.
    pub checkpointed: Vec<String>,
    /// Tasks of a bounded run (`until_end`) known to be done: those it finished, and those
    /// the last assignment said were.
    #[serde(default)]
    pub finished: Vec<String>,
}

/// What the leader hands a member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskAssignment {
    pub slot: u32,
    pub tasks: Vec<String>,
    /// Tasks whose state this member keeps warm for another (standby replicas).
    #[serde(default)]
    pub standby: Vec<String>,
    /// Members in the generation.
    pub instances: u32,
    /// Tasks of a bounded run known to be done (no member runs them again).
    #[serde(default)]
    pub finished: Vec<String>,
    /// Every task of the bounded run is done: the instances stop.
    #[serde(default)]
    pub done: bool,
}

/// A task's name and the input partitions it reads.
pub(crate) type TaskInputs = BTreeMap<String, Vec<TopicPartition>>;

impl InstanceInfo {
    pub fn encode(&self, topics: Vec<String>) -> Vec<u8> {
        MemberSubscription {
            member_id: String::new(),
            topics,
            owned_partitions: Vec::new(),
            user_data: serde_json::to_vec(self).expect("plain data serializes"),
        }
        .encode()
    }

    fn decode(member_id: &str, bytes: &[u8]) -> Result<Self> {
        let sub = MemberSubscription::decode(member_id, bytes)?;
        serde_json::from_slice(&sub.user_data).map_err(|e| {
            EngineError::Config(format!(
                "member {member_id} of the application's group is not an instance of this \
                 application ({e}); give each application its own application id / job name"
            ))
        })
    }
}

impl TaskAssignment {
    fn encode(&self, inputs: &TaskInputs) -> Vec<u8> {
        let partitions: Vec<TopicPartition> = self
            .tasks
            .iter()
            .flat_map(|t| inputs.get(t).into_iter().flatten().cloned())
            .collect();
        let data = serde_json::to_vec(self).expect("plain data serializes");
        assignor::encode_assignment_with(&partitions, &data)
    }

    /// # Errors
    ///
    /// [`EngineError::Config`] when the bytes are not an assignment of this assignor.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (_, data) = assignor::decode_assignment_with(bytes)?;
        serde_json::from_slice(&data).map_err(|e| {
            EngineError::Config(format!(
                "the group's assignment is not a task assignment: {e}"
            ))
        })
    }
}

/// The leader's work: decodes the members' infos and assigns `inputs`' tasks over them,
/// with `standbys` standby replicas for each task that keeps state (`stateful`).
///
/// # Errors
///
/// [`EngineError::Config`] for a member that is not an instance of this application.
pub(crate) fn assign_members(
    inputs: &TaskInputs,
    (standbys, stateful): (usize, &dyn Fn(&str) -> bool),
    members: &[(String, Vec<u8>)],
) -> Result<Vec<(String, Vec<u8>)>> {
    let infos = members
        .iter()
        .map(|(id, bytes)| Ok((id.clone(), InstanceInfo::decode(id, bytes)?)))
        .collect::<Result<Vec<_>>>()?;
    let finished: BTreeSet<String> = (infos.iter())
        .flat_map(|(_, i)| i.finished.iter().cloned())
        .filter(|t| inputs.contains_key(t))
        .collect();
    // Finished tasks still run (a restarted writer tells its readers again that it ended,
    // which a reader that restarted past its first word needs), but decide the end.
    let tasks: Vec<String> = inputs.keys().cloned().collect();
    let done = !tasks.is_empty() && tasks.iter().all(|t| finished.contains(t));
    Ok(assign_tasks(&tasks, &infos, (standbys, stateful))
        .into_iter()
        .map(|(id, mut a)| {
            a.finished = finished.iter().cloned().collect();
            a.done = done;
            let bytes = a.encode(inputs);
            (id, bytes)
        })
        .collect())
}

/// See the module documentation; `standbys` replicas go to each task `stateful` says keeps
/// state. Members are taken in member id order whatever their order here; a member id that
/// repeats counts once.
pub(crate) fn assign_tasks(
    tasks: &[String],
    members: &[(String, InstanceInfo)],
    (standbys, stateful): (usize, &dyn Fn(&str) -> bool),
) -> BTreeMap<String, TaskAssignment> {
    let members: BTreeMap<&str, &InstanceInfo> = members
        .iter()
        .rev()
        .map(|(id, info)| (id.as_str(), info))
        .collect();
    let ids: Vec<&str> = members.keys().copied().collect();
    let m = ids.len();
    let mut out: BTreeMap<String, TaskAssignment> = BTreeMap::new();
    if m == 0 {
        return out;
    }
    let floor = tasks.len() / m;
    let mut ceil_left = tasks.len() % m;
    let valid: BTreeSet<&str> = tasks.iter().map(String::as_str).collect();
    let mut held: BTreeMap<&str, Vec<&str>> = ids.iter().map(|&id| (id, Vec::new())).collect();
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    // Room for one more: below the floor, or at it while a ceiling place is left.
    let room = |n: usize, ceil_left: usize| n < floor || (n == floor && ceil_left > 0);
    // Sticky, first up to the floor for everyone, then the ceiling places.
    let kept_first: BTreeMap<&str, Vec<&str>> = ids
        .iter()
        .map(|&id| (id, keep_order(members[id])))
        .collect();
    for pass in 0..2 {
        for &id in &ids {
            for &task in &kept_first[id] {
                let n = held[id].len();
                let fits = if pass == 0 {
                    n < floor
                } else {
                    room(n, ceil_left)
                };
                if valid.contains(task) && !owner.contains_key(task) && fits {
                    owner.insert(task, id);
                    let h = held.get_mut(id).expect("a member");
                    if h.len() == floor {
                        ceil_left -= 1;
                    }
                    h.push(task);
                }
            }
        }
    }
    for task in tasks {
        let task = task.as_str();
        if owner.contains_key(task) {
            continue;
        }
        let with_state = ids.iter().copied().find(|id| {
            members[id].checkpointed.iter().any(|t| t == task) && room(held[id].len(), ceil_left)
        });
        let st = sub_topology(task);
        let id = with_state.unwrap_or_else(|| {
            ids.iter()
                .copied()
                .filter(|id| room(held[id].len(), ceil_left))
                .min_by_key(|id| {
                    let same = held[id].iter().filter(|t| sub_topology(t) == st).count();
                    (held[id].len(), same)
                })
                .expect("the members' room adds up to the tasks")
        });
        owner.insert(task, id);
        let h = held.get_mut(id).expect("a member");
        if h.len() == floor {
            ceil_left -= 1;
        }
        h.push(task);
    }
    // Standbys: on members other than the task's, where its state is first, then spread.
    let mut standby: BTreeMap<&str, Vec<&str>> = ids.iter().map(|&id| (id, Vec::new())).collect();
    for task in tasks.iter().filter(|t| stateful(t)) {
        let task = task.as_str();
        for _ in 0..standbys {
            let pick = (ids.iter().copied())
                .filter(|&id| id != owner[task] && !standby[id].contains(&task))
                .min_by_key(|id| {
                    let has_state = members[id].checkpointed.iter().any(|t| t == task);
                    (!has_state, standby[id].len())
                });
            let Some(id) = pick else { break };
            standby.get_mut(id).expect("a member").push(task);
        }
    }
    // Slots: the previous one unless a member with a smaller id claims it too.
    let mut used = BTreeSet::new();
    let mut slot_of: BTreeMap<&str, u32> = BTreeMap::new();
    for &id in &ids {
        if let Some(s) = members[id].slot.filter(|s| !used.contains(s)) {
            used.insert(s);
            slot_of.insert(id, s);
        }
    }
    let mut free = (0u32..).filter(|s| !used.contains(s));
    for &id in &ids {
        let slot = match slot_of.get(id) {
            Some(&s) => s,
            None => free.next().expect("slots are unbounded"),
        };
        let mut tasks: Vec<String> = held[id].iter().map(|t| t.to_string()).collect();
        tasks.sort();
        out.insert(
            id.to_string(),
            TaskAssignment {
                slot,
                tasks,
                standby: standby[id].iter().map(|t| t.to_string()).collect(),
                instances: m as u32,
                ..Default::default()
            },
        );
    }
    out
}

/// The sub-topology of task `<sub-topology>_<partition>`.
fn sub_topology(task: &str) -> &str {
    task.split('_').next().unwrap_or("")
}

/// The order in which a member keeps the tasks it held when balance lets it keep only some:
/// one of each sub-topology in turn (so every member keeps a spread of the work, as
/// [`assign_tasks`] spreads new tasks), and within a turn those it has a checkpoint of first
/// (their state stays where it is).
fn keep_order(info: &InstanceInfo) -> Vec<&str> {
    let mut turns: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ranked: Vec<(usize, bool, &str)> = (info.owned.iter())
        .map(|t| {
            let turn = turns.entry(sub_topology(t)).or_default();
            *turn += 1;
            (*turn, !info.checkpointed.contains(t), t.as_str())
        })
        .collect();
    ranked.sort();
    ranked.into_iter().map(|(_, _, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every task keeps state.
    fn stateful(_: &str) -> bool {
        true
    }

    /// No standby replicas.
    const NONE: (usize, &dyn Fn(&str) -> bool) = (0, &stateful);

    fn names(sts: usize, parts: usize) -> Vec<String> {
        (0..sts)
            .flat_map(|s| (0..parts).map(move |p| format!("{s}_{p}")))
            .collect()
    }

    fn info(slot: Option<u32>, owned: &[&str], checkpointed: &[&str]) -> InstanceInfo {
        InstanceInfo {
            slot,
            owned: owned.iter().map(|s| s.to_string()).collect(),
            checkpointed: checkpointed.iter().map(|s| s.to_string()).collect(),
            finished: Vec::new(),
        }
    }

    #[test]
    fn a_new_member_takes_tasks_from_the_others_and_the_rest_stay() {
        let tasks = names(1, 6);
        let one = assign_tasks(&tasks, &[("a".into(), info(None, &[], &[]))], NONE);
        assert_eq!(one["a"].tasks.len(), 6);
        assert_eq!(one["a"].slot, 0);
        let owned: Vec<&str> = one["a"].tasks.iter().map(String::as_str).collect();
        let two = assign_tasks(
            &tasks,
            &[
                ("b".into(), info(None, &[], &["0_5"])),
                ("a".into(), info(Some(0), &owned, &[])),
            ],
            NONE,
        );
        assert_eq!(two["a"].tasks.len(), 3);
        assert_eq!(two["b"].tasks.len(), 3);
        assert_eq!((two["a"].slot, two["b"].slot), (0, 1));
        assert!(two["a"].tasks.iter().all(|t| one["a"].tasks.contains(t)));
        // a keeps what balance allows of what it held; b's checkpoint of 0_5 wins 0_5 over none.
        assert_eq!(two["a"].tasks, vec!["0_0", "0_1", "0_2"]);
    }

    #[test]
    fn a_dead_members_tasks_go_where_their_state_is_and_its_slot_is_reused() {
        let tasks = names(1, 4);
        let out = assign_tasks(
            &tasks,
            &[
                ("a".into(), info(Some(0), &["0_0", "0_1"], &[])),
                ("c".into(), info(None, &[], &["0_3"])),
            ],
            NONE,
        );
        assert_eq!(out["a"].tasks, vec!["0_0", "0_1"]);
        assert_eq!(out["c"].tasks, vec!["0_2", "0_3"]);
        assert_eq!(out["c"].slot, 1);
    }

    #[test]
    fn standbys_go_where_the_state_is_and_never_with_their_task() {
        let tasks = names(1, 2);
        let out = assign_tasks(
            &tasks,
            &[
                ("a".into(), info(Some(0), &["0_0"], &[])),
                ("b".into(), info(Some(1), &["0_1"], &[])),
                ("c".into(), info(None, &[], &["0_0"])),
            ],
            (1, &stateful),
        );
        assert_eq!(out["c"].standby, vec!["0_0"]);
        assert!(
            out.values()
                .all(|a| a.standby.iter().all(|t| !a.tasks.contains(t)))
        );
        let total: usize = out.values().map(|a| a.standby.len()).sum();
        assert_eq!(total, 2);
    }

    #[test]
    fn finished_tasks_are_handed_on_and_all_finished_is_done() {
        let inputs: TaskInputs = (0..4)
            .map(|p| (format!("0_{p}"), vec![TopicPartition::new("t", p)]))
            .collect();
        let mut a = info(None, &[], &[]);
        a.finished = vec!["0_0".into(), "0_1".into()];
        let b = info(None, &[], &[]);
        let members = vec![
            ("a".to_string(), a.encode(vec!["t".into()])),
            ("b".to_string(), b.encode(vec!["t".into()])),
        ];
        let out: BTreeMap<String, TaskAssignment> = assign_members(&inputs, NONE, &members)
            .unwrap()
            .into_iter()
            .map(|(id, bytes)| (id, TaskAssignment::decode(&bytes).unwrap()))
            .collect();
        let running: usize = out.values().map(|a| a.tasks.len()).sum();
        assert_eq!(running, 4);
        assert!(
            out.values()
                .all(|a| a.finished == ["0_0", "0_1"] && !a.done)
        );
        let mut b = info(None, &[], &[]);
        b.finished = vec!["0_2".into(), "0_3".into()];
        let mut a = info(None, &[], &[]);
        a.finished = out["a"].finished.clone();
        let members = vec![
            ("a".to_string(), a.encode(vec!["t".into()])),
            ("b".to_string(), b.encode(vec!["t".into()])),
        ];
        let done = assign_members(&inputs, NONE, &members).unwrap();
        assert!(
            done.iter()
                .all(|(_, bytes)| TaskAssignment::decode(bytes).unwrap().done)
        );
    }

    #[test]
    fn sub_topologies_spread_over_members() {
        let tasks = names(2, 2);
        let out = assign_tasks(
            &tasks,
            &[
                ("a".into(), info(None, &[], &[])),
                ("b".into(), info(None, &[], &[])),
            ],
            NONE,
        );
        for a in out.values() {
            let subs: BTreeSet<&str> = a.tasks.iter().map(|t| &t[..1]).collect();
            assert_eq!(subs.len(), 2, "{a:?}");
        }
    }

    #[test]
    fn a_member_keeps_a_spread_of_its_tasks_with_their_state() {
        let tasks = names(2, 4);
        let all: Vec<&str> = tasks.iter().map(String::as_str).collect();
        let out = assign_tasks(
            &tasks,
            &[
                (
                    "a".into(),
                    info(Some(0), &all, &["1_0", "1_1", "1_2", "1_3"]),
                ),
                ("b".into(), info(None, &[], &[])),
            ],
            NONE,
        );
        assert_eq!(out["a"].tasks, vec!["0_0", "0_1", "1_0", "1_1"]);
        assert_eq!(out["b"].tasks, vec!["0_2", "0_3", "1_2", "1_3"]);
    }

    #[test]
    fn only_tasks_with_state_get_standbys() {
        let tasks = names(2, 2);
        let out = assign_tasks(
            &tasks,
            &[
                ("a".into(), info(None, &[], &[])),
                ("b".into(), info(None, &[], &[])),
            ],
            (1, &|t: &str| t.starts_with("1_")),
        );
        let mut standbys: Vec<&String> = out.values().flat_map(|a| &a.standby).collect();
        standbys.sort();
        assert_eq!(standbys, ["1_0", "1_1"]);
    }

    #[test]
    fn assignments_round_trip_through_kafkas_consumer_protocol() {
        let inputs: TaskInputs = [
            ("0_0".to_string(), vec![TopicPartition::new("rides", 0)]),
            ("0_1".to_string(), vec![TopicPartition::new("rides", 1)]),
        ]
        .into();
        let a = TaskAssignment {
            slot: 3,
            tasks: vec!["0_1".into()],
            standby: vec!["0_0".into()],
            instances: 2,
            finished: vec!["1_0".into()],
            done: false,
        };
        let bytes = a.encode(&inputs);
        assert_eq!(
            assignor::decode_assignment(&bytes).unwrap(),
            vec![TopicPartition::new("rides", 1)]
        );
        assert_eq!(TaskAssignment::decode(&bytes).unwrap(), a);
        let i = info(Some(1), &["0_0"], &["0_1"]);
        let decoded = InstanceInfo::decode("m", &i.encode(vec!["rides".into()])).unwrap();
        assert_eq!(decoded, i);
    }

    proptest! {
        /// Every task once, balanced, distinct slots — whatever the members claim.
        #[test]
        fn every_task_once_balanced_distinct_slots(
            n in 0usize..40,
            claims in proptest::collection::vec(
                (proptest::option::of(0u32..6), proptest::collection::vec(0usize..50, 0..12)),
                1..7,
            ),
        ) {
            let tasks = names(1, n);
            let members: Vec<(String, InstanceInfo)> = claims
                .iter()
                .enumerate()
                .map(|(i, (slot, owned))| {
                    let owned: Vec<String> = owned.iter().map(|p| format!("0_{p}")).collect();
                    (format!("m{i}"), InstanceInfo { slot: *slot, checkpointed: owned.clone(), owned, finished: Vec::new() })
                })
                .collect();
            let out = assign_tasks(&tasks, &members, (1, &stateful));
            let mut all: Vec<&String> = out.values().flat_map(|a| &a.tasks).collect();
            all.sort();
            let expected: Vec<&String> = { let mut t: Vec<&String> = tasks.iter().collect(); t.sort(); t };
            prop_assert_eq!(all, expected);
            let floor = n / members.len();
            for a in out.values() {
                prop_assert!(a.tasks.len() == floor || a.tasks.len() == floor + 1);
            }
            let slots: BTreeSet<u32> = out.values().map(|a| a.slot).collect();
            prop_assert_eq!(slots.len(), out.len());
            // A standby never sits with its task, and each task has one when another member exists.
            for a in out.values() {
                prop_assert!(a.standby.iter().all(|t| !a.tasks.contains(t)));
            }
            let standbys: usize = out.values().map(|a| a.standby.len()).sum();
            let expected = if members.len() > 1 { n } else { 0 };
            prop_assert_eq!(standbys, expected);
        }
    }
}
