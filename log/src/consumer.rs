//! The in-process consumer: manual assignment or group subscription, seeks, long poll, commits.
//!
//! Contract:
//! - [`Consumer::poll`] returns records in offset order per partition, each at most once per
//!   position; it waits without spinning (a [`Notify`] registered on each assigned partition is
//!   signalled when an append becomes visible) until records arrive or the timeout passes.
//! - With a group ([`ConsumerConfig::group_id`] + [`Consumer::subscribe`]) partitions come from
//!   the group coordinator. A background task heartbeats; when the group rebalances, the next
//!   `poll` commits the positions it has handed out (with auto-commit), rejoins, and resumes the
//!   new partitions from their committed offsets. Kafka's delivery semantics follow: with
//!   auto-commit, a record is committed only after the `poll` that returned it is followed by
//!   another `poll`, a rebalance, or `close` — at least once.
//! - Where no committed offset exists, or it fell below the log start (retention),
//!   `auto_offset_reset` decides: earliest, latest, or an error.

use crate::assignor::{self, AssignmentStrategy, MemberSubscription};
use crate::error::{LogError, Result};
use crate::group::JoinRequest;
use crate::log::{Log, Topic};
use crate::membership::{heartbeat_loop, join_and_sync};
use crate::partition::Partition;
use crate::run::RecordRun;
use crate::txn::IsolationLevel;
use crate::types::{ConsumerRecord, TopicPartition};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    Earliest,
    #[default]
    Latest,
    None,
}

impl std::str::FromStr for OffsetReset {
    type Err = LogError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            "none" => Ok(Self::None),
            o => Err(LogError::InvalidConfig(format!(
                "auto.offset.reset {o:?} is not one of earliest, latest, none"
            ))),
        }
    }
}

/// Consumer settings, named after Kafka's.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub group_id: Option<String>,
    pub client_id: String,
    pub auto_offset_reset: OffsetReset,
    pub enable_auto_commit: bool,
    pub auto_commit_interval: Duration,
    /// `max.partition.fetch.bytes`: bytes read per partition per poll.
    pub max_partition_fetch_bytes: usize,
    /// `fetch.max.bytes`: bytes per poll over all partitions.
    pub fetch_max_bytes: usize,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub rebalance_timeout: Duration,
    /// `partition.assignment.strategy`, in order of preference.
    pub assignment_strategies: Vec<AssignmentStrategy>,
    /// `isolation.level`. Runnel's readers default to `read_committed` (Kafka's clients to
    /// `read_uncommitted`): on a topic without transactions both read the same records.
    pub isolation_level: IsolationLevel,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            group_id: None,
            client_id: "runnel-consumer".into(),
            auto_offset_reset: OffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            max_partition_fetch_bytes: 1 << 20,
            fetch_max_bytes: 50 << 20,
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_millis(300),
            rebalance_timeout: Duration::from_secs(30),
            assignment_strategies: vec![AssignmentStrategy::Range],
            isolation_level: IsolationLevel::default(),
        }
    }
}

/// Lag of one assigned partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: TopicPartition,
    pub position: Option<u64>,
    pub end_offset: u64,
    pub lag: u64,
}

struct Assigned {
    partition: Arc<Partition>,
    position: Option<u64>,
}

struct Membership {
    member_id: String,
    generation: i32,
    rejoin: Arc<AtomicBool>,
    heartbeat: tokio::task::JoinHandle<()>,
    /// The subscribed topics with their partition counts when this generation was joined.
    topics: Vec<(Arc<Topic>, u32)>,
}

impl Membership {
    /// Whether the group must rebalance: told so, or a subscribed topic gained partitions
    /// (Kafka's consumers rejoin on that metadata change too, or nobody reads the new ones).
    fn needs_rejoin(&self) -> bool {
        self.rejoin.load(Ordering::Acquire)
            || self
                .topics
                .iter()
                .any(|(t, count)| t.partition_count() != *count)
    }
}

/// See the module documentation.
pub struct Consumer {
    log: Log,
    config: ConsumerConfig,
    waker: Arc<Notify>,
    assigned: BTreeMap<TopicPartition, Assigned>,
    subscription: Option<Vec<String>>,
    membership: Option<Membership>,
    last_commit: Instant,
    next_start: usize,
}

