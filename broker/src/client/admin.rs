//! Admin calls of [`RemoteLog`] beyond the log traits, for `runnel --bootstrap topics ...` and
//! `groups ...`: Kafka's AdminClient requests, against Runnel's broker or a Kafka cluster.
//!
//! Contract: every call is one request kind sent to any broker (group calls to the group's
//! coordinator), retried as the other admin calls are ([`RETRY_FOR`]); a Kafka error comes
//! back as [`BrokerError::Kafka`] with the broker's message. Topic configs travel with Kafka's
//! names and are read back into a [`TopicConfig`] as Runnel's broker maps them (names Runnel
//! does not use are ignored), so a description from Kafka shows what Runnel would do.

use super::cluster::RETRY_FOR;
use super::conn::kafka_error;
use super::{RemoteLog, str_bytes};
use crate::error::BrokerError;
use crate::topic_configs::apply_configs;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::*;
use runnel_log::{LogError, TopicConfig, TopicPartition};

/// A Kafka error code with the broker's message, as the error of `api`.
fn refused(
    api: &'static str,
    code: i16,
    message: Option<kafka_protocol::protocol::StrBytes>,
) -> BrokerError {
    kafka_error(
        api,
        code,
        &message.map(|m| m.to_string()).unwrap_or_default(),
    )
}

/// Kafka's ConfigResource type of a topic.
const RESOURCE_TOPIC: i8 = 2;

/// A consumer group as DescribeGroups and OffsetFetch show it.
#[derive(Debug, Clone)]
pub struct RemoteGroup {
    pub state: String,
    /// (member id, client id, client host, assignment bytes)
    pub members: Vec<(String, String, String, bytes::Bytes)>,
    /// Committed offsets, by partition.
    pub offsets: Vec<(TopicPartition, u64)>,
}

impl RemoteLog {
    /// Creates `name`; an existing topic is an error ([`LogError::TopicExists`]).
    ///
    /// # Errors
    ///
    /// Retried for 30 s on connection loss and Kafka's retriable codes, then:
    /// - `BrokerError::Log(LogError::TopicExists)` if the topic exists (also when an earlier attempt
    ///   of this call created it and its answer was lost);
    /// - `BrokerError::Kafka` with CreateTopics' code and message (an invalid name, partition count
    ///   or config);
    /// - `BrokerError::Connect` / `BrokerError::Io` if no broker can be reached;
    /// - `BrokerError::Unsupported` if the broker serves no CreateTopics version 2–5;
    /// - `BrokerError::Malformed` on a response that cannot be decoded.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once the request is written the broker creates the topic whether or not
    /// the answer is awaited, so a dropped call may have created it. If it is dropped while its
    /// request is half written, the admin connection fails for the requests after it.
    pub async fn create_new_topic(
        &self,
        name: &str,
        config: &TopicConfig,
    ) -> Result<(), BrokerError> {
        let created = self
            .cluster
            .retry("CreateTopics", RETRY_FOR, || {
                self.create_topic(name, config)
            })
            .await?;
        if !created {
            return Err(LogError::TopicExists(name.to_string()).into());
        }
        Ok(())
    }

    /// Every topic's name and partition count (Metadata for all topics).
    ///
    /// # Errors
    ///
    /// Retried for 30 s on connection loss and Kafka's retriable codes, then
    /// `BrokerError::Connect` / `BrokerError::Io` if no broker can be reached,
    /// `BrokerError::Unsupported` if it serves no Metadata version 1–12, or
    /// `BrokerError::Malformed` on a response that cannot be decoded. Topics the broker answers
    /// with an error are left out, not an error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read-only. If it is dropped while its request is half written, the admin
    /// connection fails for the requests after it.
    pub async fn topics(&self) -> Result<Vec<(String, u32)>, BrokerError> {
        self.cluster
            .retry("Metadata", RETRY_FOR, || async {
                let conn = self.cluster.any().await?;
                let v = conn.version(ApiKey::Metadata, (1, 12))?;
                let resp = conn
                    .send(MetadataRequest::default().with_topics(None), v)
                    .await?;
                let mut out: Vec<(String, u32)> = resp
                    .topics
                    .into_iter()
                    .filter(|t| t.error_code == 0)
                    .filter_map(|t| Some((t.name?.0.to_string(), t.partitions.len() as u32)))
                    .collect();
                out.sort();
                Ok(out)
            })
            .await
    }

