//! `runnel topics`: create, list, describe, alter (add partitions, set configs) and delete
//! topics.
//!
//! On a data directory, `list` and `describe` read each partition's offsets and segment sizes
//! from the open log. With `--bootstrap`, every command is Kafka's admin request of the same
//! name (CreateTopics, Metadata, DescribeConfigs and ListOffsets, CreatePartitions,
//! IncrementalAlterConfigs, DeleteTopics) to `runnel broker` or a Kafka cluster, and sizes
//! on disk are not known ("-"). Internal topics (names starting with `__`) are listed last
//! and marked internal.

use super::output::{self, bytes, millis};
use super::{config_message, duration_arg, size_arg};
use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use runnel_broker::RemoteLog;
use runnel_log::{
    CleanupPolicy, CompressionType, Durability, Log, PartitionStats, TopicConfig, TopicDescription,
    TopicPartition,
};

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List the topics with their settings, record counts and sizes.
    List,
    /// Show a topic's settings and its partitions.
    Describe {
        /// The topic.
        name: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// The topic.
        name: String,
    },
    /// Add partitions to a topic, or change its configs.
    Alter {
        /// The topic.
        name: String,
        /// The new total number of partitions (larger than the current one).
        #[arg(long)]
        partitions: Option<u32>,
        /// Set a topic config by its Kafka name, e.g. retention.ms=3600000 or
        /// compression.type=zstd (repeatable; `NAME=` resets it to the default).
        #[arg(long = "config", value_name = "NAME=VALUE")]
        configs: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The topic name: ASCII letters, digits, '.', '_' and '-'.
    name: String,
    /// Number of partitions.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// How long records are kept (e.g. 7d, 12h); `forever` or -1 keeps them forever.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    retention: Option<String>,
    /// Largest size of each partition before its oldest segments are deleted (e.g. 10GiB).
    #[arg(long, value_name = "SIZE")]
    retention_bytes: Option<String>,
    /// Keep only the latest record per key instead of deleting old segments.
    #[arg(long)]
    compact: bool,
    /// When appended records reach the disk.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Interval)]
    durability: DurabilityArg,
    /// Size at which a partition's active segment file is rolled (e.g. 128MiB).
    #[arg(long, value_name = "SIZE")]
    segment_bytes: Option<String>,
    /// Kafka's compression.type: `producer` stores batches as produced; a codec (gzip,
    /// snappy, lz4, zstd) or `uncompressed` stores every batch that way.
    #[arg(long, value_name = "CODEC", default_value = "producer")]
    compression_type: CompressionType,
}

/// `--durability`, mirroring [`Durability`].
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// fdatasync before acknowledging (concurrent appends share one sync).
    Always,
    /// fdatasync in the background every flush interval (100 ms).
    Interval,
    /// Leave writing back to the operating system.
    Os,
}

impl From<DurabilityArg> for Durability {
    fn from(d: DurabilityArg) -> Self {
        match d {
            DurabilityArg::Always => Durability::Always,
            DurabilityArg::Interval => Durability::Interval,
            DurabilityArg::Os => Durability::Os,
        }
    }
}

pub fn run(log: &Log, cmd: TopicsCommand) -> Result<()> {
    match cmd {
        TopicsCommand::Create(args) => {
            let config = create_config(&args)?;
            let topic = log.create_topic(&args.name, config)?;
            created(&args.name, topic.partition_count())
        }
        TopicsCommand::List => {
            let mut names = log.topic_names();
            names.sort_by_key(|n| (is_internal(n), n.clone()));
            let all = names
                .iter()
                .map(|n| log.describe_topic(n))
                .collect::<runnel_log::Result<Vec<_>>>()?;
            list(&all, true)
        }
        TopicsCommand::Describe { name } => describe(&log.describe_topic(&name)?, true),
        TopicsCommand::Delete { name } => deleted(log.delete_topic(&name), &name),
        TopicsCommand::Alter {
            name,
            partitions,
            configs,
        } => {
            let before = log.topic(&name)?.config();
            if let Some(partitions) = partitions {
                log.add_partitions(&name, partitions)?;
            }
            if !configs.is_empty() {
                let mut base = log.topic(&name)?.config();
                base = runnel_broker::apply_topic_configs(base, &config_pairs(&configs)?)?;
                log.alter_topic_config(&name, base)?;
            }
            altered(&name, &before, partitions, &configs, "")
        }
    }
}

