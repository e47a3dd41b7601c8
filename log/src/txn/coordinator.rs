//! The transaction coordinator: transactional ids, producer ids and epochs, and the two-phase
//! end of a transaction (Kafka's `TransactionCoordinator`, for one node).
//!
//! Contract:
//! - [`init_producer_id`](TransactionCoordinator::init_producer_id) with a transactional id
//!   returns its producer id with a new epoch, which fences every older instance: their
//!   coordinator calls fail with `ProducerFenced` and their appends with
//!   `InvalidProducerEpoch`. A transaction the older instance left open is aborted first.
//! - A transaction is `Ongoing` from its first [`add_partitions`] until
//!   [`end_txn`]: the coordinator records `PrepareCommit`/`PrepareAbort` in
//!   `__transaction_state` (durably) before writing any marker, writes a marker into every
//!   partition of the transaction (the group coordinator applies or drops transactional
//!   offsets at the offsets topic's marker), then records `CompleteCommit`/`CompleteAbort`.
//!   "Durably" follows the transaction's topics: the records are synced when one of them is
//!   `always` durable; over `interval` topics only they are flushed on the interval, as the
//!   topics' own records are (a process crash loses none of them; a power loss may lose the
//!   last interval of both, and the partitions' then unknown open transactions are aborted
//!   at the next open).
//!   Once the prepare record is durable the outcome is decided: a crash after it is completed
//!   when the log is next opened ([`TransactionCoordinator::load`] + `recover`).
//! - A transaction open longer than its `transaction.timeout.ms` is aborted by the log's
//!   background thread with the epoch bumped, so its producer is fenced.
//! - A transaction one of whose batches a partition refused (the broker tells, through
//!   [`note_refused_batch`](TransactionCoordinator::note_refused_batch)) can only abort: its
//!   commit fails with `TransactionAbortable`. So a client may send EndTxn right behind its
//!   last Produce on the same connection, without waiting for the Produce's answer.
//! - Calls for one transactional id are serialized; different ids proceed in parallel.
//!
//! [`add_partitions`]: TransactionCoordinator::add_partitions
//! [`end_txn`]: TransactionCoordinator::end_txn

use crate::clock::Clock;
use crate::config::{Durability, TopicConfig};
use crate::error::{LogError, Result, TxnErrorKind};
use crate::log::{CONSUMER_OFFSETS_TOPIC, Log, internal_topic_config};
use crate::partition::Partition;
use crate::txn::marker::Outcome;
use crate::txn::state_log::{self, TRANSACTION_STATE_TOPIC, TxnMetadata, TxnStatus};
use crate::types::{TopicPartition, now_ms};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

/// Kafka's default `transaction.timeout.ms`.
pub const DEFAULT_TRANSACTION_TIMEOUT_MS: i32 = 60_000;
/// Kafka's default `transaction.max.timeout.ms` (15 minutes).
pub const MAX_TRANSACTION_TIMEOUT_MS: i32 = 900_000;

type Entry = Arc<Mutex<TxnMetadata>>;

pub struct TransactionCoordinator {
    /// `__transaction_state`, created on the first transactional id.
    state_partition: OnceLock<Arc<Partition>>,
    txns: Mutex<HashMap<String, Entry>>,
    /// Producer id → its transactional id, for checking a produce against its transaction.
    by_producer: Mutex<HashMap<i64, String>>,
    /// Producer id → epoch of an open transaction a partition refused a batch of: it may only
    /// abort. In memory only: a restart breaks the client's connection, and with it the
    /// pipelined EndTxn this guards.
    refused: Mutex<HashMap<i64, i16>>,
    next_producer_id: AtomicI64,
    /// Dates transactions' starts and updates, and decides their timeouts.
    clock: Clock,
}

impl std::fmt::Debug for TransactionCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransactionCoordinator")
    }
}

