//! Authorization of each API with the broker's ACLs, in Kafka's way: topics (and groups,
//! transactional ids) the principal may not touch are taken out of the request before it is
//! handled, and answered with Kafka's authorization error code in the response; the others
//! are served as usual.
//!
//! Contract: [`take_denied`] removes the refused topics of a request and returns them with
//! their partitions; [`deny_topics!`] puts them back into the response with an error code. An
//! API about one group or transactional id is refused whole (GROUP_/TRANSACTIONAL_ID_
//! AUTHORIZATION_FAILED) before its handler runs. Without a security file nothing is refused.

use super::sasl::Session;
use crate::security::acl::Operation;
use crate::server::Broker;

/// A refused topic and the partitions it was asked for.
pub(crate) type DeniedTopic = (String, Vec<i32>);

/// Removes from `topics` those not `allowed`; returns them.
pub(crate) fn take_denied<T>(
    b: &Broker,
    topics: &mut Vec<T>,
    allowed: impl Fn(&str) -> bool,
    name: impl Fn(&T) -> String,
    partitions: impl Fn(&T) -> Vec<i32>,
) -> Vec<DeniedTopic> {
    if b.security.is_none() {
        return Vec::new();
    }
    let mut denied = Vec::new();
    topics.retain(|t| {
        let n = name(t);
        if allowed(&n) {
            true
        } else {
            denied.push((n, partitions(t)));
            false
        }
    });
    denied
}

/// Appends a topic entry per refused topic to a response's topic list, each partition with
/// `code`: `deny_topics!(resp.topics, denied, code, TopicType.name_field, PartitionType.
/// partitions_field, partition_index_field, error_code_field)`.
macro_rules! deny_topics {
    ($list:expr, $denied:expr, $code:expr, $Topic:ty, $name:ident, $Part:ty, $parts:ident, $index:ident, $error:ident) => {
        for (name, indexes) in $denied {
            let mut topic = <$Topic>::default();
            topic.$name = kafka_protocol::messages::TopicName(super::str_bytes(name));
            topic.$parts = indexes
                .into_iter()
                .map(|i| {
                    let mut p = <$Part>::default();
                    p.$index = i;
                    p.$error = $code;
                    p
                })
                .collect();
            $list.push(topic);
        }
    };
}

/// Whether the session may `op` on the transactional id (none: nothing to check).
pub(crate) fn may_txn(b: &Broker, s: &Session, op: Operation, id: Option<&str>) -> bool {
    id.is_none_or(|id| {
        s.may(
            b,
            op,
            crate::security::acl::ResourceType::TransactionalId,
            id,
        )
    })
}

use super::{admin, cluster_admin, fetch, groups, produce, str_bytes, txn};
use crate::codes::{
    CLUSTER_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
};
use crate::security::acl::Operation::{
    AlterConfigs, Create, Delete, Describe, DescribeConfigs, Read, Write,
};
use kafka_protocol::messages::*;

const OPERATION_NOT_ATTEMPTED: i16 = 55;

/// GROUP_AUTHORIZATION_FAILED when the session may not `op` the group.
pub(crate) fn group_denied(b: &Broker, s: &Session, op: Operation, group: &str) -> Option<i16> {
    (!s.may_group(b, op, group)).then_some(GROUP_AUTHORIZATION_FAILED)
}

