//! The remote producer's transactions, over Kafka's transactional APIs.
//!
//! Contract (as the embedded producer's, `runnel_log::txn`):
//! - `init_transactions` sends InitProducerId with the `transactional.id` to the transaction
//!   coordinator (FindCoordinator, key type 1, once: kept until it answers NOT_COORDINATOR);
//!   the producer id and epoch it returns stamp every batch, with per-partition sequences
//!   from 0.
//! - Records are sent only inside a transaction. Before the sender first sends a batch to a
//!   partition in a transaction it adds the partition (AddPartitionsToTxn). When the partition's
//!   leader is the coordinator, the Produce follows on the same connection without waiting for
//!   the answer (the broker handles them in order and refuses a batch for a partition not
//!   added); elsewhere it waits.
//! - `send_offsets_to_transaction` is AddOffsetsToTxn then TxnOffsetCommit to the group's
//!   coordinator; `commit_transaction`/`abort_transaction` flush, then EndTxn. A commit whose
//!   batches were all written to the coordinator's own connection sends EndTxn as soon as
//!   they are written, not after their answers: the broker handles them in order and refuses
//!   to commit a transaction a partition refused a batch of (TRANSACTION_ABORTABLE). A
//!   transaction with a batch not stored can only abort.
//! - A fencing error (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH) is fatal: every later call
//!   fails with it.

use super::cluster::Cluster;
use super::conn::{Connection, kafka_error};
use super::str_bytes;
use crate::codes;
use crate::error::BrokerError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use parking_lot::Mutex;
use runnel_log::{GroupMetadata, LogError, TopicPartition};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A transactional producer's session with its coordinator.
pub(crate) struct RemoteTxn {
    pub id: String,
    timeout_ms: i32,
    in_transaction: AtomicBool,
    state: Mutex<TxnState>,
    /// The coordinator's address, found once and kept until it answers that it no longer is
    /// the coordinator (as Kafka's clients do): not a FindCoordinator round trip per call.
    coordinator_addr: Mutex<Option<String>>,
}

#[derive(Default)]
struct TxnState {
    producer: Option<(i64, i16)>,
    added: HashSet<(Arc<str>, u32)>,
    offsets_added: bool,
    fatal: Option<String>,
    /// Why a batch of the open transaction was not stored: it can only abort.
    doomed: Option<String>,
    route: Route,
}

/// Where the open transaction's batches were written.
#[derive(Default)]
enum Route {
    #[default]
    Nowhere,
    /// All of them to this one connection.
    One(Arc<Connection>),
    /// To several connections, or one was not written at all.
    Elsewhere,
}

/// An AddPartitionsToTxn written to the coordinator and not yet answered.
pub(crate) struct Joining {
    /// The coordinator's address: a Produce to the same address is handled after it.
    pub coordinator: String,
    new: Vec<(Arc<str>, u32)>,
    answer: Pin<Box<dyn Future<Output = Result<AddPartitionsToTxnResponse, BrokerError>> + Send>>,
}

impl Joining {
    /// Waits for the coordinator's answer: the partitions joined the transaction, or the error
    /// (and they count as not added).
    pub async fn settle(self, txn: &RemoteTxn) -> Result<(), LogError> {
        let code = match self.answer.await {
            Ok(resp) => resp
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code)
                .find(|&c| c != codes::NONE)
                .unwrap_or(resp.error_code),
            Err(e) => {
                txn.forget_added(&self.new);
                return Err(e.into());
            }
        };
        let settled = txn.settle("AddPartitionsToTxn", code);
        if settled.is_err() {
            txn.forget_added(&self.new);
        }
        settled
    }
}

impl RemoteTxn {
    pub fn new(id: String, timeout: std::time::Duration) -> Self {
        Self {
            id,
            timeout_ms: timeout.as_millis().min(i32::MAX as u128) as i32,
            in_transaction: AtomicBool::new(false),
            state: Mutex::default(),
            coordinator_addr: Mutex::default(),
        }
    }

    pub fn check_open(&self) -> Result<(), LogError> {
        if self.in_transaction.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(state_error(&self.id))
    }

    /// The producer id and epoch, once initialised and not fenced.
    pub fn producer(&self) -> Result<(i64, i16), LogError> {
        let st = self.state.lock();
        if let Some(reason) = &st.fatal {
            return Err(LogError::InvalidConfig(reason.clone()));
        }
        st.producer.ok_or_else(|| state_error(&self.id))
    }

