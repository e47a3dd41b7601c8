//! The consumer-group coordinator: membership, generations, rebalances and committed offsets.
//!
//! It follows Kafka's group protocol so the wire broker can expose it unchanged and a group can
//! mix in-process and remote members: a member joins ([`GroupCoordinator::join_group`]); once
//! every known member has (re)joined, or the rebalance timeout has passed (stragglers are
//! removed), the generation increments and one member is chosen leader; the leader computes the
//! assignment client-side and sends it in [`GroupCoordinator::sync_group`]; members learn of a
//! new rebalance from [`GroupCoordinator::heartbeat`] returning `RebalanceInProgress`.
//! Members that stop heartbeating for `session_timeout` are removed by
//! [`GroupCoordinator::expire_sessions`], which the log's background thread calls.
//!
//! Committed offsets are appended to the compacted topic `__consumer_offsets` in Kafka's
//! record format (key v1: group, topic, partition; value v3: offset, leader epoch, metadata,
//! commit time) before they are acknowledged, and are reloaded from it on open.
//! A commit is accepted from the current generation's members, or from anyone (generation -1)
//! while the group has no members, as Kafka does for standalone consumers and admin tools.

use crate::batch::{self, BatchBuilder};
use crate::error::{GroupErrorKind, LogError, Result};
use crate::partition::Partition;
use crate::txn::marker::{self, Outcome};
use crate::types::{TopicPartition, now_ms};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Kafka's group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl std::fmt::Display for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        })
    }
}

/// A JoinGroup request.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group: String,
    /// Empty for a new member; the coordinator assigns one.
    pub member_id: String,
    pub client_id: String,
    pub protocol_type: String,
    /// (assignor name, subscription metadata), in order of preference.
    pub protocols: Vec<(String, Vec<u8>)>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
}

/// A JoinGroup response.
#[derive(Debug, Clone)]
pub struct JoinResponse {
    pub generation: i32,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// Every member's metadata for the chosen protocol; empty unless this member is the leader.
    pub members: Vec<(String, Vec<u8>)>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: u64,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// What `describe` shows of a group.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// (member id, client id, assignment bytes)
    pub members: Vec<(String, String, Vec<u8>)>,
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

#[derive(Debug)]
struct Member {
    client_id: String,
    protocols: Vec<(String, Vec<u8>)>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    last_heartbeat: Instant,
    joined: bool,
    join_response: Option<JoinResponse>,
    assignment: Vec<u8>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    rebalance_deadline: Option<Instant>,
    changed: watch::Sender<u64>,
}

impl Group {
    fn new() -> Self {
        Self {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            rebalance_deadline: None,
            changed: watch::channel(0).0,
        }
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Moves to PreparingRebalance: every member must rejoin before the deadline.
    fn start_rebalance(&mut self) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(Instant::now() + timeout);
        // A join response not yet picked up stays: like a response already on the wire in
        // Kafka, it is delivered, and that member's sync then learns of this new rebalance.
        for m in self.members.values_mut() {
            m.joined = false;
        }
        self.notify();
    }

    /// Completes the join phase once all members rejoined or the deadline passed.
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.joined);
        let timed_out = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !all_joined && !timed_out {
            return;
        }
        self.members.retain(|_, m| m.joined);
        self.generation += 1;
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            self.notify();
            return;
        }
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().expect("non-empty").clone(),
        };
        let protocol = self.members[&leader]
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
            .unwrap_or_default();
        let all: Vec<(String, Vec<u8>)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(p, _)| *p == protocol)
                    .map(|(_, d)| d.clone());
                (id.clone(), meta.unwrap_or_default())
            })
            .collect();
        for (id, m) in self.members.iter_mut() {
            m.last_heartbeat = now;
            m.assignment.clear();
            m.join_response = Some(JoinResponse {
                generation: self.generation,
                protocol: protocol.clone(),
                leader: leader.clone(),
                member_id: id.clone(),
                members: if *id == leader {
                    all.clone()
                } else {
                    Vec::new()
                },
            });
        }
        self.protocol = Some(protocol);
        self.leader = Some(leader);
        self.state = GroupState::CompletingRebalance;
        self.notify();
    }

    fn remove_member(&mut self, member: &str) {
        if self.members.remove(member).is_none() {
            return;
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.generation += 1;
            self.protocol = None;
            self.leader = None;
            self.rebalance_deadline = None;
            self.notify();
        } else {
            self.start_rebalance();
            self.maybe_complete_join(Instant::now());
        }
    }

    fn check_member(&self, group: &str, member: &str, generation: i32) -> Result<&Member> {
        let m = self
            .members
            .get(member)
            .ok_or_else(|| LogError::group(group, GroupErrorKind::UnknownMember))?;
        if generation != self.generation {
            return Err(LogError::group(group, GroupErrorKind::IllegalGeneration));
        }
        Ok(m)
    }
}

