//! CreatePartitions, AlterConfigs, IncrementalAlterConfigs, DescribeCluster and DeleteRecords:
//! the admin calls
//! Kafka's tools and AdminClients make besides creating and deleting topics.
//!
//! Contract:
//! - CreatePartitions grows a topic to `count` partitions (never shrinks it: keyed data would
//!   move); replica assignments are ignored, the broker being the only replica. `validate_only`
//!   checks without changing anything.
//! - AlterConfigs replaces a topic's configs (unnamed ones go back to their defaults);
//!   IncrementalAlterConfigs sets (0) or deletes (1, back to the default) single configs, and
//!   refuses APPEND and SUBTRACT (2, 3: no Runnel topic config is a list) with INVALID_CONFIG.
//!   Both take Kafka's names (see [`super::admin`]), store the new config in the data
//!   directory, and refuse broker resources. A stored config is what new partitions, the
//!   embedded producer's codec and DescribeConfigs use at once; partitions already open keep
//!   theirs (retention, segment sizes, durability, the broker's recompression) until the broker
//!   restarts, which the response's error message says (with error code NONE).
//! - DescribeCluster answers with this one node (id 0), also the controller, at the address
//!   advertised for the listener the client came in on.
//! - DeleteRecords moves each partition's log start offset forward (offset -1: to the high
//!   watermark); see [`runnel_log::Partition::delete_records_before`].

use super::admin::RESOURCE_TOPIC;
use super::str_bytes;
use crate::codes;
use crate::server::Broker;
use crate::server::ListenerInfo;
use crate::topic_configs::{apply_configs, kafka_topic_configs};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, BrokerId, CreatePartitionsRequest,
    CreatePartitionsResponse, DeleteRecordsRequest, DeleteRecordsResponse, DescribeClusterResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use runnel_log::{LogError, TopicConfig};

pub(crate) fn create_partitions(
    b: &Broker,
    r: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = r
        .topics
        .into_iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let outcome = u32::try_from(t.count)
                .map_err(|_| LogError::InvalidConfig(format!("{} partitions", t.count)))
                .and_then(|count| {
                    if r.validate_only {
                        let current = b.log.topic(&t.name)?.partition_count();
                        if count <= current {
                            return Err(LogError::InvalidConfig(format!(
                                "topic {:?} already has {current} partitions; the new count must be larger",
                                t.name.as_str()
                            )));
                        }
                        return Ok(());
                    }
                    b.log.add_partitions(&t.name, count)
                });
            match outcome {
                Ok(()) => {
                    tracing::info!(topic = %t.name.as_str(), partitions = t.count, "added partitions");
                    result
                }
                Err(e) => result
                    .with_error_code(match e {
                        LogError::InvalidConfig(_) => codes::INVALID_PARTITIONS,
                        ref other => codes::for_log_error(other),
                    })
                    .with_error_message(Some(str_bytes(e.to_string()))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// What an alter request asks for one resource, in both APIs' terms.
struct Alter {
    resource_type: i8,
    name: StrBytes,
    /// (config name, operation, value): operation 0 sets, 1 deletes.
    configs: Vec<(String, i8, Option<String>)>,
    /// AlterConfigs: configs not named go back to their defaults.
    replace: bool,
}

/// (error code, message) for one resource; NONE carries the note about open partitions.
fn alter(b: &Broker, a: &Alter, validate_only: bool) -> (i16, String) {
    if a.resource_type != RESOURCE_TOPIC {
        return (
            codes::INVALID_REQUEST,
            format!(
                "resource type {}: only topic configs (2) can be altered on Runnel's broker",
                a.resource_type
            ),
        );
    }
    let outcome = b.log.topic(&a.name).and_then(|topic| {
        let current = topic.config();
        let base = if a.replace {
            TopicConfig {
                partitions: current.partitions,
                ..Default::default()
            }
        } else {
            current
        };
        let defaults = kafka_topic_configs(&TopicConfig::default());
        let mut sets = Vec::new();
        for (name, op, value) in &a.configs {
            let value = match op {
                0 => value.clone(),
                1 => defaults
                    .iter()
                    .find(|(k, _)| *k == name.as_str())
                    .map(|(_, v)| v.clone()),
                other => {
                    return Err(LogError::InvalidConfig(format!(
                        "config operation {other} on {name}: only SET (0) and DELETE (1) apply to Runnel's topic configs"
                    )));
                }
            };
            sets.push((name.clone(), value));
        }
        let config = apply_configs(base, &sets)?;
        config.validate()?;
        if validate_only {
            return Ok(());
        }
        b.log.alter_topic_config(&a.name, config)
    });
    match outcome {
        Ok(()) => {
            tracing::info!(topic = %a.name.as_str(), configs = ?a.configs, "altered topic config");
            (
                codes::NONE,
                "stored; partitions already open apply it after the broker restarts".into(),
            )
        }
        Err(e) => (codes::for_log_error(&e), e.to_string()),
    }
}

/// The two alter APIs answer each resource with their own type of the same shape.
macro_rules! resource_responses {
    ($ty:ty, $outcomes:expr) => {
        $outcomes
            .into_iter()
            .map(|(kind, name, code, message)| {
                <$ty>::default()
                    .with_resource_type(kind)
                    .with_resource_name(name)
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(message)))
            })
            .collect()
    };
}

/// The outcome of each resource of an alter request: (type, name, error code, message).
fn alter_each(
    b: &Broker,
    alters: Vec<Alter>,
    validate_only: bool,
) -> Vec<(i8, StrBytes, i16, String)> {
    alters
        .into_iter()
        .map(|a| {
            let (code, message) = alter(b, &a, validate_only);
            (a.resource_type, a.name, code, message)
        })
        .collect()
}

pub(crate) fn alter_configs(b: &Broker, r: AlterConfigsRequest) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let alters = r
        .resources
        .into_iter()
        .map(|res| Alter {
            resource_type: res.resource_type,
            name: res.resource_name,
            configs: res
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        0,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                })
                .collect(),
            replace: true,
        })
        .collect();
    let responses = resource_responses!(
        AlterConfigsResourceResponse,
        alter_each(b, alters, r.validate_only)
    );
    AlterConfigsResponse::default().with_responses(responses)
}