    /// The coordinator of this transactional id.
    async fn coordinator(
        &self,
        cluster: &Cluster,
    ) -> Result<Arc<super::conn::Connection>, BrokerError> {
        let cached = self.coordinator_addr.lock().clone();
        if let Some(addr) = cached {
            return cluster.conn_to(&addr).await;
        }
        let conn = cluster.any().await?;
        let v = conn.version(ApiKey::FindCoordinator, (0, 4))?;
        let req = if v >= 4 {
            FindCoordinatorRequest::default()
                .with_key_type(1)
                .with_coordinator_keys(vec![str_bytes(self.id.clone())])
        } else {
            FindCoordinatorRequest::default()
                .with_key_type(1)
                .with_key(str_bytes(self.id.clone()))
        };
        let resp = conn.send(req, v).await?;
        let (code, host, port) = match resp.coordinators.first() {
            Some(c) => (c.error_code, c.host.to_string(), c.port),
            None => (resp.error_code, resp.host.to_string(), resp.port),
        };
        if code != codes::NONE {
            return Err(kafka_error("FindCoordinator", code, &self.id));
        }
        let addr = format!("{host}:{port}");
        *self.coordinator_addr.lock() = Some(addr.clone());
        cluster.conn_to(&addr).await
    }

    /// Forgets the coordinator when `code` says it moved, so that the next call finds it.
    fn forget_moved_coordinator(&self, code: i16) {
        if matches!(
            code,
            codes::NOT_COORDINATOR | codes::COORDINATOR_NOT_AVAILABLE
        ) {
            *self.coordinator_addr.lock() = None;
        }
    }