#[derive(Default)]
struct State {
    groups: HashMap<String, Group>,
    committed: BTreeMap<(String, TopicPartition), CommittedOffset>,
    /// Offsets committed inside open transactions, by producer id: they become committed
    /// offsets at the transaction's commit marker and are dropped at its abort.
    pending: HashMap<i64, Vec<PendingOffset>>,
}

type PendingOffset = ((String, TopicPartition), Option<CommittedOffset>);

impl State {
    /// The group, or `UnknownMember` (a member cannot be in a group that does not exist).
    fn group_mut(&mut self, group_id: &str) -> Result<&mut Group> {
        self.groups
            .get_mut(group_id)
            .ok_or_else(|| LogError::group(group_id, GroupErrorKind::UnknownMember))
    }
}

/// See the module documentation.
pub struct GroupCoordinator {
    offsets_topic: Arc<Partition>,
    state: Mutex<State>,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCoordinator")
    }
}

impl GroupCoordinator {
    /// Loads committed offsets from the offsets topic.
    /// Offsets written by transactions count from their commit marker; those of transactions
    /// still open stay pending until the transaction coordinator ends them.
    ///
    /// # Errors
    ///
    /// [`LogError::Corrupt`] / [`LogError::Io`] reading the offsets topic;
    /// [`LogError::InvalidBatch`] for a record whose key or value cannot be decoded.
    pub fn load(offsets_topic: Arc<Partition>) -> Result<Self> {
        let mut committed = BTreeMap::new();
        let mut pending: HashMap<i64, Vec<PendingOffset>> = HashMap::new();
        offsets_topic.scan_batches(offsets_topic.log_start_offset(), u64::MAX, |b| {
            let h = batch::parse_header(b)?;
            if h.is_control() {
                if let Some(m) = marker::decode(b)? {
                    let txn = pending.remove(&h.producer_id).unwrap_or_default();
                    if m.outcome == Outcome::Commit {
                        apply(&mut committed, txn);
                    }
                }
                return Ok(ControlFlow::<()>::Continue(()));
            }
            let mut records = Vec::new();
            for r in batch::records(b)? {
                let Some(key) = r.key else { continue };
                let value = r.value.as_ref().map(decode_value).transpose()?;
                records.push((decode_key(&key)?, value));
            }
            if h.is_transactional() {
                pending.entry(h.producer_id).or_default().extend(records);
            } else {
                apply(&mut committed, records);
            }
            Ok(ControlFlow::<()>::Continue(()))
        })?;
        Ok(Self {
            offsets_topic,
            state: Mutex::new(State {
                groups: HashMap::new(),
                committed,
                pending,
            }),
        })
    }