impl TransactionCoordinator {
    /// Loads the transactional ids from `__transaction_state` when it exists. Transactions
    /// caught between prepare and complete are finished by [`recover`](Self::recover).
    pub(crate) fn load(state_partition: Option<Arc<Partition>>, clock: Clock) -> Result<Self> {
        let mut txns: HashMap<String, TxnMetadata> = HashMap::new();
        if let Some(p) = &state_partition {
            p.scan_batches(p.log_start_offset(), u64::MAX, |b| {
                for r in crate::batch::records(b)? {
                    let Some(key) = r.key else { continue };
                    let id = state_log::decode_key(&key)?;
                    match r.value {
                        Some(v) => {
                            txns.insert(id, state_log::decode_value(&v)?);
                        }
                        None => {
                            txns.remove(&id);
                        }
                    }
                }
                Ok(ControlFlow::<()>::Continue(()))
            })?;
        }
        // Ids start from the wall clock (not the log's, which a test may hold still) so that ids of idempotent producers of an earlier run (which
        // are not stored) are not handed out again, and past every stored one.
        let stored = txns.values().map(|m| m.producer_id + 1).max().unwrap_or(0);
        let next = (now_ms() << 8).max(stored);
        let cell = OnceLock::new();
        if let Some(p) = state_partition {
            let _ = cell.set(p);
        }
        let by_producer = txns
            .iter()
            .map(|(id, m)| (m.producer_id, id.clone()))
            .collect();
        Ok(Self {
            state_partition: cell,
            by_producer: Mutex::new(by_producer),
            refused: Mutex::default(),
            txns: Mutex::new(
                txns.into_iter()
                    .map(|(k, v)| (k, Arc::new(Mutex::new(v))))
                    .collect(),
            ),
            next_producer_id: AtomicI64::new(next),
            clock,
        })
    }

    /// Completes the transactions a crash left between prepare and complete. Blocking.
    pub(crate) fn recover(&self, log: &Log) {
        for (id, entry) in self.entries() {
            let mut m = entry.lock();
            let outcome = match m.status {
                TxnStatus::PrepareCommit => Outcome::Commit,
                TxnStatus::PrepareAbort => Outcome::Abort,
                _ => continue,
            };
            tracing::info!(transactional_id = %id, ?outcome, "completing a transaction left prepared");
            if let Err(e) = self.complete(log, &id, &mut m, outcome) {
                tracing::error!(transactional_id = %id, error = %e,
                    "cannot complete a prepared transaction; retried when its producer calls again");
            }
        }
    }

    /// Aborts the transactions open in a partition that no ongoing transaction of the
    /// coordinator includes (hanging transactions, whose last stable offset would never move):
    /// left when a power loss took the coordinator's unsynced record of an `interval` topic's
    /// transaction but not the partition's records. Blocking; at open, after `recover`.
    pub(crate) fn abort_hanging(&self, partitions: &[Arc<Partition>]) {
        for p in partitions {
            let tp = TopicPartition::new(&*p.topic, p.id);
            for (producer_id, epoch) in p.open_transactions() {
                if self.includes(producer_id, epoch, &tp) {
                    continue;
                }
                tracing::warn!(topic = %tp.topic, partition = tp.partition, producer_id, epoch,
                    "aborting a transaction the coordinator does not know (its record was lost)");
                if let Err(e) = p.write_marker(producer_id, epoch, Outcome::Abort, 0) {
                    tracing::error!(topic = %tp.topic, partition = tp.partition, producer_id,
                        error = %e, "cannot abort a hanging transaction");
                }
            }
        }
    }

    /// Whether `producer_id` at `epoch` has an ongoing transaction that includes `tp`.
    fn includes(&self, producer_id: i64, epoch: i16, tp: &TopicPartition) -> bool {
        let id = self.by_producer.lock().get(&producer_id).cloned();
        let Some(entry) = id.and_then(|id| self.txns.lock().get(&id).cloned()) else {
            return false;
        };
        let m = entry.lock();
        m.producer_id == producer_id
            && m.epoch == epoch
            && m.status == TxnStatus::Ongoing
            && m.partitions.contains(tp)
    }