    pub async fn init(&self, cluster: &Cluster) -> Result<(), LogError> {
        let conn = self.coordinator(cluster).await?;
        let v = conn.version(ApiKey::InitProducerId, (0, 4))?;
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(str_bytes(self.id.clone()))))
            .with_transaction_timeout_ms(self.timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let resp = conn.send(req, v).await?;
        if resp.error_code != codes::NONE {
            self.forget_moved_coordinator(resp.error_code);
            return Err(kafka_error("InitProducerId", resp.error_code, &self.id).into());
        }
        *self.state.lock() = TxnState {
            producer: Some((resp.producer_id.0, resp.producer_epoch)),
            ..Default::default()
        };
        Ok(())
    }

    pub fn begin(&self) -> Result<(), LogError> {
        self.producer()?;
        if self.in_transaction.swap(true, Ordering::AcqRel) {
            return Err(state_error(&self.id));
        }
        Ok(())
    }

    /// Sends AddPartitionsToTxn for the partitions of `partitions` not yet in the transaction
    /// (called by the sender) and returns without waiting for the answer: `None` when every
    /// partition was already added. The partitions count as added from now on, so that later
    /// batches do not add them again; [`Joining::settle`] takes them back if the coordinator
    /// refuses. A caller whose Produce goes to the coordinator's own connection may write it
    /// before the answer arrives: the broker handles a connection's requests in order (and
    /// refuses a transactional batch for a partition the transaction has not added), which
    /// saves one round trip per transaction.
    pub async fn start_add_partitions(
        &self,
        cluster: &Cluster,
        partitions: &[(Arc<str>, u32)],
    ) -> Result<Option<Joining>, LogError> {
        let (pid, epoch) = self.producer()?;
        let new: Vec<(Arc<str>, u32)> = {
            let mut st = self.state.lock();
            partitions
                .iter()
                .filter(|p| st.added.insert((*p).clone()))
                .cloned()
                .collect()
        };
        if new.is_empty() {
            return Ok(None);
        }
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in &new {
            by_topic.entry(t).or_default().push(*p as i32);
        }
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(str_bytes(self.id.clone())))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(str_bytes(t.to_string())))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let started = async {
            let conn = self.coordinator(cluster).await?;
            let v = conn.version(ApiKey::AddPartitionsToTxn, (0, 3))?;
            let answer = conn.start(req, v).await?;
            Ok::<_, BrokerError>((conn.addr.clone(), answer))
        };
        match started.await {
            Ok((coordinator, answer)) => Ok(Some(Joining {
                coordinator,
                new,
                answer: Box::pin(answer),
            })),
            Err(e) => {
                self.forget_added(&new);
                Err(e.into())
            }
        }
    }

    fn forget_added(&self, partitions: &[(Arc<str>, u32)]) {
        let mut st = self.state.lock();
        for p in partitions {
            st.added.remove(p);
        }
    }

    pub async fn send_offsets(
        &self,
        cluster: &Cluster,
        offsets: &[(TopicPartition, u64)],
        metadata: &GroupMetadata,
    ) -> Result<(), LogError> {
        let group = metadata.group_id.as_str();
        self.check_open()?;
        let (pid, epoch) = self.producer()?;
        let conn = self.coordinator(cluster).await?;
        let v = conn.version(ApiKey::AddOffsetsToTxn, (0, 3))?;
        let req = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(str_bytes(self.id.clone())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(str_bytes(group.to_string())));
        let resp = conn.send(req, v).await?;
        self.settle("AddOffsetsToTxn", resp.error_code)?;
        self.state.lock().offsets_added = true;
        let group_conn = cluster.coordinator(group).await?;
        // Version 3 carries the member and generation that fence a zombie member.
        let v = group_conn.version(ApiKey::TxnOffsetCommit, (0, 3))?;
        let mut by_topic: BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, offset) in offsets {
            by_topic.entry(&tp.topic).or_default().push(
                TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition as i32)
                    .with_committed_offset(*offset as i64)
                    .with_committed_leader_epoch(-1),
            );
        }
        let req = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(str_bytes(self.id.clone())))
            .with_group_id(GroupId(str_bytes(group.to_string())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(metadata.generation)
            .with_member_id(str_bytes(metadata.member_id.clone()))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        TxnOffsetCommitRequestTopic::default()
                            .with_name(TopicName(str_bytes(t.to_string())))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let resp = group_conn.send(req, v).await?;
        let code = resp
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.error_code)
            .find(|&c| c != codes::NONE)
            .unwrap_or(codes::NONE);
        self.settle("TxnOffsetCommit", code)
    }

    /// A batch of the open transaction was written to `conn` (called by the sender, in the
    /// order the batches are written).
    pub fn note_written(&self, conn: &Arc<Connection>) {
        let mut st = self.state.lock();
        st.route = match std::mem::take(&mut st.route) {
            Route::Nowhere => Route::One(conn.clone()),
            Route::One(c) if Arc::ptr_eq(&c, conn) => Route::One(c),
            _ => Route::Elsewhere,
        };
    }

    /// A batch of the open transaction was not stored (or not written): the transaction can
    /// only abort, and an EndTxn may not be sent behind its batches.
    pub fn note_failed(&self, cause: &str) {
        let mut st = self.state.lock();
        st.doomed.get_or_insert_with(|| cause.to_string());
        st.route = Route::Elsewhere;
    }

    /// When every batch of the transaction was written to the coordinator's connection and
    /// is still there, writes EndTxn (commit) behind them without waiting for their answers,
    /// and returns the future of its outcome: the broker handles the connection's requests in
    /// order and refuses to commit a transaction a partition refused a batch of. `None`: the
    /// caller must wait for the batches, then [`end`](Self::end).
    pub async fn start_commit_behind_batches(
        &self,
    ) -> Result<Option<impl Future<Output = Result<(), LogError>> + '_>, LogError> {
        self.check_open()?;
        let conn = match &self.state.lock().route {
            Route::One(c) if !c.is_closed() => c.clone(),
            _ => return Ok(None),
        };
        if self.coordinator_addr.lock().as_deref() != Some(conn.addr.as_str()) {
            return Ok(None);
        }
        let (req, v) = self.end_request(&conn, true)?;
        let answer = conn.start(req, v).await?;
        Ok(Some(async move {
            let resp = answer.await?;
            self.settle("EndTxn", resp.error_code)?;
            self.finish();
            Ok(())
        }))
    }

    /// EndTxn, once the caller has flushed; skipped when nothing was added (as Kafka's
    /// clients do: the coordinator has no transaction then). A commit of a transaction one of
    /// whose batches was not stored fails without asking.
    pub async fn end(&self, cluster: &Cluster, commit: bool) -> Result<(), LogError> {
        self.check_open()?;
        let touched = {
            let st = self.state.lock();
            if commit && let Some(cause) = &st.doomed {
                return Err(LogError::Transaction {
                    transactional_id: format!("{} ({cause})", self.id),
                    kind: runnel_log::error::TxnErrorKind::TransactionAbortable,
                });
            }
            !st.added.is_empty() || st.offsets_added
        };
        if touched {
            let conn = self.coordinator(cluster).await?;
            let (req, v) = self.end_request(&conn, commit)?;
            let resp = conn.send(req, v).await?;
            self.settle("EndTxn", resp.error_code)?;
        }
        self.finish();
        Ok(())
    }

    fn end_request(
        &self,
        conn: &Connection,
        commit: bool,
    ) -> Result<(EndTxnRequest, i16), LogError> {
        let (pid, epoch) = self.producer()?;
        let v = conn.version(ApiKey::EndTxn, (0, 3))?;
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(str_bytes(self.id.clone())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        Ok((req, v))
    }

    /// The transaction is over: the next one starts with nothing added.
    fn finish(&self) {
        let mut st = self.state.lock();
        st.added.clear();
        st.offsets_added = false;
        st.doomed = None;
        st.route = Route::Nowhere;
        self.in_transaction.store(false, Ordering::Release);
    }

    /// An error for a non-zero code; fencing codes make the session fatal.
    fn settle(&self, api: &'static str, code: i16) -> Result<(), LogError> {
        if code == codes::NONE {
            return Ok(());
        }
        self.forget_moved_coordinator(code);
        let e: LogError = kafka_error(api, code, &self.id).into();
        if matches!(code, codes::PRODUCER_FENCED | codes::INVALID_PRODUCER_EPOCH) {
            self.state.lock().fatal = Some(e.to_string());
        }
        Err(e)
    }
}

fn state_error(id: &str) -> LogError {
    LogError::Transaction {
        transactional_id: id.to_string(),
        kind: runnel_log::error::TxnErrorKind::InvalidTxnState,
    }
}