    /// Joins (or rejoins) a group and waits until the join phase completes.
    ///
    /// # Errors
    ///
    /// [`LogError::Group`] with `InconsistentProtocol` when the member's protocols share none
    /// with the group's, `UnknownMember` for a member id the group does not know.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped while waiting, the member stays registered and
    /// is removed when its session expires (or by [`leave_group`](Self::leave_group)).
    pub async fn join_group(&self, req: JoinRequest) -> Result<JoinResponse> {
        let (member_id, mut changed) = {
            let mut st = self.state.lock();
            let group = st
                .groups
                .entry(req.group.clone())
                .or_insert_with(Group::new);
            if let Some(pt) = &group.protocol_type {
                let common = req.protocols.iter().any(|(p, _)| {
                    group
                        .members
                        .values()
                        .all(|m| m.protocols.iter().any(|(q, _)| q == p))
                });
                if (pt != &req.protocol_type || !common) && !group.members.is_empty() {
                    return Err(LogError::group(
                        &req.group,
                        GroupErrorKind::InconsistentProtocol,
                    ));
                }
            }
            let member_id = if req.member_id.is_empty() {
                format!("{}-{:016x}", req.client_id, rand::random::<u64>())
            } else if group.members.contains_key(&req.member_id) {
                req.member_id.clone()
            } else {
                return Err(LogError::group(&req.group, GroupErrorKind::UnknownMember));
            };
            group.protocol_type = Some(req.protocol_type.clone());
            group.start_rebalance();
            let now = Instant::now();
            group.members.insert(
                member_id.clone(),
                Member {
                    client_id: req.client_id.clone(),
                    protocols: req.protocols.clone(),
                    session_timeout: req.session_timeout,
                    rebalance_timeout: req.rebalance_timeout,
                    last_heartbeat: now,
                    joined: true,
                    join_response: None,
                    assignment: Vec::new(),
                },
            );
            let deadline = now + req.rebalance_timeout;
            if group.rebalance_deadline.is_none_or(|d| d < deadline) {
                group.rebalance_deadline = Some(deadline);
            }
            group.maybe_complete_join(now);
            (member_id, group.changed.subscribe())
        };
        loop {
            let deadline = {
                let mut st = self.state.lock();
                let group = st
                    .groups
                    .get_mut(&req.group)
                    .expect("group exists while joining");
                group.maybe_complete_join(Instant::now());
                let Some(m) = group.members.get_mut(&member_id) else {
                    return Err(LogError::group(&req.group, GroupErrorKind::UnknownMember));
                };
                if let Some(resp) = m.join_response.take() {
                    return Ok(resp);
                }
                group.rebalance_deadline
            };
            let wait = deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(100))
                .max(Duration::from_millis(1));
            let _ = tokio::time::timeout(wait, changed.changed()).await;
        }
    }

    /// Sends (leader) or waits for (follower) the assignment of the current generation and
    /// returns this member's share.
    ///
    /// # Errors
    ///
    /// [`LogError::Group`] with `UnknownMember` / `IllegalGeneration` for a member or
    /// generation that is not current, `RebalanceInProgress` when a new join began meanwhile.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops waiting; nothing is half-applied.
    pub async fn sync_group(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<u8>> {
        let mut changed = {
            let mut st = self.state.lock();
            let group = st.group_mut(group_id)?;
            group.check_member(group_id, member_id, generation)?;
            if group.state == GroupState::PreparingRebalance {
                return Err(LogError::group(
                    group_id,
                    GroupErrorKind::RebalanceInProgress,
                ));
            }
            if group.state == GroupState::CompletingRebalance
                && group.leader.as_deref() == Some(member_id)
            {
                for (id, a) in assignments {
                    if let Some(m) = group.members.get_mut(&id) {
                        m.assignment = a;
                    }
                }
                group.state = GroupState::Stable;
                group.notify();
            }
            group.changed.subscribe()
        };
        loop {
            {
                let mut st = self.state.lock();
                let group = st.group_mut(group_id)?;
                let m = group.check_member(group_id, member_id, generation)?;
                match group.state {
                    GroupState::Stable => return Ok(m.assignment.clone()),
                    GroupState::CompletingRebalance => {}
                    _ => {
                        return Err(LogError::group(
                            group_id,
                            GroupErrorKind::RebalanceInProgress,
                        ));
                    }
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), changed.changed()).await;
        }
    }

    /// Keeps a member's session alive.
    ///
    /// # Errors
    ///
    /// [`LogError::Group`]: `RebalanceInProgress` tells the member to rejoin;
    /// `UnknownMember` / `IllegalGeneration` that it was removed (its session expired).
    pub fn heartbeat(&self, group_id: &str, member_id: &str, generation: i32) -> Result<()> {
        let mut st = self.state.lock();
        let group = st.group_mut(group_id)?;
        group.check_member(group_id, member_id, generation)?;
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat = Instant::now();
        }
        match group.state {
            GroupState::PreparingRebalance => Err(LogError::group(
                group_id,
                GroupErrorKind::RebalanceInProgress,
            )),
            _ => Ok(()),
        }
    }

    /// Removes a member now (instead of waiting for its session to expire).
    pub fn leave_group(&self, group_id: &str, member_id: &str) {
        let mut st = self.state.lock();
        if let Some(group) = st.groups.get_mut(group_id) {
            group.remove_member(member_id);
        }
    }

    /// Removes members whose session expired and completes joins whose deadline passed.
    pub fn expire_sessions(&self) {
        let now = Instant::now();
        let mut st = self.state.lock();
        for group in st.groups.values_mut() {
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| !m.joined || group.state != GroupState::PreparingRebalance)
                .filter(|(_, m)| now.duration_since(m.last_heartbeat) > m.session_timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::info!(member = %id, "consumer group session expired");
                group.remove_member(&id);
            }
            group.maybe_complete_join(now);
        }
    }

    /// Commits offsets durably. `member` is `None` (with generation -1) for a consumer outside
    /// group management, which is only allowed while the group has no members. Blocking.
    ///
    /// # Errors
    ///
    /// - [`LogError::Group`]: `UnknownMember` / `IllegalGeneration` for a member not in the
    ///   current generation (or `None` while the group has members), `RebalanceInProgress`
    ///   during a rebalance. Nothing is committed then.
    /// - [`LogError::Storage`] when the offsets topic cannot be written.
    pub fn commit_offsets(
        &self,
        group_id: &str,
        member: Option<(&str, i32)>,
        offsets: &[(TopicPartition, u64, String)],
    ) -> Result<()> {
        {
            let st = self.state.lock();
            if let Some(group) = st.groups.get(group_id).filter(|g| !g.members.is_empty()) {
                let Some((member_id, generation)) = member else {
                    return Err(LogError::group(group_id, GroupErrorKind::UnknownMember));
                };
                group.check_member(group_id, member_id, generation)?;
                if group.state == GroupState::CompletingRebalance {
                    return Err(LogError::group(
                        group_id,
                        GroupErrorKind::RebalanceInProgress,
                    ));
                }
            }
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        self.offsets_topic
            .append(offsets_batch(group_id, offsets, now).finish())?;
        let mut st = self.state.lock();
        for (tp, offset, metadata) in offsets {
            st.committed.insert(
                (group_id.to_string(), tp.clone()),
                CommittedOffset {
                    offset: *offset,
                    metadata: metadata.clone(),
                    commit_timestamp: now,
                },
            );
        }
        Ok(())
    }

    /// Writes offsets as part of `producer_id`'s transaction (Kafka's TxnOffsetCommit): they
    /// are stored now, in a transactional batch of the offsets topic, and become the group's
    /// committed offsets when the transaction commits ([`complete_transaction`]). `member`
    /// is checked as for [`commit_offsets`](Self::commit_offsets) when given. Blocking.
    ///
    /// [`complete_transaction`]: Self::complete_transaction
    ///
    /// # Errors
    ///
    /// As [`commit_offsets`](Self::commit_offsets).
    pub fn txn_commit_offsets(
        &self,
        group_id: &str,
        producer_id: i64,
        epoch: i16,
        member: Option<(&str, i32)>,
        offsets: &[(TopicPartition, u64, String)],
    ) -> Result<()> {
        if let Some((member_id, generation)) = member.filter(|(m, _)| !m.is_empty()) {
            let st = self.state.lock();
            if let Some(group) = st.groups.get(group_id).filter(|g| !g.members.is_empty()) {
                group.check_member(group_id, member_id, generation)?;
            }
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        // No sequence: the coordinator writes this batch, not the producer.
        let bytes =
            offsets_batch(group_id, offsets, now).finish_transactional(producer_id, epoch, -1);
        self.offsets_topic
            .append_from_producer(vec![bytes], false)
            .pop()
            .expect("one result per batch")?;
        let mut st = self.state.lock();
        let txn = st.pending.entry(producer_id).or_default();
        for (tp, offset, metadata) in offsets {
            txn.push((
                (group_id.to_string(), tp.clone()),
                Some(CommittedOffset {
                    offset: *offset,
                    metadata: metadata.clone(),
                    commit_timestamp: now,
                }),
            ));
        }
        Ok(())
    }

    /// Makes `producer_id`'s pending transactional offsets committed (or drops them), after
    /// the transaction coordinator wrote its marker into the offsets topic.
    pub fn complete_transaction(&self, producer_id: i64, outcome: Outcome) {
        let mut st = self.state.lock();
        let txn = st.pending.remove(&producer_id).unwrap_or_default();
        if outcome == Outcome::Commit {
            apply(&mut st.committed, txn);
        }
    }

    /// The partition of the offsets topic that holds `group`'s offsets (there is one).
    pub fn offsets_partition(&self, _group: &str) -> TopicPartition {
        TopicPartition::new(&*self.offsets_topic.topic, self.offsets_topic.id)
    }

    pub fn committed(&self, group_id: &str, tp: &TopicPartition) -> Option<CommittedOffset> {
        self.state
            .lock()
            .committed
            .get(&(group_id.to_string(), tp.clone()))
            .cloned()
    }

    /// Every group that has members or committed offsets, with its state.
    pub fn list_groups(&self) -> Vec<(String, GroupState)> {
        let st = self.state.lock();
        let mut out: BTreeMap<String, GroupState> = st
            .committed
            .keys()
            .map(|(g, _)| (g.clone(), GroupState::Empty))
            .collect();
        for (name, g) in &st.groups {
            if !g.members.is_empty() || out.contains_key(name) {
                out.insert(name.clone(), g.state);
            }
        }
        out.into_iter().collect()
    }

    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        let st = self.state.lock();
        let offsets = st
            .committed
            .iter()
            .filter(|((g, _), _)| g == group_id)
            .map(|((_, tp), c)| (tp.clone(), c.clone()))
            .collect();
        match st.groups.get(group_id) {
            Some(g) => GroupDescription {
                group: group_id.to_string(),
                state: g.state,
                generation: g.generation,
                protocol: g.protocol.clone(),
                leader: g.leader.clone(),
                members: g
                    .members
                    .iter()
                    .map(|(id, m)| (id.clone(), m.client_id.clone(), m.assignment.clone()))
                    .collect(),
                offsets,
            },
            None => GroupDescription {
                group: group_id.to_string(),
                state: GroupState::Empty,
                generation: 0,
                protocol: None,
                leader: None,
                members: Vec::new(),
                offsets,
            },
        }
    }

    /// Drops every committed offset of a deleted topic (tombstones in the offsets topic).
    ///
    /// # Errors
    ///
    /// [`LogError::Storage`] when the tombstones cannot be written; the offsets stay then.
    pub fn forget_topic(&self, topic: &str) -> Result<()> {
        let keys: Vec<(String, TopicPartition)> = self
            .state
            .lock()
            .committed
            .keys()
            .filter(|(_, tp)| tp.topic == topic)
            .cloned()
            .collect();
        self.drop_committed(keys)
    }

    /// Drops the committed offsets of `group_id` on `partitions` (Kafka's OffsetDelete; the
    /// caller checks that no live member reads them).
    ///
    /// # Errors
    ///
    /// [`LogError::Storage`] when the tombstones cannot be written; the offsets stay then.
    pub fn delete_offsets(&self, group_id: &str, partitions: &[TopicPartition]) -> Result<()> {
        let keys = partitions
            .iter()
            .map(|tp| (group_id.to_string(), tp.clone()))
            .collect();
        self.drop_committed(keys)
    }

    /// Writes a tombstone per (group, partition) to the offsets topic, then forgets them.
    fn drop_committed(&self, keys: Vec<(String, TopicPartition)>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut b = BatchBuilder::new(keys.len() * 64);
        for (g, tp) in &keys {
            b.push(now_ms(), Some(&encode_key(g, tp)), None, &[]);
        }
        self.offsets_topic.append(b.finish())?;
        let mut st = self.state.lock();
        for k in keys {
            st.committed.remove(&k);
        }
        Ok(())
    }
}

