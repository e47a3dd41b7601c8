//! The remote consumer: manual assignment or Kafka group membership, long-poll fetches.
//!
//! Contract (as `runnel_log::Consumer`'s):
//! - `poll` returns records in offset order per partition, each once per position; it waits on
//!   the broker (Fetch `max_wait_ms`), not by spinning, until records arrive or the timeout passes.
//! - With a group and `subscribe`, partitions come from the group: JoinGroup, then the leader
//!   computes the assignment with `runnel_log::assignor` and SyncGroup hands it out. A heartbeat
//!   task flags a rebalance; the next `poll` commits its positions (auto-commit), rejoins and
//!   resumes every assigned partition from its committed offset.
//! - Without a committed offset (or below the log start), `auto_offset_reset` decides.
//! - Group errors come back as `LogError::Group` with the same kinds as in-process.
//! - Fetch and ListOffsets go to each partition's leader (one Fetch per leader, concurrently),
//!   group requests to the coordinator. A lost connection or a retriable error inside `poll`
//!   is retried with backoff (reconnecting, refreshing metadata) until `poll`'s timeout, which
//!   then returns no records: as Kafka's consumer, `poll` rides out a broker restart.
//! - Each batch's CRC is checked before its records are returned (Kafka's `check.crcs`; the
//!   broker sends batches from its files unchecked): the records before a bad batch are
//!   returned, then `poll` fails naming the partition and the batch's offset, and fails again
//!   while the position stays there.

