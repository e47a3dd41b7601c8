//! The worker file: TOML with one `[[connector]]` table per connector, keys as in Kafka
//! Connect (`name`, `connector.class`, `file`, `topic`, ...), so a Connect user's properties
//! carry over, and optionally the worker's topics under Kafka Connect's worker property names
//! (`config.storage.topic`, `status.storage.topic`, `offset.storage.topic`; see [`Storage`]). Errors name the file and
//! the line.
//!
//! ```toml
//! "config.storage.topic" = "connect-configs"
//!
//! [[connector]]
//! name = "lines-in"
//! "connector.class" = "FileStreamSource"
//! file = "/var/log/app.jsonl"
//! topic = "app-events"
//! ```

use crate::config::ConnectorConfig;
use crate::error::{ConnectError, Result};
use crate::runtime::worker::Storage;

/// A worker file's contents (by default, none: the default topics, no connector).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerFile {
    /// Its topics; the defaults where the file names none.
    pub storage: Storage,
    pub connectors: Vec<ConnectorConfig>,
}

/// The connectors of the worker file at `path`, whose contents are `text`; see [`read`].
///
/// # Errors
/// As [`read`].
pub fn parse(path: &str, text: &str) -> Result<Vec<ConnectorConfig>> {
    Ok(read(path, text)?.connectors)
}

/// The worker file at `path`, whose contents are `text`: its topics, and its connectors, each
/// checked as the worker checks a connector it starts.
///
/// # Errors
/// [`crate::ConnectError::WorkerFile`] naming `path`: TOML that does not parse (with the
/// line), a top-level key other than `connector` and the storage keys (or one that is not a
/// string), or a connector whose configuration is refused (with its number in the file and
/// why).
pub fn read(path: &str, text: &str) -> Result<WorkerFile> {
    let err = |message: String| ConnectError::WorkerFile {
        path: path.into(),
        message,
    };
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e
            .span()
            .map(|s| format!("line {}: ", text[..s.start].lines().count().max(1)))
            .unwrap_or_default();
        err(format!("{at}{}", e.message()))
    })?;
    let mut storage = Storage::default();
    for (key, value) in &doc {
        let topic = match key.as_str() {
            "connector" => continue,
            "config.storage.topic" => &mut storage.config_topic,
            "status.storage.topic" => &mut storage.status_topic,
            "offset.storage.topic" => &mut storage.offset_topic,
            k => {
                return Err(err(format!(
                    "unknown top-level key {k:?}: declare connectors as [[connector]] tables; the worker's own keys are \"config.storage.topic\", \"status.storage.topic\" and \"offset.storage.topic\""
                )));
            }
        };
        *topic = value
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err(format!("{key} must be a topic name, not {value}")))?
            .to_string();
    }
    let none = Vec::new();
    let list = match doc.get("connector") {
        None => &none,
        Some(list) => list
            .as_array()
            .ok_or_else(|| err("connector must be an array of tables: [[connector]]".into()))?,
    };
    let connectors = list
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let json = serde_json::to_value(t).map_err(|e| err(e.to_string()))?;
            let c = ConnectorConfig::from_json(None, &json)
                .map_err(|e| err(format!("connector #{}: {e}", i + 1)))?;
            crate::runtime::worker::check(&c).map_err(|e| err(e.to_string()))?;
            Ok(c)
        })
        .collect::<Result<_>>()?;
    Ok(WorkerFile {
        storage,
        connectors,
    })
}