/// The offset-commit records of `offsets` for `group_id`, in Kafka's format.
fn offsets_batch(
    group_id: &str,
    offsets: &[(TopicPartition, u64, String)],
    now: i64,
) -> BatchBuilder {
    let mut b = BatchBuilder::new(offsets.len() * 64);
    for (tp, offset, metadata) in offsets {
        b.push(
            now,
            Some(&encode_key(group_id, tp)),
            Some(&encode_value(*offset, metadata, now)),
            &[],
        );
    }
    b
}

/// Applies offset records in order: a value commits, a tombstone deletes.
fn apply(
    committed: &mut BTreeMap<(String, TopicPartition), CommittedOffset>,
    records: Vec<PendingOffset>,
) {
    for (key, value) in records {
        match value {
            Some(v) => {
                committed.insert(key, v);
            }
            None => {
                committed.remove(&key);
            }
        }
    }
}

// ---- Kafka's __consumer_offsets record format ----

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as i16).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn encode_key(group: &str, tp: &TopicPartition) -> Vec<u8> {
    let mut b = Vec::with_capacity(group.len() + tp.topic.len() + 10);
    b.extend_from_slice(&1i16.to_be_bytes());
    put_str(&mut b, group);
    put_str(&mut b, &tp.topic);
    b.extend_from_slice(&(tp.partition as i32).to_be_bytes());
    b
}