/// `runnel --bootstrap ... topics ...`: the same commands as Kafka admin requests.
pub async fn run_remote(remote: &RemoteLog, cmd: TopicsCommand) -> Result<()> {
    match cmd {
        TopicsCommand::Create(args) => {
            let config = create_config(&args)?;
            remote.create_new_topic(&args.name, &config).await?;
            created(&args.name, config.partitions)
        }
        TopicsCommand::List => {
            let mut all = Vec::new();
            for (name, _) in remote.topics().await? {
                all.push(remote_description(remote, &name).await?);
            }
            all.sort_by_key(|d| (is_internal(&d.name), d.name.clone()));
            list(&all, false)
        }
        TopicsCommand::Describe { name } => {
            describe(&remote_description(remote, &name).await?, false)
        }
        TopicsCommand::Delete { name } => deleted(remote.delete_topic(&name).await, &name),
        TopicsCommand::Alter {
            name,
            partitions,
            configs,
        } => {
            let before = remote.topic_config(&name).await?;
            if let Some(partitions) = partitions {
                remote.add_partitions(&name, partitions).await?;
            }
            let mut note = String::new();
            if !configs.is_empty() {
                note = remote
                    .alter_topic_configs(&name, &config_pairs(&configs)?)
                    .await?;
            }
            altered(&name, &before, partitions, &configs, &note)
        }
    }
}

/// A topic's description over the wire: configs, and start and end offsets per partition.
async fn remote_description(remote: &RemoteLog, name: &str) -> Result<TopicDescription> {
    let config = remote.topic_config(name).await?;
    let tps: Vec<TopicPartition> = (0..config.partitions)
        .map(|p| TopicPartition::new(name, p))
        .collect();
    let starts = remote.list_offsets(&tps, -2).await?;
    let ends = remote.list_offsets(&tps, -1).await?;
    let partitions = (0..config.partitions)
        .zip(starts.into_iter().zip(ends))
        .map(|(partition, (start_offset, end_offset))| PartitionStats {
            partition,
            start_offset,
            end_offset,
            size_bytes: 0,
            segments: 0,
        })
        .collect();
    Ok(TopicDescription {
        name: name.to_string(),
        config,
        partitions,
    })
}

/// `--config NAME=VALUE` flags as (name, value); an empty value resets the config.
fn config_pairs(configs: &[String]) -> Result<Vec<(String, Option<String>)>> {
    configs
        .iter()
        .map(|c| match c.split_once('=') {
            Some((k, v)) => Ok((
                k.trim().to_string(),
                Some(v.trim()).filter(|v| !v.is_empty()).map(str::to_string),
            )),
            None => bail!("--config {c:?}: write NAME=VALUE, e.g. --config retention.ms=3600000"),
        })
        .collect()
}

fn deleted<E: std::error::Error + Send + Sync + 'static>(
    outcome: std::result::Result<(), E>,
    name: &str,
) -> Result<()> {
    outcome?;
    output::print(format!("deleted topic {name}"))
}

fn created(name: &str, n: u32) -> Result<()> {
    output::print(format!(
        "created topic {name} with {n} partition{}",
        if n == 1 { "" } else { "s" }
    ))
}

fn altered(
    name: &str,
    before: &TopicConfig,
    partitions: Option<u32>,
    configs: &[String],
    note: &str,
) -> Result<()> {
    if partitions.is_none() && configs.is_empty() {
        bail!("topics alter {name}: nothing to change; give --partitions N or --config NAME=VALUE");
    }
    let mut text = Vec::new();
    if let Some(p) = partitions {
        text.push(format!(
            "topic {name} now has {p} partitions (it had {})",
            before.partitions
        ));
    }
    if !configs.is_empty() {
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(" ({note})")
        };
        text.push(format!("topic {name}: set {}{note}", configs.join(", ")));
    }
    output::print(text.join("\n"))
}