impl Consumer {
    pub fn new(log: Log, config: ConsumerConfig) -> Self {
        Self {
            log,
            config,
            waker: Arc::new(Notify::new()),
            assigned: BTreeMap::new(),
            subscription: None,
            membership: None,
            last_commit: Instant::now(),
            next_start: 0,
        }
    }

    /// Reads these partitions, outside group management. Positions start from the committed
    /// offset of `group_id` if there is one, else per `auto_offset_reset`.
    ///
    /// # Errors
    ///
    /// [`LogError::UnknownTopic`] / [`LogError::UnknownPartition`] for a partition that does
    /// not exist; the assignment is then unchanged.
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        self.subscription = None;
        self.set_assignment(partitions)
    }

    /// Joins `group_id` and reads the partitions of `topics` the group assigns to this member.
    /// The join happens in the next [`poll`](Self::poll).
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidConfig`] without a `group_id`; [`LogError::UnknownTopic`] for a
    /// topic that does not exist.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        if self.config.group_id.is_none() {
            return Err(LogError::InvalidConfig(
                "subscribe needs a group_id; use assign() to read without a group".into(),
            ));
        }
        for t in topics {
            self.log.topic(t)?;
        }
        self.subscription = Some(topics.iter().map(|t| t.to_string()).collect());
        if let Some(m) = &self.membership {
            m.rejoin.store(true, Ordering::Release);
        }
        Ok(())
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assigned.keys().cloned().collect()
    }

    pub fn position(&self, tp: &TopicPartition) -> Option<u64> {
        self.assigned.get(tp).and_then(|a| a.position)
    }

    /// Reads `tp` from `offset` at the next poll.
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidConfig`] when `tp` is not assigned to this consumer.
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        self.assigned_mut(tp)?.position = Some(offset);
        Ok(())
    }

    pub fn seek_to_beginning(&mut self) {
        for a in self.assigned.values_mut() {
            a.position = Some(a.partition.log_start_offset());
        }
    }

    pub fn seek_to_end(&mut self) {
        for a in self.assigned.values_mut() {
            a.position = Some(a.partition.high_watermark());
        }
    }

    /// Moves every assigned partition to its first record with timestamp ≥ `ts` (the end if none).
    ///
    /// # Errors
    ///
    /// As [`Partition::offset_for_timestamp`]; no position moves then.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: positions move only after every lookup is done.
    pub async fn seek_to_timestamp(&mut self, ts: i64) -> Result<()> {
        let parts: Vec<(TopicPartition, Arc<Partition>)> = self
            .assigned
            .iter()
            .map(|(tp, a)| (tp.clone(), a.partition.clone()))
            .collect();
        let found = blocking(move || {
            parts
                .into_iter()
                .map(|(tp, p)| {
                    Ok((
                        tp,
                        p.offset_for_timestamp(ts)?.unwrap_or(p.high_watermark()),
                    ))
                })
                .collect::<Result<Vec<_>>>()
        })
        .await?;
        for (tp, off) in found {
            self.assigned_mut(&tp)?.position = Some(off);
        }
        Ok(())
    }

    fn assigned_mut(&mut self, tp: &TopicPartition) -> Result<&mut Assigned> {
        self.assigned.get_mut(tp).ok_or_else(|| {
            LogError::InvalidConfig(format!("{tp} is not assigned to this consumer"))
        })
    }

    fn set_assignment(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        let mut assigned = BTreeMap::new();
        for tp in partitions {
            let partition = self.log.partition(&tp)?;
            partition.register_waker(&self.waker);
            let position = self.assigned.get(&tp).and_then(|a| a.position);
            assigned.insert(
                tp,
                Assigned {
                    partition,
                    position,
                },
            );
        }
        self.assigned = assigned;
        Ok(())
    }

    /// Waits up to `timeout` for records from the assigned partitions.
    ///
    /// # Errors
    ///
    /// - [`LogError::NoOffset`] for a partition without committed offset under
    ///   `auto_offset_reset = none`, [`LogError::OffsetOutOfRange`] for a position outside the
    ///   log under it.
    /// - [`LogError::Group`] when the group refuses the join, sync or auto-commit (fenced,
    ///   rebalanced away).
    /// - [`LogError::Corrupt`] / [`LogError::Io`] from reading the partitions.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: records are only taken from the log after the wait, in one step with the
    /// position update, so dropping the future loses nothing; a dropped poll may leave a group
    /// rejoin half done, which the next poll finishes.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let runs = self.poll_runs(timeout).await?;
        Ok(runs
            .iter()
            .flat_map(RecordRun::to_consumer_records)
            .collect())
    }

    /// As [`Consumer::poll`], with the records left in the batches they were read in: one
    /// [`RecordRun`] per partition that had records (the cheaper form for a stream processor).
    ///
    /// # Errors
    ///
    /// As [`Consumer::poll`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Consumer::poll`].
    pub async fn poll_runs(&mut self, timeout: Duration) -> Result<Vec<RecordRun>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.subscription.is_some() {
                self.ensure_membership().await?;
            }
            self.maybe_auto_commit().await?;
            self.resolve_positions()?;
            let waker = self.waker.clone();
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let runs = self.fetch().await?;
            if !runs.is_empty() {
                return Ok(runs);
            }
            let now = Instant::now();
            if now >= deadline {
                // A caller spinning on poll(0) must still let heartbeats and other tasks run.
                tokio::task::yield_now().await;
                return Ok(Vec::new());
            }
            let mut wait = deadline - now;
            if self.membership.is_some() {
                wait = wait.min(self.config.heartbeat_interval);
            }
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    /// Fills in positions of partitions that have none: committed offset, else the reset policy.
    fn resolve_positions(&mut self) -> Result<()> {
        let group = self.config.group_id.clone();
        let reset = self.config.auto_offset_reset;
        for (tp, a) in self.assigned.iter_mut() {
            let start = a.partition.log_start_offset();
            let end = a.partition.high_watermark();
            let valid = |p: u64| p >= start && p <= end;
            if a.position.is_some_and(valid) {
                continue;
            }
            if a.position.is_none() {
                let committed = group
                    .as_ref()
                    .and_then(|g| self.log.groups().committed(g, tp));
                if let Some(c) = committed.filter(|c| valid(c.offset)) {
                    a.position = Some(c.offset);
                    continue;
                }
            }
            a.position = Some(match reset {
                OffsetReset::Earliest => start,
                OffsetReset::Latest => end,
                OffsetReset::None => match a.position {
                    Some(offset) => {
                        return Err(LogError::OffsetOutOfRange {
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            offset,
                            start,
                            end,
                        });
                    }
                    None => {
                        return Err(LogError::NoOffset {
                            group: group.clone().unwrap_or_default(),
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                        });
                    }
                },
            });
            tracing::debug!(partition = %tp, position = ?a.position, "reset position");
        }
        Ok(())
    }

    /// One pass over the assigned partitions that have data, starting at a rotating index so
    /// no partition starves the others.
    async fn fetch(&mut self) -> Result<Vec<RecordRun>> {
        let n = self.assigned.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let start = self.next_start % n;
        self.next_start = self.next_start.wrapping_add(1);
        let isolation = self.config.isolation_level;
        let work: Vec<(TopicPartition, Arc<Partition>, u64)> = self
            .assigned
            .iter()
            .cycle()
            .skip(start)
            .take(n)
            .filter_map(|(tp, a)| {
                let pos = a.position?;
                (pos < readable_end(&a.partition, isolation))
                    .then(|| (tp.clone(), a.partition.clone(), pos))
            })
            .collect();
        if work.is_empty() {
            return Ok(Vec::new());
        }
        let per_partition = self.config.max_partition_fetch_bytes;
        let total_max = self.config.fetch_max_bytes;
        let fetched = blocking(move || {
            let mut out = Vec::new();
            let mut total = 0usize;
            for (tp, p, pos) in work {
                if total >= total_max {
                    break;
                }
                let f = p.read_isolated(pos, per_partition, isolation)?;
                total += f.batches.len();
                let run = match isolation {
                    IsolationLevel::ReadUncommitted => {
                        RecordRun::from_batches(p.topic.clone(), tp.partition, f.batches, pos)?
                    }
                    IsolationLevel::ReadCommitted => {
                        let aborted = p.aborted_transactions(pos, f.next_offset);
                        RecordRun::from_committed_batches(
                            p.topic.clone(),
                            tp.partition,
                            f.batches,
                            pos,
                            aborted,
                        )?
                    }
                };
                out.push((tp, f.next_offset.max(pos), run));
            }
            Ok(out)
        })
        .await?;
        let mut runs = Vec::with_capacity(fetched.len());
        for (tp, next, run) in fetched {
            if let Some(a) = self.assigned.get_mut(&tp) {
                a.position = Some(next);
            }
            if !run.is_empty() {
                runs.push(run);
            }
        }
        Ok(runs)
    }

    /// Commits the current positions of all assigned partitions.
    ///
    /// # Errors
    ///
    /// As [`commit_offsets`](Self::commit_offsets).
    ///
    /// # Cancel safety
    ///
    /// As [`commit_offsets`](Self::commit_offsets).
    pub async fn commit(&mut self) -> Result<()> {
        let offsets: Vec<(TopicPartition, u64)> = self
            .assigned
            .iter()
            .filter_map(|(tp, a)| Some((tp.clone(), a.position?)))
            .collect();
        self.commit_offsets(offsets).await
    }

    /// Commits explicit offsets (the next offset to read, as in Kafka).
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidConfig`] without a `group_id`; [`LogError::Group`] when this member
    /// is no longer in the group's generation (its partitions moved: the commit is refused);
    /// [`LogError::Storage`] when the offsets topic cannot be written.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: the commit runs on a blocking thread and completes or not as a
    /// whole; a dropped future does not say which, so commit again.
    pub async fn commit_offsets(&mut self, offsets: Vec<(TopicPartition, u64)>) -> Result<()> {
        let group =
            self.config.group_id.clone().ok_or_else(|| {
                LogError::InvalidConfig("committing offsets needs a group_id".into())
            })?;
        let member = self
            .membership
            .as_ref()
            .map(|m| (m.member_id.clone(), m.generation));
        let log = self.log.clone();
        let offsets: Vec<_> = offsets
            .into_iter()
            .map(|(tp, o)| (tp, o, String::new()))
            .collect();
        let r = blocking(move || {
            let member = member.as_ref().map(|(id, g)| (id.as_str(), *g));
            log.groups().commit_offsets(&group, member, &offsets)
        })
        .await;
        if let (Err(LogError::Group { .. }), Some(m)) = (&r, &self.membership) {
            m.rejoin.store(true, Ordering::Release);
        }
        self.last_commit = Instant::now();
        r
    }

    async fn maybe_auto_commit(&mut self) -> Result<()> {
        if self.config.enable_auto_commit
            && self.config.group_id.is_some()
            && self.last_commit.elapsed() >= self.config.auto_commit_interval
        {
            match self.commit().await {
                Err(LogError::Group { kind, .. }) => {
                    tracing::debug!(%kind, "auto-commit refused; rejoining");
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Joins or rejoins the group when needed, then takes the new assignment.
    async fn ensure_membership(&mut self) -> Result<()> {
        let needs_join = self
            .membership
            .as_ref()
            .is_none_or(Membership::needs_rejoin);
        if !needs_join {
            return Ok(());
        }
        if self.membership.is_some() && self.config.enable_auto_commit {
            // Eager protocol: hand back what we read before the partitions move.
            if let Err(e) = self.commit().await {
                tracing::debug!(error = %e, "commit before rejoin failed");
            }
        }
        let group = self
            .config
            .group_id
            .clone()
            .expect("subscribe checked group_id");
        let topics = self.subscription.clone().unwrap_or_default();
        // Taken before joining: growth after this point triggers another rebalance, never none.
        let watched: Vec<(Arc<Topic>, u32)> = topics
            .iter()
            .filter_map(|t| self.log.topic(t).ok())
            .map(|t| {
                let count = t.partition_count();
                (t, count)
            })
            .collect();
        let previous: Vec<TopicPartition> = self.assignment();
        let member_id = self
            .membership
            .as_ref()
            .map(|m| m.member_id.clone())
            .unwrap_or_default();
        if let Some(m) = self.membership.take() {
            m.heartbeat.abort();
        }
        let protocols = self
            .config
            .assignment_strategies
            .iter()
            .map(|s| {
                let sub = MemberSubscription {
                    member_id: member_id.clone(),
                    topics: topics.clone(),
                    owned_partitions: previous.clone(),
                    user_data: Vec::new(),
                };
                (s.name().to_string(), sub.encode())
            })
            .collect();
        let req = JoinRequest {
            group: group.clone(),
            member_id,
            client_id: self.config.client_id.clone(),
            protocol_type: "consumer".into(),
            protocols,
            session_timeout: self.config.session_timeout,
            rebalance_timeout: self.config.rebalance_timeout,
        };
        let this = &*self;
        let mut assign = |protocol: &str, members: &[(String, Vec<u8>)]| {
            this.compute_assignment(protocol, members)
        };
        let (joined, bytes) = join_and_sync(&self.log, req, &mut assign).await?;
        let member_id = joined.member_id;
        let mine = assignor::decode_assignment(&bytes)?;
        tracing::info!(group = %group, member = %member_id, generation = joined.generation, partitions = mine.len(), "joined group");
        // Every partition, kept or new, resumes from its committed offset: we committed
        // before rejoining, and a kept partition may have moved away and back in between.
        self.assigned.clear();
        self.set_assignment(mine)?;
        let rejoin = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.log.clone(),
            group.clone(),
            member_id.clone(),
            joined.generation,
            self.config.heartbeat_interval,
            rejoin.clone(),
            self.waker.clone(),
        ));
        self.membership = Some(Membership {
            member_id,
            generation: joined.generation,
            rejoin,
            heartbeat,
            topics: watched,
        });
        self.last_commit = Instant::now();
        Ok(())
    }

    /// The leader's job: decode every member's subscription and run the chosen assignor.
    fn compute_assignment(
        &self,
        protocol: &str,
        members: &[(String, Vec<u8>)],
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let strategy: AssignmentStrategy = protocol
            .parse()
            .map_err(|e: String| LogError::InvalidConfig(e))?;
        let subs = members
            .iter()
            .map(|(id, meta)| MemberSubscription::decode(id, meta))
            .collect::<Result<Vec<_>>>()?;
        let mut counts = BTreeMap::new();
        for s in &subs {
            for t in &s.topics {
                if let Ok(topic) = self.log.topic(t) {
                    counts.insert(t.clone(), topic.partition_count());
                }
            }
        }
        Ok(assignor::assign(strategy, &subs, &counts)
            .into_iter()
            .map(|(id, parts)| (id, assignor::encode_assignment(&parts)))
            .collect())
    }

    /// Position, end offset and lag of each assigned partition.
    pub fn lag(&self) -> Vec<PartitionLag> {
        self.assigned
            .iter()
            .map(|(tp, a)| {
                let end = a.partition.high_watermark();
                PartitionLag {
                    partition: tp.clone(),
                    position: a.position,
                    end_offset: end,
                    lag: a.position.map_or(0, |p| end.saturating_sub(p)),
                }
            })
            .collect()
    }

    /// Commits (with auto-commit) and leaves the group, so others take over at once.
    ///
    /// # Errors
    ///
    /// As [`commit`](Self::commit); the consumer leaves the group either way.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the consumer, which leaves the group.
    pub async fn close(mut self) -> Result<()> {
        let r = if self.config.enable_auto_commit && self.config.group_id.is_some() {
            self.commit().await
        } else {
            Ok(())
        };
        self.leave();
        r
    }

    fn leave(&mut self) {
        if let (Some(m), Some(g)) = (self.membership.take(), &self.config.group_id) {
            m.heartbeat.abort();
            self.log.groups().leave_group(g, &m.member_id);
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Where reads at `isolation` end now: the high watermark, or the last stable offset.
fn readable_end(p: &Partition, isolation: IsolationLevel) -> u64 {
    match isolation {
        IsolationLevel::ReadUncommitted => p.high_watermark(),
        IsolationLevel::ReadCommitted => p.last_stable_offset(),
    }
}

/// Runs blocking log work off the async executor.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LogError::io("(blocking task)", std::io::Error::other(e.to_string())))?
}