fn encode_value(offset: u64, metadata: &str, ts: i64) -> Vec<u8> {
    let mut b = Vec::with_capacity(metadata.len() + 26);
    b.extend_from_slice(&3i16.to_be_bytes());
    b.extend_from_slice(&(offset as i64).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    put_str(&mut b, metadata);
    b.extend_from_slice(&ts.to_be_bytes());
    b
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let s = self.b.get(self.pos..self.pos + n).ok_or_else(|| {
            LogError::Protocol(format!("offsets record cut short at byte {}", self.pos))
        })?;
        self.pos += n;
        Ok(s)
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.i16()?.max(0) as usize;
        let at = self.pos;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| {
            LogError::Protocol(format!("offsets record: string at byte {at} is not UTF-8"))
        })
    }
}

fn decode_key(b: &Bytes) -> Result<(String, TopicPartition)> {
    let mut c = Cursor { b, pos: 0 };
    let version = c.i16()?;
    if !(0..=1).contains(&version) {
        return Err(LogError::Protocol(format!(
            "offsets key version {version} is not an offset commit"
        )));
    }
    let group = c.string()?;
    let topic = c.string()?;
    let partition = c.i32()?;
    Ok((group, TopicPartition::new(topic, partition.max(0) as u32)))
}

fn decode_value(b: &Bytes) -> Result<CommittedOffset> {
    let mut c = Cursor { b, pos: 0 };
    let version = c.i16()?;
    let offset = c.i64()?.max(0) as u64;
    if version >= 3 {
        c.i32()?;
    }
    let metadata = c.string()?;
    let commit_timestamp = c.i64()?;
    Ok(CommittedOffset {
        offset,
        metadata,
        commit_timestamp,
    })
}