    /// The config of topic `name` as Runnel reads Kafka's names (DescribeConfigs).
    ///
    /// # Errors
    ///
    /// Retried for 30 s on connection loss and Kafka's retriable codes, then:
    /// - `BrokerError::Log(LogError::UnknownTopic)` if `name` does not exist;
    /// - `BrokerError::Kafka` with Metadata's or DescribeConfigs' code and message;
    /// - `BrokerError::Log(LogError::InvalidConfig)` if a config Runnel uses has a value it cannot
    ///   read;
    /// - `BrokerError::Connect` / `BrokerError::Io`, `BrokerError::Unsupported` and
    ///   `BrokerError::Malformed` as [`RemoteLog::topics`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read-only. The partial-frame caveat of [`RemoteLog::topics`] applies.
    pub async fn topic_config(&self, name: &str) -> Result<TopicConfig, BrokerError> {
        let partitions = self
            .partition_counts(&[name.to_string()])
            .await?
            .get(name)
            .copied()
            .flatten()
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        let pairs = self
            .cluster
            .retry("DescribeConfigs", RETRY_FOR, || async {
                let conn = self.cluster.any().await?;
                let v = conn.version(ApiKey::DescribeConfigs, (1, 4))?;
                let req = DescribeConfigsRequest::default().with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(str_bytes(name))
                        .with_configuration_keys(None),
                ]);
                let resp = conn.send(req, v).await?;
                let mut pairs = Vec::new();
                for r in resp.results {
                    if r.error_code != 0 {
                        return Err(refused("DescribeConfigs", r.error_code, r.error_message));
                    }
                    for c in r.configs {
                        pairs.push((c.name.to_string(), c.value.map(|v| v.to_string())));
                    }
                }
                Ok(pairs)
            })
            .await?;
        let base = TopicConfig {
            partitions,
            ..Default::default()
        };
        Ok(apply_configs(base, &pairs)?)
    }

    /// Grows topic `name` to `total` partitions (CreatePartitions).
    ///
    /// # Errors
    ///
    /// Retried for 30 s on connection loss and Kafka's retriable codes, then:
    /// - `BrokerError::Kafka` with CreatePartitions' code and message (an unknown topic, or `total`
    ///   not above the current count);
    /// - `BrokerError::Connect` / `BrokerError::Io` if no broker can be reached;
    /// - `BrokerError::Unsupported` if the broker serves no CreatePartitions version 0–3;
    /// - `BrokerError::Malformed` on a response that cannot be decoded.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once the request is written the broker adds the partitions whether or not
    /// the answer is awaited. If it is dropped while its request is half written, the admin
    /// connection fails for the requests after it.
    pub async fn add_partitions(&self, name: &str, total: u32) -> Result<(), BrokerError> {
        self.cluster
            .retry("CreatePartitions", RETRY_FOR, || async {
                let conn = self.cluster.any().await?;
                let v = conn.version(ApiKey::CreatePartitions, (0, 3))?;
                let req = CreatePartitionsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![
                        CreatePartitionsTopic::default()
                            .with_name(TopicName(str_bytes(name)))
                            .with_count(total as i32),
                    ]);
                for r in conn.send(req, v).await?.results {
                    if r.error_code != 0 {
                        return Err(refused("CreatePartitions", r.error_code, r.error_message));
                    }
                }
                Ok(())
            })
            .await
    }

    /// Sets (or with `None` resets to the default) topic configs by Kafka name
    /// (IncrementalAlterConfigs); returns the broker's note (Runnel's says when it applies).
    ///
    /// # Errors
    ///
    /// Retried for 30 s on connection loss and Kafka's retriable codes, then:
    /// - `BrokerError::Kafka` with IncrementalAlterConfigs' code and message (an unknown topic, an
    ///   invalid name or value);
    /// - `BrokerError::Connect` / `BrokerError::Io` if no broker can be reached;
    /// - `BrokerError::Unsupported` if the broker serves no IncrementalAlterConfigs version 0–1;
    /// - `BrokerError::Malformed` on a response that cannot be decoded.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once the request is written the broker applies the change whether or not
    /// the answer is awaited. If it is dropped while its request is half written, the admin
    /// connection fails for the requests after it.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        configs: &[(String, Option<String>)],
    ) -> Result<String, BrokerError> {
        self.cluster
            .retry("IncrementalAlterConfigs", RETRY_FOR, || async {
                let conn = self.cluster.any().await?;
                let v = conn.version(ApiKey::IncrementalAlterConfigs, (0, 1))?;
                let alters = configs
                    .iter()
                    .map(|(k, val)| {
                        AlterableConfig::default()
                            .with_name(str_bytes(k.clone()))
                            .with_config_operation(if val.is_some() { 0 } else { 1 })
                            .with_value(val.clone().map(str_bytes))
                    })
                    .collect();
                let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(str_bytes(name))
                        .with_configs(alters),
                ]);
                let mut note = String::new();
                for r in conn.send(req, v).await?.responses {
                    let msg = r.error_message.map(|m| m.to_string()).unwrap_or_default();
                    if r.error_code != 0 {
                        return Err(kafka_error("IncrementalAlterConfigs", r.error_code, &msg));
                    }
                    note = msg;
                }
                Ok(note)
            })
            .await
    }

    /// Deletes topic `name` and its data (DeleteTopics).
    ///
    /// # Errors
    ///
    /// Retried for 30 s on connection loss and Kafka's retriable codes, then:
    /// - `BrokerError::Log(LogError::UnknownTopic)` if `name` does not exist (also when an earlier
    ///   attempt of this call deleted it and its answer was lost);
    /// - `BrokerError::Kafka` with DeleteTopics' code and message;
    /// - `BrokerError::Connect` / `BrokerError::Io` if no broker can be reached;
    /// - `BrokerError::Unsupported` if the broker serves no DeleteTopics version 1–5;
    /// - `BrokerError::Malformed` on a response that cannot be decoded.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once the request is written the broker deletes the topic whether or not
    /// the answer is awaited. If it is dropped while its request is half written, the admin
    /// connection fails for the requests after it.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        self.cluster
            .retry("DeleteTopics", RETRY_FOR, || async {
                let conn = self.cluster.any().await?;
                let v = conn.version(ApiKey::DeleteTopics, (1, 5))?;
                let req = DeleteTopicsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topic_names(vec![TopicName(str_bytes(name))]);
                for r in conn.send(req, v).await?.responses {
                    if r.error_code == crate::codes::UNKNOWN_TOPIC_OR_PARTITION {
                        return Err(LogError::UnknownTopic(name.to_string()).into());
                    }
                    if r.error_code != 0 {
                        return Err(refused("DeleteTopics", r.error_code, r.error_message));
                    }
                }
                Ok(())
            })
            .await
    }

    /// Every consumer group with its state (ListGroups).
    ///
    /// # Errors
    ///
    /// Retried for 30 s on connection loss and Kafka's retriable codes, then
    /// `BrokerError::Kafka` with ListGroups' code, `BrokerError::Connect` / `BrokerError::Io` if
    /// no broker can be reached, `BrokerError::Unsupported` if it serves no ListGroups version 0–4,
    /// or `BrokerError::Malformed` on a response that cannot be decoded.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read-only. The partial-frame caveat of [`RemoteLog::topics`] applies.
    pub async fn groups(&self) -> Result<Vec<(String, String)>, BrokerError> {
        self.cluster
            .retry("ListGroups", RETRY_FOR, || async {
                let conn = self.cluster.any().await?;
                let v = conn.version(ApiKey::ListGroups, (0, 4))?;
                let resp = conn.send(ListGroupsRequest::default(), v).await?;
                if resp.error_code != 0 {
                    return Err(kafka_error("ListGroups", resp.error_code, ""));
                }
                let mut out: Vec<(String, String)> = resp
                    .groups
                    .into_iter()
                    .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
                    .collect();
                out.sort();
                Ok(out)
            })
            .await
    }

    /// Group `group`'s state, members (DescribeGroups) and committed offsets (OffsetFetch).
    ///
    /// # Errors
    ///
    /// Each request retried for 30 s on connection loss and Kafka's retriable codes, then:
    /// - `BrokerError::Kafka` with FindCoordinator's, DescribeGroups' or OffsetFetch's code;
    /// - `BrokerError::Malformed` if DescribeGroups answers no group, or on a response that cannot
    ///   be decoded;
    /// - `BrokerError::Connect` / `BrokerError::Io` if the coordinator cannot be reached;
    /// - `BrokerError::Unsupported` if the coordinator serves none of this client's versions.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read-only. The partial-frame caveat of [`RemoteLog::topics`] applies.
    pub async fn describe_group(&self, group: &str) -> Result<RemoteGroup, BrokerError> {
        let described = self
            .cluster
            .retry("DescribeGroups", RETRY_FOR, || async {
                let conn = self.cluster.coordinator(group).await?;
                let v = conn.version(ApiKey::DescribeGroups, (0, 5))?;
                let req =
                    DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(group))]);
                let resp = conn.send(req, v).await?;
                let g = resp.groups.into_iter().next().ok_or_else(|| {
                    BrokerError::Malformed("DescribeGroups answered no group".into())
                })?;
                if g.error_code != 0 {
                    return Err(kafka_error("DescribeGroups", g.error_code, group));
                }
                Ok(g)
            })
            .await?;
        let offsets = self
            .cluster
            .retry("OffsetFetch", RETRY_FOR, || async {
                let conn = self.cluster.coordinator(group).await?;
                let v = conn.version(ApiKey::OffsetFetch, (2, 7))?;
                let req = OffsetFetchRequest::default()
                    .with_group_id(GroupId(str_bytes(group)))
                    .with_topics(None);
                let resp = conn.send(req, v).await?;
                if resp.error_code != 0 {
                    return Err(kafka_error("OffsetFetch", resp.error_code, group));
                }
                let mut out = Vec::new();
                for t in resp.topics {
                    for p in t.partitions {
                        if let Ok(offset) = u64::try_from(p.committed_offset) {
                            let tp =
                                TopicPartition::new(t.name.0.as_str(), p.partition_index as u32);
                            out.push((tp, offset));
                        }
                    }
                }
                out.sort();
                Ok(out)
            })
            .await?;
        Ok(RemoteGroup {
            state: described.group_state.to_string(),
            members: described
                .members
                .into_iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.client_id.to_string(),
                        m.client_host.to_string(),
                        m.member_assignment,
                    )
                })
                .collect(),
            offsets,
        })
    }
}