/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED when the session may not write the transactional id.
pub(crate) fn txn_denied(b: &Broker, s: &Session, id: &str) -> Option<i16> {
    (!may_txn(b, s, Write, Some(id))).then_some(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
}

fn may_create(b: &Broker, s: &Session, topic: &str) -> bool {
    s.may_cluster(b, Create) || s.may_topic(b, Create, topic)
}

pub(crate) async fn produce(
    b: &Broker,
    s: &Session,
    mut r: ProduceRequest,
) -> Option<ProduceResponse> {
    let txn_refused = r
        .transactional_id
        .as_ref()
        .and_then(|id| txn_denied(b, s, &id.0));
    let denied = take_denied(
        b,
        &mut r.topic_data,
        |t| txn_refused.is_none() && s.may_topic(b, Write, t),
        |t| t.name.0.to_string(),
        |t| t.partition_data.iter().map(|p| p.index).collect(),
    );
    let code = txn_refused.unwrap_or(TOPIC_AUTHORIZATION_FAILED);
    let mut resp = produce::produce(b, r).await?;
    use produce_response::{PartitionProduceResponse, TopicProduceResponse};
    deny_topics!(
        resp.responses,
        denied,
        code,
        TopicProduceResponse,
        name,
        PartitionProduceResponse,
        partition_responses,
        index,
        error_code
    );
    Some(resp)
}

pub(crate) async fn fetch(
    b: &Broker,
    s: &Session,
    mut r: FetchRequest,
    version: i16,
) -> (FetchResponse, super::parts::FileRecords) {
    let denied = take_denied(
        b,
        &mut r.topics,
        |t| s.may_topic(b, Read, t),
        |t| t.topic.0.to_string(),
        |t| t.partitions.iter().map(|p| p.partition).collect(),
    );
    let (mut resp, files) = fetch::fetch(b, r, version).await;
    use fetch_response::{FetchableTopicResponse, PartitionData};
    deny_topics!(
        resp.responses,
        denied,
        TOPIC_AUTHORIZATION_FAILED,
        FetchableTopicResponse,
        topic,
        PartitionData,
        partitions,
        partition_index,
        error_code
    );
    (resp, files)
}

pub(crate) async fn list_offsets(
    b: &Broker,
    s: &Session,
    mut r: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let denied = take_denied(
        b,
        &mut r.topics,
        |t| s.may_topic(b, Describe, t),
        |t| t.name.0.to_string(),
        |t| t.partitions.iter().map(|p| p.partition_index).collect(),
    );
    let mut resp = fetch::list_offsets(b, r, version).await;
    use list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
    deny_topics!(
        resp.topics,
        denied,
        TOPIC_AUTHORIZATION_FAILED,
        ListOffsetsTopicResponse,
        name,
        ListOffsetsPartitionResponse,
        partitions,
        partition_index,
        error_code
    );
    resp
}

pub(crate) async fn metadata(
    b: &Broker,
    s: &Session,
    mut r: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let mut denied = Vec::new();
    if let Some(topics) = r.topics.as_mut() {
        topics.retain(|t| match &t.name {
            Some(n) if !s.may_topic(b, Describe, &n.0) => {
                denied.push(n.clone());
                false
            }
            _ => true,
        });
    }
    let mut resp = admin::metadata(b, &s.listener, r, version, &|t| may_create(b, s, t)).await;
    if b.security.is_some() {
        // Listing every topic shows only those the principal may describe.
        resp.topics.retain(|t| {
            t.name
                .as_ref()
                .is_none_or(|n| s.may_topic(b, Describe, &n.0))
        });
    }
    for name in denied {
        resp.topics.push(
            metadata_response::MetadataResponseTopic::default()
                .with_name(Some(name))
                .with_error_code(TOPIC_AUTHORIZATION_FAILED),
        );
    }
    resp
}

pub(crate) fn create_topics(
    b: &Broker,
    s: &Session,
    mut r: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let denied = if s.may_cluster(b, Create) {
        Vec::new()
    } else {
        take_denied(
            b,
            &mut r.topics,
            |t| s.may_topic(b, Create, t),
            |t| t.name.0.to_string(),
            |_| Vec::new(),
        )
    };
    let mut resp = admin::create_topics(b, r);
    for (name, _) in denied {
        resp.topics.push(
            create_topics_response::CreatableTopicResult::default()
                .with_name(TopicName(str_bytes(name)))
                .with_error_code(TOPIC_AUTHORIZATION_FAILED),
        );
    }
    resp
}

pub(crate) fn delete_topics(
    b: &Broker,
    s: &Session,
    mut r: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let denied = take_denied(
        b,
        &mut r.topic_names,
        |t| s.may_topic(b, Delete, t),
        |t| t.0.to_string(),
        |_| Vec::new(),
    );
    let mut resp = admin::delete_topics(b, r);
    for (name, _) in denied {
        resp.responses.push(
            delete_topics_response::DeletableTopicResult::default()
                .with_name(Some(TopicName(str_bytes(name))))
                .with_error_code(TOPIC_AUTHORIZATION_FAILED),
        );
    }
    resp
}

pub(crate) fn create_partitions(
    b: &Broker,
    s: &Session,
    mut r: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let denied = take_denied(
        b,
        &mut r.topics,
        |t| s.may_topic(b, Operation::Alter, t),
        |t| t.name.0.to_string(),
        |_| Vec::new(),
    );
    let mut resp = cluster_admin::create_partitions(b, r);
    for (name, _) in denied {
        resp.results.push(
            create_partitions_response::CreatePartitionsTopicResult::default()
                .with_name(TopicName(str_bytes(name)))
                .with_error_code(TOPIC_AUTHORIZATION_FAILED),
        );
    }
    resp
}

/// Whether a config resource (Kafka's resource type 2: topic, 4: broker) may be `op`-ed;
/// the refusal code if not.
fn config_denied(b: &Broker, s: &Session, op: Operation, kind: i8, name: &str) -> Option<i16> {
    if kind == admin::RESOURCE_TOPIC {
        (!s.may_topic(b, op, name)).then_some(TOPIC_AUTHORIZATION_FAILED)
    } else {
        (!s.may_cluster(b, op)).then_some(CLUSTER_AUTHORIZATION_FAILED)
    }
}

/// Takes the config resources the session may not `$op` out of `$resources` and returns a
/// `$Refusal` (a response entry with the error code) for each.
macro_rules! take_denied_configs {
    ($b:expr, $s:expr, $op:expr, $resources:expr, $Refusal:ty) => {{
        let mut denied = Vec::new();
        $resources.retain(|c| {
            let code = config_denied($b, $s, $op, c.resource_type, &c.resource_name);
            if let Some(code) = code {
                denied.push(
                    <$Refusal>::default()
                        .with_error_code(code)
                        .with_resource_type(c.resource_type)
                        .with_resource_name(c.resource_name.clone()),
                );
            }
            code.is_none()
        });
        denied
    }};
}

pub(crate) fn describe_configs(
    b: &Broker,
    s: &Session,
    mut r: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    use describe_configs_response::DescribeConfigsResult as Refusal;
    let denied = take_denied_configs!(b, s, DescribeConfigs, r.resources, Refusal);
    let mut resp = admin::describe_configs(b, r);
    resp.results.extend(denied);
    resp
}

pub(crate) fn alter_configs(
    b: &Broker,
    s: &Session,
    mut r: AlterConfigsRequest,
) -> AlterConfigsResponse {
    use alter_configs_response::AlterConfigsResourceResponse as Refusal;
    let denied = take_denied_configs!(b, s, AlterConfigs, r.resources, Refusal);
    let mut resp = cluster_admin::alter_configs(b, r);
    resp.responses.extend(denied);
    resp
}

pub(crate) fn incremental_alter_configs(
    b: &Broker,
    s: &Session,
    mut r: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use incremental_alter_configs_response::AlterConfigsResourceResponse as Refusal;
    let denied = take_denied_configs!(b, s, AlterConfigs, r.resources, Refusal);
    let mut resp = cluster_admin::incremental_alter_configs(b, r);
    resp.responses.extend(denied);
    resp
}

pub(crate) fn describe_cluster(b: &Broker, s: &Session) -> DescribeClusterResponse {
    if s.may_cluster(b, Describe) {
        cluster_admin::describe_cluster(&s.listener)
    } else {
        DescribeClusterResponse::default().with_error_code(CLUSTER_AUTHORIZATION_FAILED)
    }
}

pub(crate) async fn delete_records(
    b: &Broker,
    s: &Session,
    mut r: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let denied = take_denied(
        b,
        &mut r.topics,
        |t| s.may_topic(b, Delete, t),
        |t| t.name.0.to_string(),
        |t| t.partitions.iter().map(|p| p.partition_index).collect(),
    );
    let mut resp = cluster_admin::delete_records(b, r).await;
    use delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
    deny_topics!(
        resp.topics,
        denied,
        TOPIC_AUTHORIZATION_FAILED,
        DeleteRecordsTopicResult,
        name,
        DeleteRecordsPartitionResult,
        partitions,
        partition_index,
        error_code
    );
    resp
}

pub(crate) async fn init_producer_id(
    b: &Broker,
    s: &Session,
    r: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let refused = match &r.transactional_id {
        Some(id) => txn_denied(b, s, &id.0),
        // Kafka 3's rule: an idempotent producer needs WRITE on some topic.
        None => b
            .security
            .as_ref()
            .filter(|f| !f.may_write_somewhere(&s.principal))
            .map(|_| CLUSTER_AUTHORIZATION_FAILED),
    };
    match refused {
        Some(code) => InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
        None => txn::init_producer_id(b, r).await,
    }
}

pub(crate) async fn add_partitions_to_txn(
    b: &Broker,
    s: &Session,
    mut r: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let txn_refused = txn_denied(b, s, &r.v3_and_below_transactional_id.0);
    let denied = take_denied(
        b,
        &mut r.v3_and_below_topics,
        |t| txn_refused.is_none() && s.may_topic(b, Write, t),
        |t| t.name.0.to_string(),
        |t| t.partitions.clone(),
    );
    if denied.is_empty() {
        return txn::add_partitions(b, r).await;
    }
    // As Kafka: nothing is added when any partition is refused.
    let code = txn_refused.unwrap_or(TOPIC_AUTHORIZATION_FAILED);
    let not_attempted = r
        .v3_and_below_topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.partitions.clone()));
    let mut results = Vec::new();
    use add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
    };
    deny_topics!(
        results,
        denied,
        code,
        AddPartitionsToTxnTopicResult,
        name,
        AddPartitionsToTxnPartitionResult,
        results_by_partition,
        partition_index,
        partition_error_code
    );
    deny_topics!(
        results,
        not_attempted,
        OPERATION_NOT_ATTEMPTED,
        AddPartitionsToTxnTopicResult,
        name,
        AddPartitionsToTxnPartitionResult,
        results_by_partition,
        partition_index,
        partition_error_code
    );
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

