//! Connector configurations: Kafka Connect's flat string maps, checked against the keys each
//! connector class knows, so a typo is an error naming the key and the closest known one.

use crate::error::{ConnectError, Result};
use std::collections::BTreeMap;

/// Keys every connector accepts (Kafka Connect's common ones).
pub const COMMON_KEYS: &[&str] = &[
    "name",
    "connector.class",
    "tasks.max",
    "key.converter",
    "value.converter",
    "key.converter.schemas.enable",
    "value.converter.schemas.enable",
    "errors.tolerance",
    "errors.deadletterqueue.topic.name",
    "errors.log.enable",
    // The longest wait between restarts of a failed connector (the worker's backoff).
    "errors.retry.delay.max.ms",
    "exactly.once.support",
    // Kafka Connect's per-connector producer override: the codec of a source's batches.
    "producer.override.compression.type",
];

/// A connector's configuration: its name, class, and every key as given.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorConfig {
    pub name: String,
    pub props: BTreeMap<String, String>,
}

impl ConnectorConfig {
    /// From Kafka Connect's JSON shape (`{"name": .., "connector.class": .., ...}`); values
    /// may be strings, numbers or booleans.
    pub fn from_json(name: Option<&str>, value: &serde_json::Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| ConnectError::Config {
            connector: name.unwrap_or("?").into(),
            message: "the configuration must be a JSON object of strings".into(),
        })?;
        let mut props = BTreeMap::new();
        for (k, v) in obj {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(ConnectError::Config {
                        connector: name.unwrap_or("?").into(),
                        message: format!("{k}: expected a string, found {other}"),
                    });
                }
            };
            props.insert(k.clone(), s);
        }
        let name = name
            .map(str::to_string)
            .or_else(|| props.get("name").cloned())
            .ok_or_else(|| ConnectError::Config {
                connector: "?".into(),
                message: "missing \"name\"".into(),
            })?;
        props.insert("name".into(), name.clone());
        Ok(Self { name, props })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| self.error(format!("missing required key {key:?}")))
    }

    /// A sink's `topics`: comma-separated names, at least one.
    pub fn topics(&self) -> Result<Vec<String>> {
        let topics: Vec<String> = self
            .require("topics")?
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if topics.is_empty() {
            return Err(self.error("topics is empty".into()));
        }
        Ok(topics)
    }

    pub fn parse_or<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| self.error(format!("{key} = {v:?} is not a valid value"))),
        }
    }

    pub fn error(&self, message: String) -> ConnectError {
        ConnectError::Config {
            connector: self.name.clone(),
            message,
        }
    }

    /// Errors on the first key neither common nor in `known`, naming the closest known key.
    pub fn check_keys(&self, known: &[&str]) -> Result<()> {
        for key in self.props.keys() {
            let transform = ["transforms", "predicates"].contains(&key.as_str())
                || key.starts_with("transforms.")
                || key.starts_with("predicates.");
            if transform || COMMON_KEYS.contains(&key.as_str()) || known.contains(&key.as_str()) {
                continue;
            }
            let closest = COMMON_KEYS
                .iter()
                .chain(known)
                .min_by_key(|k| edit_distance(key, k))
                .copied()
                .unwrap_or_default();
            return Err(self.error(format!("unknown key {key:?} (did you mean {closest:?}?)")));
        }
        Ok(())
    }

    /// `errors.tolerance = all`: a bad record goes to the dead-letter topic, the rest go on.
    /// `exactly.once.support` (KIP-618): `required` (or `requested`) writes a source's records
    /// and its source offsets in one transaction per poll; `none`/absent is at-least-once.
    pub fn exactly_once(&self) -> Result<bool> {
        match self.get("exactly.once.support").unwrap_or("none") {
            "none" => Ok(false),
            "required" | "requested" => Ok(true),
            v => Err(self.error(format!(
                "exactly.once.support = {v:?}: use required, requested or none"
            ))),
        }
    }

    pub fn tolerates_errors(&self) -> Result<bool> {
        match self.get("errors.tolerance").unwrap_or("none") {
            "none" => Ok(false),
            "all" => Ok(true),
            v => Err(self.error(format!("errors.tolerance = {v:?}: use none or all"))),
        }
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_name_the_closest_known_one() {
        let cfg = ConnectorConfig::from_json(
            Some("c"),
            &serde_json::json!({"connector.class": "FileStreamSource", "fiel": "/tmp/x", "topic": "t"}),
        )
        .unwrap();
        let err = cfg.check_keys(&["file", "topic"]).unwrap_err().to_string();
        assert!(
            err.contains("unknown key \"fiel\"") && err.contains("\"file\""),
            "{err}"
        );
    }
}
