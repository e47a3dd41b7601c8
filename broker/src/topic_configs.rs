//! Runnel's topic configs under Kafka's names, both ways: what the server's CreateTopics,
//! DescribeConfigs and IncrementalAlterConfigs read and answer, and what the client sends and
//! reads back, so that both ends map them alike.
//!
//! Contract: the names are `retention.ms`, `retention.bytes`, `cleanup.policy`,
//! `segment.bytes`, `segment.ms`, `max.message.bytes`, `delete.retention.ms`, and for
//! durability `flush.messages=1` (Runnel's `always`: acknowledged only after fdatasync) or
//! `flush.ms=N` (`interval`), or Runnel's own `runnel.durability=always|interval|os`;
//! `compression.type` (`producer`, `uncompressed`, `gzip`, `snappy`, `lz4`, `zstd`). Other
//! Kafka configs (replication and the like) are accepted and ignored with a log line; a value
//! that does not parse is an error naming the config.

use runnel_log::{CleanupPolicy, Durability, LogError, TopicConfig};

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

/// The Kafka topic configs that mean the same in Kafka and in Runnel, for `c`..
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