pub(crate) async fn txn_offset_commit(
    b: &Broker,
    s: &Session,
    mut r: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let whole =
        txn_denied(b, s, &r.transactional_id.0).or_else(|| group_denied(b, s, Read, &r.group_id.0));
    let denied = take_denied(
        b,
        &mut r.topics,
        |t| whole.is_none() && s.may_topic(b, Read, t),
        |t| t.name.0.to_string(),
        |t| t.partitions.iter().map(|p| p.partition_index).collect(),
    );
    let mut resp = if whole.is_some() {
        TxnOffsetCommitResponse::default()
    } else {
        txn::txn_offset_commit(b, r).await
    };
    use txn_offset_commit_response::{
        TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
    };
    let code = whole.unwrap_or(TOPIC_AUTHORIZATION_FAILED);
    deny_topics!(
        resp.topics,
        denied,
        code,
        TxnOffsetCommitResponseTopic,
        name,
        TxnOffsetCommitResponsePartition,
        partitions,
        partition_index,
        error_code
    );
    resp
}

pub(crate) fn describe_transactions(
    b: &Broker,
    s: &Session,
    mut r: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut denied = Vec::new();
    r.transactional_ids.retain(|id| {
        let ok = may_txn(b, s, Describe, Some(&id.0));
        if !ok {
            denied.push(
                describe_transactions_response::TransactionState::default()
                    .with_transactional_id(id.clone())
                    .with_error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
            );
        }
        ok
    });
    let mut resp = txn::describe(b, r);
    resp.transaction_states.extend(denied);
    resp
}

