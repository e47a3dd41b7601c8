//! The remote producer's transactions, over Kafka's transactional APIs.
//!
//! Contract (as the embedded producer's, `runnel_log::txn`):
//! - `init_transactions` sends InitProducerId with the `transactional.id` to the transaction
//!   coordinator (FindCoordinator, key type 1, once: kept until it answers NOT_COORDINATOR);
//!   the producer id and epoch it returns stamp every batch, with per-partition sequences
//!   from 0.
//! - Records are sent only inside a transaction. Before the sender first sends a batch to a
//!   partition in a transaction it adds the partition (AddPartitionsToTxn).
//! - `send_offsets_to_transaction` is AddOffsetsToTxn then TxnOffsetCommit to the group's
//!   coordinator; `commit_transaction`/`abort_transaction` flush, then EndTxn.
//! - A fencing error (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH) is fatal: every later call
//!   fails with it.

use super::cluster::Cluster;
use super::conn::kafka_error;
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
use runnel_log::{LogError, TopicPartition};
use std::collections::{BTreeMap, HashSet};
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

    /// Adds the partitions of `batches` not yet in the transaction (called by the sender).
    pub async fn add_partitions(
        &self,
        cluster: &Cluster,
        partitions: &[(Arc<str>, u32)],
    ) -> Result<(), LogError> {
        let (pid, epoch) = self.producer()?;
        let new: Vec<(Arc<str>, u32)> = {
            let st = self.state.lock();
            let mut seen = HashSet::new();
            partitions
                .iter()
                .filter(|p| !st.added.contains(*p) && seen.insert((*p).clone()))
                .cloned()
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in &new {
            by_topic.entry(t).or_default().push(*p as i32);
        }
        let conn = self.coordinator(cluster).await?;
        let v = conn.version(ApiKey::AddPartitionsToTxn, (0, 3))?;
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
        let resp = conn.send(req, v).await?;
        let code = resp
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| &t.results_by_partition)
            .map(|p| p.partition_error_code)
            .find(|&c| c != codes::NONE)
            .unwrap_or(resp.error_code);
        self.settle("AddPartitionsToTxn", code)?;
        self.state.lock().added.extend(new);
        Ok(())
    }

    pub async fn send_offsets(
        &self,
        cluster: &Cluster,
        offsets: &[(TopicPartition, u64)],
        group: &str,
    ) -> Result<(), LogError> {
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
            .with_generation_id(-1)
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

    /// EndTxn, once the caller has flushed; skipped when nothing was added (as Kafka's
    /// clients do: the coordinator has no transaction then).
    pub async fn end(&self, cluster: &Cluster, commit: bool) -> Result<(), LogError> {
        self.check_open()?;
        let (pid, epoch) = self.producer()?;
        let touched = {
            let st = self.state.lock();
            !st.added.is_empty() || st.offsets_added
        };
        if touched {
            let conn = self.coordinator(cluster).await?;
            let v = conn.version(ApiKey::EndTxn, (0, 3))?;
            let req = EndTxnRequest::default()
                .with_transactional_id(TransactionalId(str_bytes(self.id.clone())))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_committed(commit);
            let resp = conn.send(req, v).await?;
            self.settle("EndTxn", resp.error_code)?;
        }
        let mut st = self.state.lock();
        st.added.clear();
        st.offsets_added = false;
        self.in_transaction.store(false, Ordering::Release);
        Ok(())
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
