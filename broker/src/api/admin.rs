//! Metadata, CreateTopics, DeleteTopics, DescribeConfigs: topics as Kafka clients see them.
//!
//! Contract:
//! - The broker is node 0, leader of every partition with itself as the only replica, and the
//!   controller; it advertises its own listen address.
//! - Metadata for a missing topic creates it (with `--default-partitions`) when the broker
//!   allows auto-creation and the request does (v4+), else answers UNKNOWN_TOPIC_OR_PARTITION.
//! - Topic configs use Kafka's names: `retention.ms`, `retention.bytes`, `cleanup.policy`,
//!   `segment.bytes`, `segment.ms`, `max.message.bytes`, `delete.retention.ms`, and for
//!   durability `flush.messages=1` (Runnel's `always`: acknowledged only after fdatasync) or
//!   `flush.ms=N` (`interval`), or Runnel's own `runnel.durability=always|interval|os`;
//!   `compression.type` (`producer`, `uncompressed`, `gzip`, `snappy`, `lz4`, `zstd`). Other
//!   Kafka configs (replication and the like) are accepted and ignored with a log line.

use super::str_bytes;
use crate::codes;
use crate::server::Broker;
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
use runnel_log::{CONSUMER_OFFSETS_TOPIC, CleanupPolicy, Durability, LogError, TopicConfig};

const NODE_ID: i32 = 0;
pub(crate) const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

pub(crate) async fn metadata(b: &Broker, r: MetadataRequest, version: i16) -> MetadataResponse {
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(str_bytes(b.advertised.ip().to_string()))
        .with_port(i32::from(b.advertised.port()));
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
        .map(|name| topic_metadata(b, &name, may_create))
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

/// `c` with the configs given by Kafka config names applied (a `None` value is skipped); see
/// the module documentation.
pub fn apply_configs(
    mut c: TopicConfig,
    configs: &[(String, Option<String>)],
) -> Result<TopicConfig, LogError> {
    for (name, value) in configs {
        let Some(value) = value.as_deref() else {
            continue;
        };
        let bad = || LogError::InvalidConfig(format!("{name}={value:?} is not valid"));
        let num = || value.parse::<i64>().map_err(|_| bad());
        let positive = || num().and_then(|n| u64::try_from(n).map_err(|_| bad()));
        match name.as_str() {
            "retention.ms" => c.retention_ms = u64::try_from(num()?).ok(),
            "retention.bytes" => c.retention_bytes = u64::try_from(num()?).ok(),
            "cleanup.policy" => {
                c.cleanup_policy = match value {
                    "delete" => CleanupPolicy::Delete,
                    "compact" => CleanupPolicy::Compact,
                    _ => return Err(bad()),
                }
            }
            "segment.bytes" => c.segment_bytes = positive()?,
            "segment.ms" => c.segment_ms = positive()?,
            "delete.retention.ms" => c.delete_retention_ms = positive()?,
            "max.message.bytes" => c.max_message_bytes = positive()? as usize,
            "flush.messages" if positive()? == 1 => c.durability = Durability::Always,
            "flush.messages" => {}
            "flush.ms" => {
                c.durability = Durability::Interval;
                c.flush_interval_ms = positive()?;
            }
            "runnel.durability" => c.durability = value.parse()?,
            "compression.type" => c.compression_type = value.parse()?,
            other => tracing::info!(config = other, "ignoring topic config Runnel does not use"),
        }
    }
    Ok(c)
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

/// The Kafka topic configs that mean the same in Kafka and in Runnel, for `c`. Shared by
/// DescribeConfigs and by the client's CreateTopics.
pub(crate) fn kafka_topic_configs(c: &TopicConfig) -> Vec<(&'static str, String)> {
    let opt = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
    vec![
        ("retention.ms", opt(c.retention_ms)),
        ("retention.bytes", opt(c.retention_bytes)),
        (
            "cleanup.policy",
            match c.cleanup_policy {
                CleanupPolicy::Delete => "delete",
                CleanupPolicy::Compact => "compact",
            }
            .to_string(),
        ),
        ("segment.bytes", c.segment_bytes.to_string()),
        ("segment.ms", c.segment_ms.to_string()),
        ("delete.retention.ms", c.delete_retention_ms.to_string()),
        ("max.message.bytes", c.max_message_bytes.to_string()),
        ("compression.type", c.compression_type.to_string()),
    ]
}

fn describe_topic_config(c: &TopicConfig) -> Vec<(&'static str, String)> {
    let mut v = kafka_topic_configs(c);
    v.push(("flush.ms", c.flush_interval_ms.to_string()));
    v.push(("runnel.durability", c.durability.to_string()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_config_names_map_to_topic_config() {
        let cfg = |pairs: &[(&str, &str)]| {
            let v: Vec<(String, Option<String>)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                .collect();
            let base = TopicConfig {
                partitions: 3,
                ..Default::default()
            };
            apply_configs(base, &v)
        };
        let c = cfg(&[
            ("flush.messages", "1"),
            ("retention.ms", "-1"),
            ("cleanup.policy", "compact"),
            ("min.insync.replicas", "2"),
            ("compression.type", "zstd"),
        ])
        .unwrap();
        assert_eq!(c.compression_type, runnel_log::CompressionType::Zstd);
        assert_eq!(c.partitions, 3);
        assert_eq!(c.durability, Durability::Always);
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.cleanup_policy, CleanupPolicy::Compact);
        assert!(cfg(&[("segment.bytes", "-5")]).is_err());
        assert!(cfg(&[("cleanup.policy", "shred")]).is_err());
        assert_eq!(
            cfg(&[("runnel.durability", "os")]).unwrap().durability,
            Durability::Os
        );
    }
}