/// The topic config `topics create` asks for.
fn create_config(args: &CreateArgs) -> Result<TopicConfig> {
    let defaults = TopicConfig::default();
    let retention_ms = match args.retention.as_deref() {
        None => defaults.retention_ms,
        Some("forever" | "-1") => None,
        Some(s) => Some(duration_arg("--retention", s)?.as_millis() as u64),
    };
    let retention_bytes = args
        .retention_bytes
        .as_deref()
        .map(|s| size_arg("--retention-bytes", s))
        .transpose()?;
    let segment_bytes = match args.segment_bytes.as_deref() {
        None => defaults.segment_bytes,
        Some(s) => size_arg("--segment-bytes", s)?,
    };
    let config = TopicConfig {
        partitions: args.partitions,
        retention_ms,
        retention_bytes,
        cleanup_policy: if args.compact {
            CleanupPolicy::Compact
        } else {
            CleanupPolicy::Delete
        },
        segment_bytes,
        durability: args.durability.into(),
        compression_type: args.compression_type,
        ..defaults
    };
    config
        .validate()
        .map_err(|e| anyhow!("topic {}: {}", args.name, config_message(e)))?;
    Ok(config)
}

fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

fn policy(c: &TopicConfig) -> &'static str {
    match c.cleanup_policy {
        CleanupPolicy::Delete => "delete",
        CleanupPolicy::Compact => "compact",
    }
}

/// `7d`, `forever`, `7d or 10.00 GiB per partition`; compacted topics keep the latest value
/// per key instead.
fn retention(c: &TopicConfig) -> String {
    if c.cleanup_policy == CleanupPolicy::Compact {
        return "latest per key".into();
    }
    let time = c.retention_ms.map_or_else(|| "forever".into(), millis);
    match c.retention_bytes {
        Some(b) if c.retention_ms.is_some() => format!("{time} or {} per partition", bytes(b)),
        Some(b) => format!("{} per partition", bytes(b)),
        None => time,
    }
}

fn records(d: &TopicDescription) -> u64 {
    d.partitions
        .iter()
        .map(|p| p.end_offset - p.start_offset)
        .sum()
}

/// The table of `topics list`; sizes only when `on_disk` (the data directory is open here).
fn list(all: &[TopicDescription], on_disk: bool) -> Result<()> {
    let mut t = output::table(
        &[
            "topic",
            "partitions",
            "cleanup policy",
            "durability",
            "retention",
            "records",
            "size",
        ],
        &[1, 5, 6],
    );
    for d in all {
        let size: u64 = d.partitions.iter().map(|p| p.size_bytes).sum();
        let label = if is_internal(&d.name) {
            format!("{} (internal)", d.name)
        } else {
            d.name.clone()
        };
        t.add_row(vec![
            label,
            d.partitions.len().to_string(),
            policy(&d.config).into(),
            d.config.durability.to_string(),
            retention(&d.config),
            records(d).to_string(),
            if on_disk { bytes(size) } else { "-".into() },
        ]);
    }
    output::print(t)
}

/// The text of `topics describe`; sizes and segments only when `on_disk`.
fn describe(d: &TopicDescription, on_disk: bool) -> Result<()> {
    let name = d.name.as_str();
    let c = &d.config;
    let size: u64 = d.partitions.iter().map(|p| p.size_bytes).sum();
    let durability = match c.durability {
        Durability::Interval => {
            format!("interval (fdatasync every {})", millis(c.flush_interval_ms))
        }
        other => other.to_string(),
    };
    let lines = [
        (
            "topic",
            format!(
                "{name}{}",
                if is_internal(name) { " (internal)" } else { "" }
            ),
        ),
        ("partitions", d.partitions.len().to_string()),
        ("cleanup policy", policy(c).to_string()),
        ("durability", durability),
        ("retention", retention(c)),
        ("segment size", bytes(c.segment_bytes)),
        ("segment age", millis(c.segment_ms)),
        ("max message size", bytes(c.max_message_bytes as u64)),
        ("compression", c.compression_type.to_string()),
        ("records", records(d).to_string()),
        (
            "size on disk",
            if on_disk { bytes(size) } else { "-".into() },
        ),
    ];
    let mut text = String::new();
    for (k, v) in lines {
        text.push_str(&format!("{:<17} {v}\n", format!("{k}:")));
    }
    let mut t = output::table(
        &[
            "partition",
            "start offset",
            "end offset",
            "records",
            "size",
            "segments",
        ],
        &[0, 1, 2, 3, 4, 5],
    );
    for p in &d.partitions {
        t.add_row(vec![
            p.partition.to_string(),
            p.start_offset.to_string(),
            p.end_offset.to_string(),
            (p.end_offset - p.start_offset).to_string(),
            if on_disk {
                bytes(p.size_bytes)
            } else {
                "-".into()
            },
            if on_disk {
                p.segments.to_string()
            } else {
                "-".into()
            },
        ]);
    }
    output::print(format!("{text}{t}"))
}
