//! InitProducerId and the transactional APIs: AddPartitionsToTxn, AddOffsetsToTxn,
//! TxnOffsetCommit, EndTxn, DescribeTransactions, ListTransactions.
//!
//! Contract: every call goes to the log's transaction coordinator
//! ([`runnel_log::TransactionCoordinator`]), which owns the semantics (fencing by epoch,
//! markers, transactional offsets); this module maps requests and Kafka's error codes. The
//! coordinator blocks on fsyncs, so calls run off the async workers. FindCoordinator answers
//! transaction keys with this broker (see [`super::groups::find_coordinator`]).

use super::{blocking, str_bytes};
use crate::codes;
use crate::server::Broker;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use runnel_log::txn::coordinator::DEFAULT_TRANSACTION_TIMEOUT_MS;
use runnel_log::{TopicPartition, TxnOutcome};

pub(crate) async fn init_producer_id(
    b: &Broker,
    r: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let log = b.log.clone();
    let id = r.transactional_id.map(|t| t.0.to_string());
    let timeout = if r.transaction_timeout_ms > 0 {
        r.transaction_timeout_ms
    } else {
        DEFAULT_TRANSACTION_TIMEOUT_MS
    };
    let idempotent_bump = id.is_none() && r.producer_id.0 >= 0 && r.producer_epoch >= 0;
    let result = if idempotent_bump && r.producer_epoch < i16::MAX {
        // An idempotent producer re-initialising after a fatal sequence error keeps its id
        // with a new epoch.
        Ok((r.producer_id.0, r.producer_epoch + 1))
    } else {
        on_log(move || {
            log.transactions()
                .init_producer_id(&log, id.as_deref(), timeout)
        })
        .await
    };
    match result {
        Ok((pid, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
        Err(e) => InitProducerIdResponse::default()
            .with_error_code(codes::for_log_error(&e))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

pub(crate) async fn add_partitions(
    b: &Broker,
    r: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let requested: Vec<(TopicName, Vec<i32>)> = r
        .v3_and_below_topics
        .iter()
        .map(|t| (t.name.clone(), t.partitions.clone()))
        .collect();
    let partitions: Vec<TopicPartition> = requested
        .iter()
        .flat_map(|(name, ids)| {
            ids.iter()
                .map(|&id| TopicPartition::new(name.0.as_str(), id.max(0) as u32))
        })
        .collect();
    let log = b.log.clone();
    let id = r.v3_and_below_transactional_id.0.to_string();
    let (pid, epoch) = (r.v3_and_below_producer_id.0, r.v3_and_below_producer_epoch);
    let result = on_log(move || {
        log.transactions()
            .add_partitions(&log, &id, pid, epoch, &partitions)
    })
    .await;
    let error = error_code(&result);
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
        requested
            .into_iter()
            .map(|(name, ids)| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(name)
                    .with_results_by_partition(
                        ids.into_iter()
                            .map(|i| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(i)
                                    .with_partition_error_code(error)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

pub(crate) async fn add_offsets(b: &Broker, r: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let log = b.log.clone();
    let result = on_log(move || {
        log.transactions().add_offsets(
            &log,
            &r.transactional_id.0,
            r.producer_id.0,
            r.producer_epoch,
            &r.group_id.0,
        )
    })
    .await;
    AddOffsetsToTxnResponse::default().with_error_code(error_code(&result))
}

pub(crate) async fn txn_offset_commit(
    b: &Broker,
    r: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let offsets: Vec<(TopicPartition, u64, String)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    TopicPartition::new(t.name.0.as_str(), p.partition_index.max(0) as u32),
                    p.committed_offset.max(0) as u64,
                    p.committed_metadata
                        .as_ref()
                        .map_or(String::new(), |m| m.to_string()),
                )
            })
        })
        .collect();
    let log = b.log.clone();
    let req = r.clone();
    let result = on_log(move || {
        let member =
            (!req.member_id.is_empty()).then(|| (req.member_id.as_str(), req.generation_id));
        log.transactions().txn_offset_commit(
            &log,
            &req.transactional_id.0,
            req.producer_id.0,
            req.producer_epoch,
            &req.group_id.0,
            member,
            &offsets,
        )
    })
    .await;
    let error = error_code(&result);
    TxnOffsetCommitResponse::default().with_topics(
        r.topics
            .into_iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

pub(crate) async fn end_txn(b: &Broker, r: EndTxnRequest) -> EndTxnResponse {
    let log = b.log.clone();
    let outcome = if r.committed {
        TxnOutcome::Commit
    } else {
        TxnOutcome::Abort
    };
    let result = on_log(move || {
        log.transactions().end_txn(
            &log,
            &r.transactional_id.0,
            r.producer_id.0,
            r.producer_epoch,
            outcome,
        )
    })
    .await;
    EndTxnResponse::default().with_error_code(error_code(&result))
}

pub(crate) fn describe(b: &Broker, r: DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
    let coordinator = b.log.transactions();
    DescribeTransactionsResponse::default().with_transaction_states(
        r.transactional_ids
            .into_iter()
            .map(|id| {
                let base = TransactionState::default().with_transactional_id(id.clone());
                let Some(m) = coordinator.describe(&id.0) else {
                    return base.with_error_code(codes::TRANSACTIONAL_ID_NOT_FOUND);
                };
                let mut topics: Vec<TopicData> = Vec::new();
                for tp in &m.partitions {
                    match topics.last_mut().filter(|t| t.topic.0.as_str() == tp.topic) {
                        Some(t) => t.partitions.push(tp.partition as i32),
                        None => topics.push(
                            TopicData::default()
                                .with_topic(TopicName(str_bytes(tp.topic.clone())))
                                .with_partitions(vec![tp.partition as i32]),
                        ),
                    }
                }
                base.with_transaction_state(str_bytes(m.status.name().to_string()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.start_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.epoch)
                    .with_topics(topics)
            })
            .collect(),
    )
}

pub(crate) fn list(b: &Broker, r: ListTransactionsRequest) -> ListTransactionsResponse {
    use kafka_protocol::messages::list_transactions_response::TransactionState;
    let states: Vec<String> = r.state_filters.iter().map(|s| s.to_string()).collect();
    let pids: Vec<i64> = r.producer_id_filters.iter().map(|p| p.0).collect();
    ListTransactionsResponse::default().with_transaction_states(
        b.log
            .transactions()
            .list()
            .into_iter()
            .filter(|(_, m)| states.is_empty() || states.iter().any(|s| s == m.status.name()))
            .filter(|(_, m)| pids.is_empty() || pids.contains(&m.producer_id))
            .map(|(id, m)| {
                TransactionState::default()
                    .with_transactional_id(TransactionalId(str_bytes(id)))
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_transaction_state(str_bytes(m.status.name().to_string()))
            })
            .collect(),
    )
}

fn error_code<T>(r: &Result<T, runnel_log::LogError>) -> i16 {
    r.as_ref().err().map_or(codes::NONE, codes::for_log_error)
}

/// Runs a coordinator call off the async workers; a task that died is a server error.
async fn on_log<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, runnel_log::LogError> + Send + 'static,
) -> Result<T, runnel_log::LogError> {
    blocking(f)
        .await
        .unwrap_or_else(|e| Err(runnel_log::LogError::Protocol(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Broker, BrokerConfig};
    use bytes::Bytes;
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use runnel_log::batch::BatchBuilder;
    use runnel_log::{Log, TopicConfig};
    use std::sync::Arc;

    async fn broker(dir: &std::path::Path) -> (Log, Arc<Broker>) {
        let log = Log::open(dir).unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        let config = BrokerConfig {
            listeners: vec![crate::Listener::plaintext("127.0.0.1:0")],
            ..Default::default()
        };
        (log.clone(), Broker::bind(log, config).await.unwrap())
    }

    fn id(s: &str) -> TransactionalId {
        TransactionalId(str_bytes(s.to_string()))
    }

    async fn end(b: &Broker, txn: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
        let r = EndTxnRequest::default()
            .with_transactional_id(id(txn))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        end_txn(b, r).await.error_code
    }

    async fn produce_txn(b: &Broker, pid: i64, epoch: i16, seq: i32) -> i16 {
        let mut batch = BatchBuilder::new(256);
        batch.push(1, None, Some(b"x"), &[]);
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(str_bytes("t".to_string())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(Bytes::from(
                                batch.finish_transactional(pid, epoch, seq),
                            ))),
                    ]),
            ]);
        let resp = crate::api::produce::produce(b, req).await.unwrap();
        resp.responses[0].partition_responses[0].error_code
    }

    /// Bad transactional requests get Kafka's error codes and write nothing.
    #[tokio::test(flavor = "multi_thread")]
    async fn bad_transactional_requests_are_refused_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (log, b) = broker(dir.path()).await;
        let init = init_producer_id(
            &b,
            InitProducerIdRequest::default()
                .with_transactional_id(Some(id("app")))
                .with_transaction_timeout_ms(60_000),
        )
        .await;
        assert_eq!(init.error_code, codes::NONE);
        let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
        let end_offset = || {
            log.partition(&TopicPartition::new("t", 0))
                .unwrap()
                .high_watermark()
        };

        // EndTxn with no transaction open, for an unknown id, with a stale epoch.
        assert_eq!(
            end(&b, "app", pid, epoch, true).await,
            codes::INVALID_TXN_STATE
        );
        assert_eq!(
            end(&b, "nobody", pid, epoch, true).await,
            codes::INVALID_PRODUCER_ID_MAPPING
        );
        // A transactional batch for a partition the transaction did not add.
        assert_eq!(
            produce_txn(&b, pid, epoch, 0).await,
            codes::INVALID_TXN_STATE
        );
        assert_eq!(end_offset(), 0);

        // A second init fences the first epoch: its calls and its batches are refused.
        let again = init_producer_id(
            &b,
            InitProducerIdRequest::default()
                .with_transactional_id(Some(id("app")))
                .with_transaction_timeout_ms(60_000),
        )
        .await;
        assert_eq!(again.producer_epoch, epoch + 1);
        let add = |epoch: i16| {
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(id("app"))
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(str_bytes("t".to_string())))
                        .with_partitions(vec![0]),
                ])
        };
        let stale = add_partitions(&b, add(epoch)).await;
        let code =
            stale.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code;
        assert_eq!(code, codes::PRODUCER_FENCED);
        assert_eq!(
            end(&b, "app", pid, epoch, true).await,
            codes::PRODUCER_FENCED
        );
        assert_eq!(
            produce_txn(&b, pid, epoch, 0).await,
            codes::INVALID_PRODUCER_EPOCH
        );
        assert_eq!(end_offset(), 0, "nothing was written");

        // The current epoch works: add, produce, commit; a commit repeated is accepted, an
        // abort after it is not.
        let fresh = add_partitions(&b, add(epoch + 1)).await;
        let code =
            fresh.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code;
        assert_eq!(code, codes::NONE);
        assert_eq!(produce_txn(&b, pid, epoch + 1, 0).await, codes::NONE);
        assert_eq!(end(&b, "app", pid, epoch + 1, true).await, codes::NONE);
        assert_eq!(end(&b, "app", pid, epoch + 1, true).await, codes::NONE);
        assert_eq!(
            end(&b, "app", pid, epoch + 1, false).await,
            codes::INVALID_TXN_STATE
        );
        assert_eq!(end_offset(), 2, "the record and its commit marker");
    }
}