    /// A producer id for an idempotent producer without a transactional id.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id.fetch_add(1, Ordering::Relaxed)
    }

    /// InitProducerId: the producer id and epoch for `transactional_id` (a new id, or the
    /// known one with its epoch bumped, after aborting a transaction the previous instance
    /// left open). `None` gives an idempotent producer a fresh id at epoch 0. Blocking.
    ///
    /// # Errors
    ///
    /// [`LogError::Transaction`] with `InvalidTransactionTimeout` for a timeout outside
    /// 1 ms..=15 min, `ConcurrentTransactions` while the id's transaction is being completed;
    /// [`LogError::Storage`] when `__transaction_state` or an abort marker cannot be written.
    pub fn init_producer_id(
        &self,
        log: &Log,
        transactional_id: Option<&str>,
        timeout_ms: i32,
    ) -> Result<(i64, i16)> {
        let Some(id) = transactional_id else {
            return Ok((self.next_producer_id(), 0));
        };
        if !(1..=MAX_TRANSACTION_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(txn_error(id, TxnErrorKind::InvalidTransactionTimeout));
        }
        self.ensure_state_partition(log)?;
        // A new id starts at epoch -1, so that its first init, like every later one, bumps it.
        let entry = self
            .txns
            .lock()
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Mutex::new(TxnMetadata {
                    producer_id: self.next_producer_id(),
                    epoch: -1,
                    timeout_ms,
                    status: TxnStatus::Empty,
                    partitions: BTreeSet::new(),
                    last_update_ms: self.clock.now_ms(),
                    start_ms: -1,
                }))
            })
            .clone();
        let mut m = entry.lock();
        self.fence_and_bump(log, id, &mut m, timeout_ms)?;
        Ok((m.producer_id, m.epoch))
    }

    /// Aborts what the previous instance left open and moves to a new epoch (a new producer
    /// id when the epoch is exhausted).
    fn fence_and_bump(
        &self,
        log: &Log,
        id: &str,
        m: &mut TxnMetadata,
        timeout_ms: i32,
    ) -> Result<()> {
        match m.status {
            TxnStatus::Ongoing => {
                m.epoch = m.epoch.saturating_add(1);
                self.complete(log, id, m, Outcome::Abort)?;
            }
            TxnStatus::PrepareCommit => self.complete(log, id, m, Outcome::Commit)?,
            TxnStatus::PrepareAbort => self.complete(log, id, m, Outcome::Abort)?,
            _ => {}
        }
        if m.epoch >= i16::MAX - 1 {
            m.producer_id = self.next_producer_id();
            m.epoch = 0;
        } else {
            m.epoch += 1;
        }
        self.by_producer
            .lock()
            .insert(m.producer_id, id.to_string());
        m.timeout_ms = timeout_ms;
        m.status = TxnStatus::Empty;
        m.last_update_ms = self.clock.now_ms();
        // Synced always: an epoch bump lost to a power loss would un-fence the older instance.
        self.persist(id, m, true)
    }

    /// AddPartitionsToTxn: the transaction now includes `partitions` (they must exist).
    /// Blocking.
    ///
    /// # Errors
    ///
    /// [`LogError::Transaction`] with `InvalidProducerIdMapping` for a producer id the id
    /// does not hold, `ProducerFenced` for an older epoch, `InvalidTxnState` when no
    /// transaction is open or it is being completed;
    /// [`LogError::UnknownTopic`] / [`LogError::UnknownPartition`]; [`LogError::Storage`].
    pub fn add_partitions(
        &self,
        log: &Log,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        let entry = self.entry(transactional_id)?;
        let mut m = entry.lock();
        check_producer(transactional_id, &m, producer_id, epoch)?;
        match m.status {
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => {
                return Err(txn_error(
                    transactional_id,
                    TxnErrorKind::ConcurrentTransactions,
                ));
            }
            TxnStatus::Ongoing if partitions.iter().all(|tp| m.partitions.contains(tp)) => {
                return Ok(());
            }
            _ => {}
        }
        for tp in partitions {
            log.partition(tp)?;
        }
        let mut next = m.clone();
        if next.status != TxnStatus::Ongoing {
            next.status = TxnStatus::Ongoing;
            next.start_ms = self.clock.now_ms();
            next.partitions.clear();
        }
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = self.clock.now_ms();
        let sync = must_sync(log, &next.partitions);
        self.persist(transactional_id, &next, sync)?;
        *m = next;
        Ok(())
    }

    /// AddOffsetsToTxn: the transaction will commit offsets of `group`. Blocking.
    ///
    /// # Errors
    ///
    /// [`LogError::Transaction`] with `InvalidProducerIdMapping` for a producer id the id
    /// does not hold, `ProducerFenced` for an older epoch, `InvalidTxnState` when no
    /// transaction is open or it is being completed;
    /// [`LogError::Storage`].
    pub fn add_offsets(
        &self,
        log: &Log,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<()> {
        let tp = log.groups().offsets_partition(group);
        self.add_partitions(log, transactional_id, producer_id, epoch, &[tp])
    }

    /// TxnOffsetCommit: offsets of `group` committed as part of the transaction (which must
    /// have added the group with [`add_offsets`](Self::add_offsets)). Blocking.
    ///
    /// # Errors
    ///
    /// [`LogError::Transaction`] with `InvalidProducerIdMapping` for a producer id the id
    /// does not hold, `ProducerFenced` for an older epoch, `InvalidTxnState` when no
    /// transaction is open or it is being completed;
    /// [`LogError::Group`] as for a plain commit; [`LogError::Storage`].
    #[allow(clippy::too_many_arguments)]
    pub fn txn_offset_commit(
        &self,
        log: &Log,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        member: Option<(&str, i32)>,
        offsets: &[(TopicPartition, u64, String)],
    ) -> Result<()> {
        let entry = self.entry(transactional_id)?;
        let m = entry.lock();
        check_producer(transactional_id, &m, producer_id, epoch)?;
        let offsets_tp = log.groups().offsets_partition(group);
        if m.status != TxnStatus::Ongoing || !m.partitions.contains(&offsets_tp) {
            return Err(txn_error(transactional_id, TxnErrorKind::InvalidTxnState));
        }
        log.groups()
            .txn_commit_offsets(group, producer_id, epoch, member, offsets)
    }

    /// EndTxn: commits or aborts the open transaction. A repeat of a completed end (a retry)
    /// succeeds; an end of another kind, or with no transaction open, is `InvalidTxnState`.
    /// Blocking: returns once every marker is durable.
    ///
    /// # Errors
    ///
    /// [`LogError::Transaction`] with `InvalidProducerIdMapping` for a producer id the id
    /// does not hold, `ProducerFenced` for an older epoch, `InvalidTxnState` when no
    /// transaction is open or it is being completed;
    /// [`LogError::Storage`] when a marker or the state cannot be written (the transaction
    /// stays prepared and is completed by a retry or at the next open).
    pub fn end_txn(
        &self,
        log: &Log,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        outcome: Outcome,
    ) -> Result<()> {
        let entry = self.entry(transactional_id)?;
        let mut m = entry.lock();
        check_producer(transactional_id, &m, producer_id, epoch)?;
        if outcome == Outcome::Commit
            && m.status == TxnStatus::Ongoing
            && self.refused.lock().get(&producer_id) == Some(&epoch)
        {
            return Err(txn_error(
                transactional_id,
                TxnErrorKind::TransactionAbortable,
            ));
        }
        match (m.status, outcome) {
            (TxnStatus::Ongoing, _)
            | (TxnStatus::PrepareCommit, Outcome::Commit)
            | (TxnStatus::PrepareAbort, Outcome::Abort) => {
                self.complete(log, transactional_id, &mut m, outcome)
            }
            (TxnStatus::CompleteCommit, Outcome::Commit)
            | (TxnStatus::CompleteAbort, Outcome::Abort) => Ok(()),
            _ => Err(txn_error(transactional_id, TxnErrorKind::InvalidTxnState)),
        }
    }

    /// Aborts, with the epoch bumped, every transaction open longer than its timeout.
    /// Called by the log's background thread. Blocking.
    pub(crate) fn abort_timed_out(&self, log: &Log) {
        let now = self.clock.now_ms();
        for (id, entry) in self.entries() {
            let Some(mut m) = entry.try_lock() else {
                continue;
            };
            if m.status != TxnStatus::Ongoing || now < m.start_ms + i64::from(m.timeout_ms) {
                continue;
            }
            tracing::info!(transactional_id = %id, producer_id = m.producer_id,
                timeout_ms = m.timeout_ms, "aborting a transaction past its timeout");
            m.epoch = m.epoch.saturating_add(1);
            if let Err(e) = self.complete(log, &id, &mut m, Outcome::Abort) {
                tracing::error!(transactional_id = %id, error = %e, "cannot abort a timed-out transaction");
            }
        }
    }

    /// Whether a transactional batch of `producer_id` at `epoch` may be appended to `tp`: its
    /// transaction is open at that epoch and has added `tp`. The broker checks this before a
    /// client's transactional produce, so that a fenced or timed-out producer cannot open a
    /// transaction in a partition that no marker would ever end (a hanging transaction).
    ///
    /// # Errors
    ///
    /// [`LogError::Transaction`] with `InvalidProducerIdMapping` for a producer id the id
    /// does not hold, `ProducerFenced` for an older epoch, `InvalidTxnState` when no
    /// transaction is open or it is being completed;
    /// `InvalidTxnState` too when the transaction has not added `tp`.
    pub fn check_produce(&self, producer_id: i64, epoch: i16, tp: &TopicPartition) -> Result<()> {
        let id = self.by_producer.lock().get(&producer_id).cloned();
        let Some(id) = id else {
            return Err(txn_error(
                &format!("(producer {producer_id})"),
                TxnErrorKind::InvalidProducerIdMapping,
            ));
        };
        let entry = self.entry(&id)?;
        let m = entry.lock();
        check_producer(&id, &m, producer_id, epoch)?;
        if m.status != TxnStatus::Ongoing || !m.partitions.contains(tp) {
            return Err(txn_error(&id, TxnErrorKind::InvalidTxnState));
        }
        Ok(())
    }

    /// A partition refused a transactional batch of `producer_id` at `epoch`: when that
    /// producer has a transaction open at that epoch, it can only abort from now on.
    pub fn note_refused_batch(&self, producer_id: i64, epoch: i16) {
        let Some(id) = self.by_producer.lock().get(&producer_id).cloned() else {
            return;
        };
        let Ok(entry) = self.entry(&id) else {
            return;
        };
        let m = entry.lock();
        if m.status == TxnStatus::Ongoing && m.producer_id == producer_id && m.epoch == epoch {
            self.refused.lock().insert(producer_id, epoch);
        }
    }

    /// DescribeTransactions / ListTransactions: the state of one id, or of all.
    pub fn describe(&self, transactional_id: &str) -> Option<TxnMetadata> {
        let entry = self.txns.lock().get(transactional_id).cloned()?;
        let m = entry.lock().clone();
        Some(m)
    }

    pub fn list(&self) -> Vec<(String, TxnMetadata)> {
        let mut out: Vec<_> = self
            .entries()
            .into_iter()
            .map(|(id, e)| (id, e.lock().clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Prepare (durably), markers everywhere, complete. With `m.status` already the matching
    /// prepare state (a retry after a failed marker), the markers are written again.
    fn complete(&self, log: &Log, id: &str, m: &mut TxnMetadata, outcome: Outcome) -> Result<()> {
        let (prepare, done) = match outcome {
            Outcome::Commit => (TxnStatus::PrepareCommit, TxnStatus::CompleteCommit),
            Outcome::Abort => (TxnStatus::PrepareAbort, TxnStatus::CompleteAbort),
        };
        let sync = must_sync(log, &m.partitions);
        if m.status != prepare {
            m.status = prepare;
            m.last_update_ms = self.clock.now_ms();
            self.persist(id, m, sync)?;
        }
        for tp in &m.partitions {
            let partition = match log.partition(tp) {
                Ok(p) => p,
                // A deleted topic has nobody left to read its markers.
                Err(LogError::UnknownTopic(_) | LogError::UnknownPartition { .. }) => continue,
                Err(e) => return Err(e),
            };
            partition.write_marker(m.producer_id, m.epoch, outcome, 0)?;
            if tp.topic == CONSUMER_OFFSETS_TOPIC {
                log.groups().complete_transaction(m.producer_id, outcome);
            }
        }
        self.refused.lock().remove(&m.producer_id);
        m.status = done;
        m.partitions.clear();
        m.start_ms = -1;
        m.last_update_ms = self.clock.now_ms();
        self.persist(id, m, sync)
    }

    fn entry(&self, id: &str) -> Result<Entry> {
        self.txns
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| txn_error(id, TxnErrorKind::InvalidProducerIdMapping))
    }

    fn entries(&self) -> Vec<(String, Entry)> {
        self.txns
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Appends `m` to `__transaction_state` (flushed on an interval), synced first when `sync`.
    fn persist(&self, id: &str, m: &TxnMetadata, sync: bool) -> Result<()> {
        let p = self
            .state_partition
            .get()
            .expect("the state topic exists once a transactional id does");
        let mut b = crate::batch::BatchBuilder::new(128);
        b.push(
            now_ms(),
            Some(&state_log::encode_key(id)),
            Some(&state_log::encode_value(m)),
            &[],
        );
        p.append(b.finish())?;
        if sync {
            p.sync_now()?;
        }
        Ok(())
    }

    fn ensure_state_partition(&self, log: &Log) -> Result<()> {
        if self.state_partition.get().is_some() {
            return Ok(());
        }
        let topic = match log.topic(TRANSACTION_STATE_TOPIC) {
            Ok(t) => t,
            Err(_) => match log.create_topic(TRANSACTION_STATE_TOPIC, transaction_state_config()) {
                Ok(t) => t,
                Err(LogError::TopicExists(_)) => log.topic(TRANSACTION_STATE_TOPIC)?,
                Err(e) => return Err(e),
            },
        };
        let _ = self.state_partition.set(topic.partition(0)?);
        Ok(())
    }
}

/// Whether the coordinator's records of a transaction over `partitions` are synced before it
/// goes on: when any of them is `always` durable. Over `interval` topics a power loss may take
/// the last records of the partitions anyway, and with them these (a crash of the process
/// loses neither); partitions left with an open transaction the coordinator no longer knows
/// are aborted when the log is next opened ([`Log::open`]).
fn must_sync(log: &Log, partitions: &BTreeSet<TopicPartition>) -> bool {
    partitions.iter().any(|tp| {
        log.topic(&tp.topic)
            .map_or(true, |t| t.config().durability == Durability::Always)
    })
}

/// `__transaction_state`: compacted like the other internal topic, flushed on an interval, with
/// the records that must be durable synced by [`TransactionCoordinator::persist`].
fn transaction_state_config() -> TopicConfig {
    TopicConfig {
        durability: Durability::Interval,
        ..internal_topic_config()
    }
}

fn check_producer(id: &str, m: &TxnMetadata, producer_id: i64, epoch: i16) -> Result<()> {
    if producer_id != m.producer_id {
        return Err(txn_error(id, TxnErrorKind::InvalidProducerIdMapping));
    }
    // An older epoch is a fenced instance; Kafka answers a newer one the same way.
    if epoch != m.epoch {
        return Err(txn_error(id, TxnErrorKind::ProducerFenced));
    }
    Ok(())
}

fn txn_error(id: &str, kind: TxnErrorKind) -> LogError {
    LogError::Transaction {
        transactional_id: id.to_string(),
        kind,
    }
}
