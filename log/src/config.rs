//! Topic configuration, topic-name rules and the parsing of human sizes and durations.
//!
//! A topic's config is chosen at creation and stored as JSON in `DATA/.runnel/topics/NAME.json`;
//! the partition count is the only field that changes later (it only grows).

use crate::compression::CompressionType;
use crate::error::{LogError, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// When appended data reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// An append returns after `fdatasync`; concurrent appends share one sync (group commit).
    Always,
    /// A background flusher syncs every `flush_interval_ms`.
    #[default]
    Interval,
    /// The operating system decides when dirty pages are written back.
    Os,
}

impl std::str::FromStr for Durability {
    type Err = LogError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(Self::Always),
            "interval" => Ok(Self::Interval),
            "os" => Ok(Self::Os),
            other => Err(LogError::InvalidConfig(format!(
                "durability {other:?} is not one of always, interval, os"
            ))),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Always => "always",
            Self::Interval => "interval",
            Self::Os => "os",
        })
    }
}

/// `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    #[default]
    Delete,
    Compact,
}

/// Per-topic settings, named after Kafka's topic configs where one exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    pub partitions: u32,
    /// `retention.ms`; `None` keeps data forever.
    pub retention_ms: Option<u64>,
    /// `retention.bytes` per partition; `None` means no size limit.
    pub retention_bytes: Option<u64>,
    pub cleanup_policy: CleanupPolicy,
    /// `segment.bytes`: roll the active segment when it would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment when it is older than this.
    pub segment_ms: u64,
    pub durability: Durability,
    /// `flush.ms` for [`Durability::Interval`].
    pub flush_interval_ms: u64,
    /// `delete.retention.ms`: how long tombstones survive compaction.
    pub delete_retention_ms: u64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: usize,
    /// `compression.type`: `producer` stores batches as produced; a codec makes producers
    /// writing into the log use it (the broker recompresses batches produced otherwise).
    pub compression_type: CompressionType,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            partitions: 1,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            cleanup_policy: CleanupPolicy::Delete,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            durability: Durability::Interval,
            flush_interval_ms: 100,
            delete_retention_ms: 24 * 3600 * 1000,
            max_message_bytes: 16 * 1024 * 1024,
            compression_type: CompressionType::Producer,
        }
    }
}

impl TopicConfig {
    /// Checks the settings against the ranges Kafka allows (and the log's own limits).
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidConfig`] naming the first setting out of range and its range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LogError::InvalidConfig(m));
        if self.partitions == 0 || self.partitions > 100_000 {
            return bad(format!("partitions = {}: use 1 to 100000", self.partitions));
        }
        if self.segment_bytes < 1024 {
            return bad(format!(
                "segment.bytes = {} is below the minimum 1024",
                self.segment_bytes
            ));
        }
        // Index entries hold file positions as u32; Kafka caps segment.bytes the same way.
        if self.segment_bytes > i32::MAX as u64 {
            return bad(format!(
                "segment.bytes = {} is above the maximum {} (2 GiB)",
                self.segment_bytes,
                i32::MAX
            ));
        }
        if self.max_message_bytes as u64 > self.segment_bytes.max(1 << 30) {
            return bad("max.message.bytes is larger than 1 GiB".into());
        }
        if self.flush_interval_ms == 0 {
            return bad("flush.ms must be at least 1".into());
        }
        Ok(())
    }
}

/// Kafka's topic-name rule. A name that passes can never escape the data directory: it has no
/// separators and is not `.` or `..`.
///
/// # Errors
///
/// [`LogError::InvalidTopicName`] saying why (empty, reserved, too long, a character).
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(LogError::InvalidTopicName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are reserved");
    }
    if name.len() > 249 {
        return bad(&format!("it is {} characters long", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!("it contains {c:?}"));
    }
    Ok(())
}

/// Parses `512`, `64KiB`, `10MB`, `1GiB`, `1g` into bytes (K/M/G are binary multiples, as Kafka users expect of sizes).
///
/// # Errors
///
/// [`LogError::InvalidConfig`] for no number, an unknown unit, or more than `u64` holds.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        LogError::InvalidConfig(format!("size {s:?}: expected a number like 512MiB"))
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(LogError::InvalidConfig(format!(
                "size {s:?}: unknown unit {other:?}; use B, KiB, MiB, GiB or TiB"
            )));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| LogError::InvalidConfig(format!("size {s:?} is too large")))
}

/// Parses `100ms`, `30s`, `7d`, `2h 30m` (humantime syntax).
///
/// # Errors
///
/// [`LogError::InvalidConfig`] for an empty text, a number without a unit, or an unknown unit.
pub fn parse_duration(s: &str) -> Result<Duration> {
    parse_humantime(s.trim()).map_err(|e| {
        LogError::InvalidConfig(format!("duration {s:?}: {e}; write e.g. 500ms, 30s, 7d"))
    })
}

fn parse_humantime(s: &str) -> std::result::Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty".into());
    }
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| "number too large".to_string())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms: u64 = match unit {
            "ms" => 1,
            "s" | "sec" | "secs" => 1000,
            "m" | "min" | "mins" => 60_000,
            "h" | "hr" | "hours" | "hour" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            "w" | "week" | "weeks" => 7 * 86_400_000,
            "" => return Err("missing unit (ms, s, m, h, d, w)".into()),
            other => return Err(format!("unknown unit {other:?}")),
        };
        total += Duration::from_millis(n.saturating_mul(ms));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["rides", "a.b_c-D9", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "../etc", "a b", "é", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5").is_err());
    }
}
