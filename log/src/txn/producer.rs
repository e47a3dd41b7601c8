//! The embedded producer's transactions: [`Producer::init_transactions`],
//! [`Producer::begin_transaction`], [`Producer::send_offsets_to_transaction`],
//! [`Producer::commit_transaction`], [`Producer::abort_transaction`], as in Kafka's producer.
//!
//! Contract:
//! - A producer with a `transactional_id` sends only between `begin_transaction` and the end
//!   of that transaction; a send outside one fails at once.
//! - Batches are stamped with the producer id, epoch and per-partition sequences; a partition
//!   is added to the transaction (one coordinator call) before its first batch is appended.
//! - `commit_transaction` flushes, then commits: when it returns `Ok`, every record sent in
//!   the transaction and the offsets given to `send_offsets_to_transaction` are visible to
//!   `read_committed` readers, atomically. When the flush fails, nothing is committed and the
//!   caller aborts. `abort_transaction` flushes what is queued (it is written, then aborted).
//! - After a fencing error (another producer with the same id initialised, or the transaction
//!   timed out) every later call fails: the producer must be dropped.

use crate::batch::BatchBuilder;
use crate::consumer::blocking;
use crate::error::{LogError, Result, TxnErrorKind};
use crate::log::Log;
use crate::membership::GroupMetadata;
use crate::partition::Partition;
use crate::producer::Producer;
use crate::txn::marker::Outcome;
use crate::txn::producer_state::next_sequence;
use crate::types::TopicPartition;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A transactional producer's identity and the open transaction's bookkeeping.
pub(crate) struct TxnSession {
    id: String,
    timeout_ms: i32,
    in_transaction: AtomicBool,
    state: Mutex<SessionState>,
}

#[derive(Default)]
struct SessionState {
    /// (producer id, epoch) once initialised.
    producer: Option<(i64, i16)>,
    added: HashSet<TopicPartition>,
    /// Offsets were added to the transaction (EndTxn is needed even without records).
    offsets_added: bool,
    sequences: HashMap<TopicPartition, i32>,
    /// A fencing error: the producer is done.
    fatal: Option<String>,
}

impl TxnSession {
    pub(crate) fn new(id: String, timeout: Duration) -> Self {
        Self {
            id,
            timeout_ms: timeout.as_millis().min(i32::MAX as u128) as i32,
            in_transaction: AtomicBool::new(false),
            state: Mutex::new(SessionState::default()),
        }
    }

    /// Whether records may be sent now.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.in_transaction.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(self.state_error("no transaction is open: call begin_transaction before sending"))
    }

    /// Adds the partitions among `partitions` that are not in the transaction yet, in one
    /// coordinator call (one write of its state) for a whole burst of the sender. Blocking.
    pub(crate) fn add_partitions(&self, log: &Log, partitions: &[Arc<Partition>]) -> Result<()> {
        let mut st = self.state.lock();
        let (pid, epoch) = self.producer_id(&st)?;
        let new: Vec<TopicPartition> = partitions
            .iter()
            .map(|p| TopicPartition::new(&*p.topic, p.id))
            .filter(|tp| !st.added.contains(tp))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let added = log
            .transactions()
            .add_partitions(log, &self.id, pid, epoch, &new);
        self.note_fatal(&mut st, &added);
        added?;
        st.added.extend(new);
        Ok(())
    }

    /// Stamps and appends one partition's batches, adding the partition to the transaction
    /// first if [`add_partitions`](Self::add_partitions) has not. Called by the producer's
    /// sender thread. Blocking.
    pub(crate) fn append(
        &self,
        log: &Log,
        partition: &Arc<Partition>,
        builders: Vec<BatchBuilder>,
    ) -> Vec<Result<u64>> {
        let tp = TopicPartition::new(&*partition.topic, partition.id);
        let joined = self.add_partitions(log, std::slice::from_ref(partition));
        let mut st = self.state.lock();
        let prepared = joined.and_then(|()| self.producer_id(&st));
        let (pid, epoch) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let reason = e.to_string();
                return builders
                    .iter()
                    .map(|_| Err(LogError::InvalidConfig(reason.clone())))
                    .collect();
            }
        };
        let seq = st.sequences.entry(tp).or_insert(0);
        let batches: Vec<Vec<u8>> = builders
            .into_iter()
            .map(|b| {
                let count = b.len() as i32;
                let bytes = b.finish_transactional(pid, epoch, *seq);
                *seq = next_sequence(*seq, count);
                bytes
            })
            .collect();
        partition.append_from_producer(batches, false)
    }

    fn producer_id(&self, st: &SessionState) -> Result<(i64, i16)> {
        if let Some(reason) = &st.fatal {
            return Err(LogError::InvalidConfig(reason.clone()));
        }
        st.producer
            .ok_or_else(|| self.state_error("call init_transactions first"))
    }

    /// Remembers a fencing error: nothing this producer does can succeed after it.
    fn note_fatal<T>(&self, st: &mut SessionState, r: &Result<T>) {
        if let Err(
            e @ LogError::Transaction {
                kind: TxnErrorKind::ProducerFenced,
                ..
            },
        ) = r
        {
            st.fatal = Some(e.to_string());
        }
    }

    fn state_error(&self, why: &str) -> LogError {
        tracing::debug!(transactional_id = %self.id, why, "transaction call refused");
        LogError::Transaction {
            transactional_id: self.id.clone(),
            kind: TxnErrorKind::InvalidTxnState,
        }
    }
}