pub(crate) fn list_transactions(
    b: &Broker,
    s: &Session,
    r: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut resp = txn::list(b, r);
    resp.transaction_states
        .retain(|t| may_txn(b, s, Describe, Some(&t.transactional_id.0)));
    resp
}

pub(crate) fn find_coordinator(
    b: &Broker,
    s: &Session,
    r: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let key_type = r.key_type;
    let refused = |key: &str| match key_type {
        0 => (!s.may_group(b, Describe, key)).then_some(GROUP_AUTHORIZATION_FAILED),
        _ => (!may_txn(b, s, Describe, Some(key))).then_some(TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
    };
    let single = refused(&r.key);
    let mut resp = groups::find_coordinator(&s.listener, r, version);
    for c in &mut resp.coordinators {
        if let Some(code) = refused(&c.key) {
            c.error_code = code;
        }
    }
    if version < 4
        && let Some(code) = single
    {
        resp.error_code = code;
    }
    resp
}

pub(crate) async fn offset_commit(
    b: &Broker,
    s: &Session,
    mut r: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let whole = group_denied(b, s, Read, &r.group_id.0);
    let denied = take_denied(
        b,
        &mut r.topics,
        |t| whole.is_none() && s.may_topic(b, Read, t),
        |t| t.name.0.to_string(),
        |t| t.partitions.iter().map(|p| p.partition_index).collect(),
    );
    let mut resp = if whole.is_some() {
        OffsetCommitResponse::default()
    } else {
        groups::offset_commit(b, r).await
    };
    use offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
    let code = whole.unwrap_or(TOPIC_AUTHORIZATION_FAILED);
    deny_topics!(
        resp.topics,
        denied,
        code,
        OffsetCommitResponseTopic,
        name,
        OffsetCommitResponsePartition,
        partitions,
        partition_index,
        error_code
    );
    resp
}

pub(crate) fn offset_fetch(
    b: &Broker,
    s: &Session,
    mut r: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if let Some(code) = group_denied(b, s, Describe, &r.group_id.0) {
        return OffsetFetchResponse::default().with_error_code(code);
    }
    let denied = match r.topics.as_mut() {
        Some(topics) => take_denied(
            b,
            topics,
            |t| s.may_topic(b, Describe, t),
            |t| t.name.0.to_string(),
            |t| t.partition_indexes.clone(),
        ),
        None => Vec::new(),
    };
    let mut resp = groups::offset_fetch(b, r);
    if b.security.is_some() {
        resp.topics.retain(|t| s.may_topic(b, Describe, &t.name.0));
    }
    use offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
    deny_topics!(
        resp.topics,
        denied,
        TOPIC_AUTHORIZATION_FAILED,
        OffsetFetchResponseTopic,
        name,
        OffsetFetchResponsePartition,
        partitions,
        partition_index,
        error_code
    );
    resp
}

pub(crate) fn describe_groups(
    b: &Broker,
    s: &Session,
    mut r: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut denied = Vec::new();
    r.groups.retain(|g| {
        let ok = s.may_group(b, Describe, &g.0);
        if !ok {
            denied.push(
                describe_groups_response::DescribedGroup::default()
                    .with_group_id(g.clone())
                    .with_error_code(GROUP_AUTHORIZATION_FAILED),
            );
        }
        ok
    });
    let mut resp = groups::describe_groups(b, r);
    resp.groups.extend(denied);
    resp
}

pub(crate) fn list_groups(b: &Broker, s: &Session, r: ListGroupsRequest) -> ListGroupsResponse {
    let mut resp = groups::list_groups(b, r);
    if !s.may_cluster(b, Describe) {
        resp.groups
            .retain(|g| s.may_group(b, Describe, &g.group_id.0));
    }
    resp
}

pub(crate) async fn offset_delete(
    b: &Broker,
    s: &Session,
    mut r: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    if let Some(code) = group_denied(b, s, Delete, &r.group_id.0) {
        return OffsetDeleteResponse::default().with_error_code(code);
    }
    let denied = take_denied(
        b,
        &mut r.topics,
        |t| s.may_topic(b, Read, t),
        |t| t.name.0.to_string(),
        |t| t.partitions.iter().map(|p| p.partition_index).collect(),
    );
    let mut resp = groups::offset_delete(b, r).await;
    use offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
    deny_topics!(
        resp.topics,
        denied,
        TOPIC_AUTHORIZATION_FAILED,
        OffsetDeleteResponseTopic,
        name,
        OffsetDeleteResponsePartition,
        partitions,
        partition_index,
        error_code
    );
    resp
}
