//! Metadata, CreateTopics, DeleteTopics, DescribeConfigs: topics as Kafka clients see them.
//!
//! Contract:
//! - The broker is node 0, leader of every partition with itself as the only replica, and the
//!   controller; it advertises its own listen address.
//! - Metadata for a missing topic creates it (with `--default-partitions`) when the broker
//!   allows auto-creation and the request does (v4+), else answers UNKNOWN_TOPIC_OR_PARTITION.
//! - Topic configs use Kafka's names, mapped as [`crate::topic_configs`] says.

use super::str_bytes;
use crate::codes;
use crate::server::{Broker, ListenerInfo};
use crate::topic_configs::{apply_configs, kafka_topic_configs};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use runnel_log::{CONSUMER_OFFSETS_TOPIC, LogError, TopicConfig};

const NODE_ID: i32 = 0;
pub(crate) const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

pub(crate) async fn metadata(
    b: &Broker,
    listener: &ListenerInfo,
    r: MetadataRequest,
    version: i16,
    may_create_topic: &(dyn Fn(&str) -> bool + Sync),
) -> MetadataResponse {
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(str_bytes(listener.advertised_host.clone()))
        .with_port(listener.advertised_port);
    // v0 asks for every topic with an empty list; v1+ with a null one.
    let requested: Option<Vec<String>> = match r.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .filter_map(|t| t.name.map(|n| n.0.to_string()))
                .collect(),
        ),
    };
    let may_create = b.config.auto_create_topics && (version < 4 || r.allow_auto_topic_creation);
    let names = requested.unwrap_or_else(|| {
        let mut all = b.log.topic_names();
        all.sort();
        all
    });
    let topics = names
        .into_iter()
        .map(|name| topic_metadata(b, &name, may_create && may_create_topic(&name)))
        .collect();
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(str_bytes("runnel")))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics)
}

fn topic_metadata(b: &Broker, name: &str, may_create: bool) -> MetadataResponseTopic {
    let base = MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(name))))
        .with_is_internal(name == CONSUMER_OFFSETS_TOPIC);
    let topic = match b.log.topic(name) {
        Err(LogError::UnknownTopic(_)) if may_create => auto_create(b, name),
        other => other,
    };
    match topic {
        Ok(t) => base.with_partitions(
            (0..t.partition_count() as i32)
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p)
                        .with_leader_id(BrokerId(NODE_ID))
                        .with_leader_epoch(0)
                        .with_replica_nodes(vec![BrokerId(NODE_ID)])
                        .with_isr_nodes(vec![BrokerId(NODE_ID)])
                })
                .collect(),
        ),
        Err(e) => base.with_error_code(codes::for_log_error(&e)),
    }
}

/// Creates `name` with the broker's defaults; a concurrent creation by someone else is fine.
pub(crate) fn auto_create(
    b: &Broker,
    name: &str,
) -> Result<std::sync::Arc<runnel_log::Topic>, LogError> {
    let config = TopicConfig {
        partitions: b.config.default_partitions,
        ..Default::default()
    };
    match b.log.create_topic(name, config) {
        Ok(t) => {
            tracing::info!(
                topic = name,
                partitions = b.config.default_partitions,
                "auto-created topic"
            );
            Ok(t)
        }
        Err(LogError::TopicExists(_)) => b.log.topic(name),
        Err(e) => Err(e),
    }
}

pub(crate) fn create_topics(b: &Broker, r: CreateTopicsRequest) -> CreateTopicsResponse {
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let result = CreatableTopicResult::default().with_name(t.name);
            let partitions = match t.num_partitions {
                -1 => b.config.default_partitions,
                n if n > 0 => n as u32,
                n => {
                    return result
                        .with_error_code(codes::INVALID_PARTITIONS)
                        .with_error_message(Some(str_bytes(format!(
                            "num_partitions {n}: use at least 1 (or -1 for the broker default)"
                        ))));
                }
            };
            let configs: Vec<(String, Option<String>)> = t
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect();
            let base = TopicConfig {
                partitions,
                ..Default::default()
            };
            let outcome = apply_configs(base, &configs).and_then(|config| {
                config.validate()?;
                if r.validate_only {
                    runnel_log::config::validate_topic_name(&name)?;
                    return match b.log.topic(&name) {
                        Ok(_) => Err(LogError::TopicExists(name.clone())),
                        Err(_) => Ok(()),
                    };
                }
                b.log.create_topic(&name, config).map(|_| ())
            });
            match outcome {
                Ok(()) => {
                    tracing::info!(topic = %name, partitions, "created topic");
                    result
                        .with_num_partitions(partitions as i32)
                        .with_replication_factor(1)
                }
                Err(e) => result
                    .with_error_code(codes::for_log_error(&e))
                    .with_error_message(Some(str_bytes(e.to_string()))),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub(crate) fn delete_topics(b: &Broker, r: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let responses = r
        .topic_names
        .into_iter()
        .map(|name| {
            let result = DeletableTopicResult::default().with_name(Some(name.clone()));
            match b.log.delete_topic(&name.0) {
                Ok(()) => {
                    tracing::info!(topic = %name.0.as_str(), "deleted topic");
                    result
                }
                Err(e) => result
                    .with_error_code(codes::for_log_error(&e))
                    .with_error_message(Some(str_bytes(e.to_string()))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(crate) fn describe_configs(b: &Broker, r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = r
        .resources
        .into_iter()
        .map(|res| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let configs: Vec<(&str, String)> = match res.resource_type {
                RESOURCE_TOPIC => match b.log.topic(&res.resource_name) {
                    Ok(t) => describe_topic_config(&t.config()),
                    Err(e) => {
                        return result
                            .with_error_code(codes::for_log_error(&e))
                            .with_error_message(Some(str_bytes(e.to_string())));
                    }
                },
                RESOURCE_BROKER => vec![
                    (
                        "auto.create.topics.enable",
                        b.config.auto_create_topics.to_string(),
                    ),
                    ("num.partitions", b.config.default_partitions.to_string()),
                ],
                other => {
                    return result
                        .with_error_code(codes::INVALID_REQUEST)
                        .with_error_message(Some(str_bytes(format!(
                            "resource type {other} is not a topic (2) or broker (4)"
                        ))));
                }
            };
            let wanted = res.configuration_keys;
            result.with_configs(
                configs
                    .into_iter()
                    .filter(|(k, _)| {
                        wanted
                            .as_ref()
                            .is_none_or(|w| w.iter().any(|x| x.as_str() == *k))
                    })
                    .map(|(k, v)| {
                        DescribeConfigsResourceResult::default()
                            .with_name(str_bytes(k))
                            .with_value(Some(str_bytes(v)))
                            .with_read_only(true)
                            .with_config_source(5) // DEFAULT_CONFIG
                    })
                    .collect(),
            )
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe_topic_config(c: &TopicConfig) -> Vec<(&'static str, String)> {
    let mut v = kafka_topic_configs(c);
    v.push(("flush.ms", c.flush_interval_ms.to_string()));
    v.push(("runnel.durability", c.durability.to_string()));
    v
}