pub(crate) fn incremental_alter_configs(
    b: &Broker,
    r: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let alters = r
        .resources
        .into_iter()
        .map(|res| Alter {
            resource_type: res.resource_type,
            name: res.resource_name,
            configs: res
                .configs
                .iter()
                .map(|c| {
                    let value = c.value.as_ref().map(|v| v.to_string());
                    (c.name.to_string(), c.config_operation, value)
                })
                .collect(),
            replace: false,
        })
        .collect();
    let responses = resource_responses!(
        AlterConfigsResourceResponse,
        alter_each(b, alters, r.validate_only)
    );
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

pub(crate) fn describe_cluster(listener: &ListenerInfo) -> DescribeClusterResponse {
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes("runnel"))
        .with_controller_id(BrokerId(0))
        .with_endpoint_type(1)
        .with_cluster_authorized_operations(i32::MIN)
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(0))
                .with_host(str_bytes(listener.advertised_host.clone()))
                .with_port(listener.advertised_port),
        ])
}

pub(crate) async fn delete_records(b: &Broker, r: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::new();
    for t in r.topics {
        let name = t.name.0.to_string();
        let mut partitions = Vec::new();
        for p in t.partitions {
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let partition = u32::try_from(p.partition_index)
                .map_err(|_| LogError::UnknownTopic(name.clone()))
                .and_then(|id| b.log.partition(&runnel_log::TopicPartition::new(&name, id)));
            let deleted = match partition {
                Ok(part) => {
                    let offset = p.offset;
                    super::blocking(move || {
                        let to = if offset < 0 {
                            part.high_watermark()
                        } else {
                            offset as u64
                        };
                        part.delete_records_before(to)
                    })
                    .await
                    .unwrap_or(Err(LogError::Closed))
                }
                Err(e) => Err(e),
            };
            partitions.push(match deleted {
                Ok(start) => result.with_low_watermark(start as i64),
                Err(e) => result.with_error_code(codes::for_log_error(&e)),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
