//! `runnel topics`: create, list, describe, alter (add partitions) and delete topics.
//!
//! `list` and `describe` read each partition's offsets and segment sizes from the open log;
//! internal topics (names starting with `__`) are listed last and marked internal.

use super::output::{self, bytes, millis};
use super::{config_message, duration_arg, size_arg};
use anyhow::{Result, anyhow};
use clap::{Args, Subcommand, ValueEnum};
use runnel_log::{CleanupPolicy, CompressionType, Durability, Log, TopicConfig, TopicDescription};

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
    /// Add partitions to a topic.
    Alter {
        /// The topic.
        name: String,
        /// The new total number of partitions (larger than the current one).
        #[arg(long)]
        partitions: u32,
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
        TopicsCommand::Create(args) => create(log, args),
        TopicsCommand::List => list(log),
        TopicsCommand::Describe { name } => describe(log, &name),
        TopicsCommand::Delete { name } => {
            log.delete_topic(&name)?;
            output::print(format!("deleted topic {name}"))
        }
        TopicsCommand::Alter { name, partitions } => {
            let before = log.topic(&name)?.partition_count();
            log.add_partitions(&name, partitions)?;
            output::print(format!(
                "topic {name} now has {partitions} partitions (it had {before})"
            ))
        }
    }
}

fn create(log: &Log, args: CreateArgs) -> Result<()> {
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
    let topic = log.create_topic(&args.name, config)?;
    let n = topic.partition_count();
    output::print(format!(
        "created topic {} with {n} partition{}",
        args.name,
        if n == 1 { "" } else { "s" }
    ))
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

fn list(log: &Log) -> Result<()> {
    let mut names = log.topic_names();
    names.sort_by_key(|n| (is_internal(n), n.clone()));
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
    for name in names {
        let d = log.describe_topic(&name)?;
        let size: u64 = d.partitions.iter().map(|p| p.size_bytes).sum();
        let label = if is_internal(&name) {
            format!("{name} (internal)")
        } else {
            name
        };
        t.add_row(vec![
            label,
            d.partitions.len().to_string(),
            policy(&d.config).into(),
            d.config.durability.to_string(),
            retention(&d.config),
            records(&d).to_string(),
            bytes(size),
        ]);
    }
    output::print(t)
}

fn describe(log: &Log, name: &str) -> Result<()> {
    let d = log.describe_topic(name)?;
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
        ("records", records(&d).to_string()),
        ("size on disk", bytes(size)),
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
            bytes(p.size_bytes),
            p.segments.to_string(),
        ]);
    }
    output::print(format!("{text}{t}"))
}