impl Producer {
    fn session(&self) -> Result<&TxnSession> {
        self.inner.txn.as_ref().ok_or_else(|| {
            LogError::InvalidConfig(
                "this producer has no transactional_id; set ProducerConfig::transactional_id"
                    .into(),
            )
        })
    }

    /// Registers the transactional id: gets its producer id and a new epoch, fencing any
    /// older producer with the same id and aborting a transaction it left open.
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidConfig`] without a `transactional_id`; [`LogError::Transaction`]
    /// with `InvalidTransactionTimeout` for a timeout out of range, `ConcurrentTransactions`
    /// while the id's previous transaction is still being completed (retry);
    /// [`LogError::Storage`] when `__transaction_state` cannot be written.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: the registration completes on a blocking thread; if dropped,
    /// call it again (a second registration fences the first).
    pub async fn init_transactions(&self) -> Result<()> {
        let session = self.session()?;
        let (log, id, timeout) = (
            self.inner.log.clone(),
            session.id.clone(),
            session.timeout_ms,
        );
        let ids = blocking(move || {
            log.transactions()
                .init_producer_id(&log, Some(&id), timeout)
        })
        .await?;
        let mut st = session.state.lock();
        *st = SessionState {
            producer: Some(ids),
            ..Default::default()
        };
        Ok(())
    }

    /// Starts a transaction: sends are allowed until it is committed or aborted.
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidConfig`] without a `transactional_id`; [`LogError::Transaction`]
    /// with `InvalidTxnState` before [`init_transactions`](Self::init_transactions) or while a
    /// transaction is open, `ProducerFenced` after a newer instance took the id.
    pub fn begin_transaction(&self) -> Result<()> {
        let session = self.session()?;
        session.producer_id(&session.state.lock())?;
        if session.in_transaction.swap(true, Ordering::AcqRel) {
            return Err(session.state_error("a transaction is already open"));
        }
        Ok(())
    }

    /// Commits `offsets` (the next offsets to read) of `group` as part of the open
    /// transaction: they become the group's committed offsets when it commits.
    ///
    /// # Errors
    ///
    /// [`LogError::Transaction`] outside an open transaction or when fenced;
    /// [`LogError::Group`] when the group refuses the commit; [`LogError::Storage`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped after the coordinator was asked, the transaction may have ended
    /// while this producer still counts it open. Call
    /// [`init_transactions`](Self::init_transactions) again, which aborts whatever is left.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, u64)],
        group: &GroupMetadata,
    ) -> Result<()> {
        let session = self.session()?;
        session.check_open()?;
        let (pid, epoch) = session.producer_id(&session.state.lock())?;
        let log = self.inner.log.clone();
        let (id, group) = (session.id.clone(), group.clone());
        let offsets: Vec<_> = offsets
            .iter()
            .map(|(tp, o)| (tp.clone(), *o, String::new()))
            .collect();
        let r = blocking(move || {
            let coordinator = log.transactions();
            let member = group.member();
            let name = &group.group_id;
            coordinator.add_offsets(&log, &id, pid, epoch, name)?;
            coordinator.txn_offset_commit(&log, &id, pid, epoch, name, member, &offsets)
        })
        .await;
        let mut st = session.state.lock();
        session.note_fatal(&mut st, &r);
        if r.is_ok() {
            st.offsets_added = true;
        }
        r
    }

    /// Flushes and commits the open transaction.
    ///
    /// # Errors
    ///
    /// [`LogError::Delivery`] when the flush failed (nothing is committed; abort, then go
    /// on); [`LogError::Transaction`] outside an open transaction, `ProducerFenced` when a
    /// newer instance took the id, `TransactionAbortable` after a failed send;
    /// [`LogError::Storage`] when a marker or the transaction's state cannot be written.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped after the coordinator was asked, the transaction may have ended
    /// while this producer still counts it open. Call
    /// [`init_transactions`](Self::init_transactions) again, which aborts whatever is left.
    pub async fn commit_transaction(&self) -> Result<()> {
        self.end_transaction(Outcome::Commit).await
    }

    /// Flushes what is queued and aborts the open transaction.
    ///
    /// # Errors
    ///
    /// As [`commit_transaction`](Self::commit_transaction), except that a failed flush does
    /// not stop the abort.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped after the coordinator was asked, the transaction may have ended
    /// while this producer still counts it open. Call
    /// [`init_transactions`](Self::init_transactions) again, which aborts whatever is left.
    pub async fn abort_transaction(&self) -> Result<()> {
        self.end_transaction(Outcome::Abort).await
    }

    async fn end_transaction(&self, outcome: Outcome) -> Result<()> {
        let session = self.session()?;
        session.check_open()?;
        let flushed = self.flush().await;
        if outcome == Outcome::Commit {
            flushed?;
        }
        let (pid, epoch, touched) = {
            let st = session.state.lock();
            let (pid, epoch) = session.producer_id(&st)?;
            (pid, epoch, !st.added.is_empty() || st.offsets_added)
        };
        // Nothing was added: the coordinator has no transaction to end (as Kafka's clients
        // skip EndTxn then).
        let r = if touched {
            let log = self.inner.log.clone();
            let id = session.id.clone();
            blocking(move || log.transactions().end_txn(&log, &id, pid, epoch, outcome)).await
        } else {
            Ok(())
        };
        let mut st = session.state.lock();
        session.note_fatal(&mut st, &r);
        if r.is_ok() {
            st.added.clear();
            st.offsets_added = false;
            session.in_transaction.store(false, Ordering::Release);
        }
        r
    }
}