use super::cluster::{Backoff, Cluster, retriable, stale_route};
use super::conn::{Connection, kafka_error};
use super::member::{self, Membership, heartbeat, join_once, members_of, sync_once};
use super::{committed, list_offsets, metadata, str_bytes};
use crate::codes;
use crate::error::BrokerError;
use async_trait::async_trait;
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use parking_lot::Mutex;
use runnel_log::assignor::{self, MemberSubscription};
use runnel_log::batch;
use runnel_log::error::GroupErrorKind;
use runnel_log::txn::index::AbortedTxn;
use runnel_log::{
    AssignmentStrategy, ConsumerConfig, GroupMetadata, IsolationLevel, LogConsumer, LogError,
    OffsetReset, RecordRun, TopicPartition,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest one Fetch waits on the broker, so that a rebalance is noticed within it.
const MAX_FETCH_WAIT: Duration = Duration::from_millis(500);
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

/// See the module documentation.
pub struct RemoteConsumer {
    config: ConsumerConfig,
    /// Leaders, for Fetch and ListOffsets.
    fetch: Cluster,
    /// The coordinator, for group requests (JoinGroup waits there; fetches must not).
    coordinator: Cluster,
    backoff: Backoff,
    subscription: Option<Vec<String>>,
    assignment: Vec<TopicPartition>,
    positions: HashMap<TopicPartition, u64>,
    to_beginning: HashSet<TopicPartition>,
    member: Arc<Mutex<Membership>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    last_commit: Instant,
    topic_names: HashMap<String, Arc<str>>,
    /// In a mutex only so that the consumer stays `Sync` (the answers' futures are not).
    prefetch: Mutex<Option<Prefetch>>,
    /// A batch that failed its check after records before it were taken: those records are
    /// returned first, and this error by the next poll (as Kafka's consumer does).
    corrupt: Option<BrokerError>,
}

/// A Fetch's answer still to come.
type FetchAnswer = Pin<Box<dyn Future<Output = Result<FetchResponse, BrokerError>> + Send>>;

/// Fetches sent ahead, as soon as an answer came and before its records were decoded, so that
/// the broker reads and sends the next batches while this side decodes and the caller works
/// (Kafka's consumer does the same). Used only by a fetch from exactly the same positions: a
/// seek, a reset or a rebalance in between makes it stale, and it is dropped unread.
struct Prefetch {
    from: Vec<(TopicPartition, u64)>,
    answers: Vec<FetchAnswer>,
}

/// The leading batches of `batches` whose base offsets are below `offset` (zero-copy).
fn batches_before(batches: &Bytes, offset: u64) -> Bytes {
    let len: usize = batch::split_batches(batches)
        .take_while(|b| batch::parse_header(b).is_ok_and(|h| h.base_offset < offset))
        .map(|b| b.len())
        .sum();
    batches.slice(..len)
}

/// The positions after the records of `responses`, when they hold any and no error: each
/// partition's offset after its last batch, read off the batch headers only.
fn positions_after(
    from: &[(TopicPartition, u64)],
    responses: &[FetchResponse],
) -> Option<Vec<(TopicPartition, u64)>> {
    let mut next: HashMap<(&str, u32), u64> = HashMap::new();
    for t in responses.iter().flat_map(|r| &r.responses) {
        for p in &t.partitions {
            if p.error_code != 0 {
                return None;
            }
            let last = p
                .records
                .as_ref()
                .and_then(|r| batch::split_batches(r).last())
                .and_then(|b| batch::parse_header(&b).ok());
            if let Some(h) = last {
                next.insert(
                    (t.topic.0.as_str(), p.partition_index as u32),
                    h.next_offset(),
                );
            }
        }
    }
    if next.is_empty() {
        return None;
    }
    Some(
        from.iter()
            .map(|(tp, o)| {
                let after = next.get(&(tp.topic.as_str(), tp.partition)).copied();
                (tp.clone(), after.map_or(*o, |n| n.max(*o)))
            })
            .collect(),
    )
}

impl Drop for RemoteConsumer {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

impl RemoteConsumer {
    pub fn new(bootstrap: super::Bootstrap, config: ConsumerConfig) -> Self {
        Self {
            fetch: Cluster::new(&bootstrap),
            coordinator: Cluster::new(&bootstrap),
            backoff: Backoff::default(),
            config,
            subscription: None,
            assignment: Vec::new(),
            positions: HashMap::new(),
            to_beginning: HashSet::new(),
            member: Arc::default(),
            heartbeat: None,
            last_commit: Instant::now(),
            topic_names: HashMap::new(),
            prefetch: Mutex::new(None),
            corrupt: None,
        }
    }

    fn group(&self) -> Option<&str> {
        self.config.group_id.as_deref()
    }

    async fn group_conn(&self) -> Result<Arc<Connection>, BrokerError> {
        let group = self.group().unwrap_or_default();
        self.coordinator.coordinator(group).await
    }

    fn needs_join(&self) -> bool {
        let m = self.member.lock();
        self.subscription.is_some() && (!m.joined || m.rejoin)
    }

    /// Joins (or rejoins) the group and takes the new assignment.
    async fn join(&mut self) -> Result<(), BrokerError> {
        let group = self
            .group()
            .expect("subscribe checked the group")
            .to_string();
        let topics = self.subscription.clone().unwrap_or_default();
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let conn = self.group_conn().await?;
        let subscription = MemberSubscription {
            member_id: String::new(),
            topics: topics.clone(),
            owned_partitions: self.assignment.clone(),
            user_data: Vec::new(),
        }
        .encode();
        let protocols: Vec<(String, Vec<u8>)> = (self.config.assignment_strategies.iter())
            .map(|s| (s.name().to_string(), subscription.clone()))
            .collect();
        let assignment = loop {
            let Some(joined) =
                join_once(&conn, &group, &self.member, &self.config, &protocols).await?
            else {
                continue;
            };
            let assignments = if joined.leader == joined.member_id {
                let protocol = joined.protocol_name.as_ref().map_or("", |p| p.as_str());
                self.leader_assignment(protocol, &members_of(&joined))
                    .await?
            } else {
                Vec::new()
            };
            if let Some(bytes) =
                sync_once(&conn, &group, &self.member, &joined, assignments).await?
            {
                break assignor::decode_assignment(&bytes)?;
            }
        };
        tracing::debug!(group = %group, partitions = assignment.len(), "joined group");
        // Every partition resumes from its committed offset after a rebalance.
        self.positions.clear();
        self.assignment = assignment;
        {
            let mut m = self.member.lock();
            m.joined = true;
            m.rejoin = false;
        }
        self.heartbeat = Some(tokio::spawn(heartbeat(
            conn,
            group,
            self.member.clone(),
            self.config.heartbeat_interval,
            None,
        )));
        Ok(())
    }

    /// The leader's assignment, computed with the protocol the coordinator chose.
    async fn leader_assignment(
        &self,
        protocol: &str,
        members: &[(String, Vec<u8>)],
    ) -> Result<Vec<(String, Vec<u8>)>, BrokerError> {
        let strategy: AssignmentStrategy = protocol
            .parse()
            .map_err(|e: String| LogError::Protocol(e))?;
        let subs = members
            .iter()
            .map(|(id, meta)| MemberSubscription::decode(id, meta))
            .collect::<Result<Vec<_>, _>>()?;
        let mut topics: Vec<String> = subs.iter().flat_map(|s| s.topics.clone()).collect();
        topics.sort();
        topics.dedup();
        let counts: BTreeMap<String, u32> = metadata(&self.fetch, &topics)
            .await?
            .into_iter()
            .filter_map(|(t, c)| c.map(|c| (t, c)))
            .collect();
        Ok(assignor::assign(strategy, &subs, &counts)
            .into_iter()
            .map(|(member, parts)| (member, assignor::encode_assignment(&parts)))
            .collect())
    }

    /// Positions for assigned partitions that have none: committed offset, else the reset policy.
    async fn init_positions(&mut self) -> Result<(), BrokerError> {
        let missing: Vec<TopicPartition> = self
            .assignment
            .iter()
            .filter(|tp| !self.positions.contains_key(*tp))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let (earliest, rest): (Vec<_>, Vec<_>) = missing
            .into_iter()
            .partition(|tp| self.to_beginning.contains(tp));
        let mut unresolved = Vec::new();
        match self.group() {
            Some(g) if !rest.is_empty() => {
                for (tp, c) in rest
                    .iter()
                    .zip(committed(&self.coordinator, g, &rest).await?)
                {
                    match c {
                        Some(offset) => {
                            self.positions.insert(tp.clone(), offset);
                        }
                        None => unresolved.push(tp.clone()),
                    }
                }
            }
            _ => unresolved = rest,
        }
        self.reset(&unresolved).await?;
        if !earliest.is_empty() {
            for (tp, o) in earliest
                .iter()
                .zip(list_offsets(&self.fetch, &earliest, EARLIEST).await?)
            {
                self.positions.insert(tp.clone(), o);
                self.to_beginning.remove(tp);
            }
        }
        Ok(())
    }

    /// Applies `auto_offset_reset` to `partitions`.
    async fn reset(&mut self, partitions: &[TopicPartition]) -> Result<(), BrokerError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let at = match self.config.auto_offset_reset {
            OffsetReset::Earliest => EARLIEST,
            OffsetReset::Latest => LATEST,
            OffsetReset::None => {
                let tp = &partitions[0];
                return Err(BrokerError::Log(LogError::NoOffset {
                    group: self.group().unwrap_or_default().to_string(),
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                }));
            }
        };
        for (tp, o) in partitions
            .iter()
            .zip(list_offsets(&self.fetch, partitions, at).await?)
        {
            self.positions.insert(tp.clone(), o);
        }
        Ok(())
    }

    /// The records of the assigned partitions at their positions: the answers of the fetch
    /// sent ahead by the previous call when it asked from these positions, else of one Fetch
    /// per leader sent now. Before decoding, asks for what follows (see [`Prefetch`]).
    async fn fetch(&mut self, wait: Duration) -> Result<Vec<RecordRun>, BrokerError> {
        if let Some(e) = self.corrupt.take() {
            return Err(e);
        }
        let from: Vec<(TopicPartition, u64)> = self
            .assignment
            .iter()
            .filter_map(|tp| self.positions.get(tp).map(|&p| (tp.clone(), p)))
            .collect();
        let prefetched = self.prefetch.lock().take();
        let answers = match prefetched {
            Some(p) if p.from == from => p.answers,
            _ => self.send_fetches(&from, wait).await?,
        };
        let mut responses = Vec::with_capacity(answers.len());
        for answer in answers {
            let resp = answer.await?;
            if resp.error_code != 0 {
                return Err(kafka_error("Fetch", resp.error_code, ""));
            }
            responses.push(resp);
        }
        if let Some(next) = positions_after(&from, &responses) {
            // Without a wait: a caught-up consumer must not hold its connection with a long
            // poll; its next call sends a waiting fetch after an empty answer.
            if let Ok(answers) = self.send_fetches(&next, Duration::ZERO).await {
                *self.prefetch.lock() = Some(Prefetch {
                    from: next,
                    answers,
                });
            }
        }
        let mut out = Vec::new();
        let mut out_of_range = Vec::new();
        for resp in responses {
            self.take_records(resp, &mut out, &mut out_of_range)?;
        }
        if !out_of_range.is_empty() {
            self.reset(&out_of_range).await?;
        }
        if out.is_empty()
            && let Some(e) = self.corrupt.take()
        {
            return Err(e);
        }
        Ok(out)
    }

    /// Sends one Fetch per leader of `from`'s partitions, each asked from its offset.
    async fn send_fetches(
        &self,
        from: &[(TopicPartition, u64)],
        wait: Duration,
    ) -> Result<Vec<FetchAnswer>, BrokerError> {
        let offsets: HashMap<&TopicPartition, u64> = from.iter().map(|(tp, o)| (tp, *o)).collect();
        let wanted: Vec<TopicPartition> = from.iter().map(|(tp, _)| tp.clone()).collect();
        let mut answers: Vec<FetchAnswer> = Vec::new();
        for (addr, tps) in self.fetch.by_leader(&wanted).await? {
            let conn = self.fetch.conn_to(&addr).await?;
            let v = conn.version(ApiKey::Fetch, (4, 12))?;
            let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
            for tp in tps {
                topics.entry(&tp.topic).or_default().push(
                    FetchPartition::default()
                        .with_partition(tp.partition as i32)
                        .with_fetch_offset(offsets[tp] as i64)
                        .with_partition_max_bytes(self.config.max_partition_fetch_bytes as i32),
                );
            }
            let isolation = match self.config.isolation_level {
                IsolationLevel::ReadCommitted => 1,
                IsolationLevel::ReadUncommitted => 0,
            };
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(isolation)
                .with_max_wait_ms(wait.as_millis() as i32)
                .with_min_bytes(1)
                .with_max_bytes(self.config.fetch_max_bytes.min(i32::MAX as usize) as i32)
                .with_session_epoch(-1)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            FetchTopic::default()
                                .with_topic(TopicName(str_bytes(t)))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
            answers.push(Box::pin(conn.start(req, v).await?));
        }
        Ok(answers)
    }

    /// Decodes a Fetch response's records past each position and moves the positions on.
    fn take_records(
        &mut self,
        resp: FetchResponse,
        out: &mut Vec<RecordRun>,
        out_of_range: &mut Vec<TopicPartition>,
    ) -> Result<(), BrokerError> {
        for t in resp.responses {
            let name = t.topic.0.to_string();
            let topic = self
                .topic_names
                .entry(name.clone())
                .or_insert_with(|| Arc::from(name.as_str()))
                .clone();
            for p in t.partitions {
                let tp = TopicPartition::new(&name, p.partition_index as u32);
                match p.error_code {
                    0 => {}
                    codes::OFFSET_OUT_OF_RANGE => {
                        out_of_range.push(tp);
                        continue;
                    }
                    code => {
                        return Err(kafka_error(
                            "Fetch",
                            code,
                            &format!("{name}-{}", p.partition_index),
                        ));
                    }
                }
                let Some(pos) = self.positions.get_mut(&tp) else {
                    continue;
                };
                let records = p.records.unwrap_or_default();
                // Present for read_committed answers: what the records of aborted
                // transactions are, to leave out.
                let aborted: Option<Vec<AbortedTxn>> = p.aborted_transactions.map(|list| {
                    list.iter()
                        .map(|a| AbortedTxn {
                            producer_id: a.producer_id.0,
                            first_offset: a.first_offset.max(0) as u64,
                            last_offset: u64::MAX,
                            last_stable_offset: 0,
                        })
                        .collect()
                });
                let from = *pos;
                // The checked batches past the position: bytes `start..end` of the answer.
                let (mut at, mut start, mut end) = (0, None, 0);
                for b in batch::split_batches(&records) {
                    let here = at;
                    at += b.len();
                    let h = batch::parse_header(&b)?;
                    if h.next_offset() <= *pos {
                        continue;
                    }
                    // The broker sends batches from its files unchecked; as Kafka's consumer
                    // (`check.crcs`), a batch is checked before its records are handed out.
                    // The partition stays at a bad batch.
                    if let Err(e) = batch::validate(&b) {
                        let at = h.base_offset;
                        self.corrupt = Some(BrokerError::Malformed(format!(
                            "{tp} batch at offset {at}: {e}"
                        )));
                        break;
                    }
                    start.get_or_insert(here);
                    end = at;
                    *pos = h.next_offset();
                }
                if let Some(start) = start {
                    let checked = records.slice(start..end);
                    let decode = |batches: bytes::Bytes| match &aborted {
                        Some(aborted) => RecordRun::from_committed_batches(
                            topic.clone(),
                            tp.partition,
                            batches,
                            from,
                            aborted.clone(),
                        ),
                        None => RecordRun::from_batches(topic.clone(), tp.partition, batches, from),
                    };
                    let run = match decode(checked.clone()) {
                        Ok(run) => run,
                        // A compressed payload that does not decompress: as a bad CRC, the
                        // records before it are handed out, the partition stays at it, and
                        // the error comes with the next poll.
                        Err(e) => {
                            let LogError::UnreadableBatch { offset, .. } = e else {
                                return Err(e.into());
                            };
                            *pos = offset;
                            self.corrupt = Some(e.into());
                            decode(batches_before(&checked, offset))?
                        }
                    };
                    if !run.is_empty() {
                        out.push(run);
                    }
                }
            }
        }
        Ok(())
    }

    async fn commit_positions(&mut self) -> Result<(), LogError> {
        let offsets: Vec<(TopicPartition, u64)> = self
            .assignment
            .iter()
            .filter_map(|tp| self.positions.get(tp).map(|&p| (tp.clone(), p)))
            .collect();
        self.last_commit = Instant::now();
        LogConsumer::commit_offsets(self, offsets).await
    }

    /// One round of `poll`: join if needed, positions, auto-commit, one fetch.
    async fn poll_once(&mut self, wait: Duration) -> Result<Vec<RecordRun>, BrokerError> {
        if self.needs_join() {
            let joined = self.member.lock().joined;
            if joined && self.config.enable_auto_commit {
                // Refused when the group already moved on; the rejoin resumes from the
                // last commit that held.
                let _ = self.commit_positions().await;
            }
            self.join().await?;
        }
        self.init_positions().await?;
        if self.config.enable_auto_commit
            && self.group().is_some()
            && self.last_commit.elapsed() >= self.config.auto_commit_interval
            && let Err(e) = self.commit_positions().await
        {
            tracing::debug!(error = %e, "auto-commit refused");
        }
        if self.assignment.is_empty() {
            tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
            return Ok(Vec::new());
        }
        self.fetch(wait).await
    }
}

#[async_trait]
impl LogConsumer for RemoteConsumer {
    fn assign(&mut self, partitions: Vec<TopicPartition>) -> runnel_log::Result<()> {
        self.subscription = None;
        self.positions.retain(|tp, _| partitions.contains(tp));
        self.assignment = partitions;
        Ok(())
    }

    fn subscribe(&mut self, topics: &[&str]) -> runnel_log::Result<()> {
        if self.group().is_none() {
            return Err(LogError::InvalidConfig(
                "subscribe needs a group id (ConsumerConfig::group_id); use assign without one"
                    .into(),
            ));
        }
        self.subscription = Some(topics.iter().map(|t| t.to_string()).collect());
        self.member.lock().rejoin = true;
        Ok(())
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.clone()
    }

    fn position(&self, tp: &TopicPartition) -> Option<u64> {
        self.positions.get(tp).copied()
    }

    fn seek(&mut self, tp: &TopicPartition, offset: u64) -> runnel_log::Result<()> {
        if !self.assignment.contains(tp) {
            return Err(LogError::InvalidConfig(format!(
                "cannot seek {}-{}: it is not assigned to this consumer",
                tp.topic, tp.partition
            )));
        }
        self.to_beginning.remove(tp);
        self.positions.insert(tp.clone(), offset);
        Ok(())
    }

    fn seek_to_beginning(&mut self) {
        for tp in &self.assignment {
            self.positions.remove(tp);
            self.to_beginning.insert(tp.clone());
        }
    }

    /// Cancel safety: dropping the future loses nothing committed; records of an interrupted
    /// fetch are fetched again.
    async fn poll_runs(&mut self, timeout: Duration) -> runnel_log::Result<Vec<RecordRun>> {
        let deadline = Instant::now() + timeout;
        loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(MAX_FETCH_WAIT);
            match self.poll_once(wait).await {
                Ok(records) => {
                    self.backoff = Backoff::default();
                    if !records.is_empty() || Instant::now() >= deadline {
                        return Ok(records);
                    }
                }
                Err(e) if retriable(&e) => {
                    tracing::debug!(error = %e, "poll: retrying");
                    if stale_route(&e) {
                        self.fetch.forget_routes();
                        self.coordinator.forget_routes();
                        // The coordinator may have lost the group with its connection: the
                        // heartbeat notices, or the next join/commit says so.
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Vec::new());
                    }
                    let _ = tokio::time::timeout(left, self.backoff.wait()).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn commit_offsets(
        &mut self,
        offsets: Vec<(TopicPartition, u64)>,
    ) -> runnel_log::Result<()> {
        let Some(group) = self.group().map(str::to_string) else {
            return Err(LogError::InvalidConfig(
                "commit needs a group id (ConsumerConfig::group_id)".into(),
            ));
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let metadata = {
            let m = self.member.lock();
            if self.subscription.is_some() && m.joined {
                GroupMetadata {
                    group_id: group,
                    member_id: m.member_id.clone(),
                    generation: m.generation,
                }
            } else {
                GroupMetadata::unmanaged(&group)
            }
        };
        let result = member::commit(&self.coordinator, &metadata, &offsets).await;
        if let Err(BrokerError::Log(LogError::Group { kind, .. })) = &result
            && matches!(
                kind,
                GroupErrorKind::RebalanceInProgress
                    | GroupErrorKind::IllegalGeneration
                    | GroupErrorKind::UnknownMember
            )
        {
            self.member.lock().rejoin = true;
        }
        Ok(result?)
    }

    async fn close(mut self: Box<Self>) -> runnel_log::Result<()> {
        let joined = self.member.lock().joined;
        if self.config.enable_auto_commit && self.group().is_some() {
            self.commit_positions().await?;
        }
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if joined && self.subscription.is_some() {
            let group = self.group().unwrap_or_default().to_string();
            let member_id = self.member.lock().member_id.clone();
            let conn = self.group_conn().await?;
            member::leave(&conn, &group, &member_id).await?;
        }
        Ok(())
    }
}
