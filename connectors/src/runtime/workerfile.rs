//! The worker file: TOML with one `[[connector]]` table per connector, keys as in Kafka
//! Connect (`name`, `connector.class`, `file`, `topic`, ...), so a Connect user's properties
//! carry over. Errors name the file and the line.
//!
//! ```toml
//! [[connector]]
//! name = "lines-in"
//! "connector.class" = "FileStreamSource"
//! file = "/var/log/app.jsonl"
//! topic = "app-events"
//! ```

use crate::config::ConnectorConfig;
use crate::error::{ConnectError, Result};

/// The connectors of the worker file at `path`, whose contents are `text`, each checked as
/// [`crate::registry::build`] checks it.
///
/// # Errors
/// [`crate::ConnectError::WorkerFile`] naming `path`: TOML that does not parse (with the
/// line), a top-level key other than `connector`, or a connector whose configuration is
/// refused (with its number in the file and why).
pub fn parse(path: &str, text: &str) -> Result<Vec<ConnectorConfig>> {
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
    if let Some(k) = doc.keys().find(|k| *k != "connector") {
        return Err(err(format!(
            "unknown top-level key {k:?}: declare connectors as [[connector]] tables"
        )));
    }
    let Some(list) = doc.get("connector") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| err("connector must be an array of tables: [[connector]]".into()))?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let json = serde_json::to_value(t).map_err(|e| err(e.to_string()))?;
            let c = ConnectorConfig::from_json(None, &json)
                .map_err(|e| err(format!("connector #{}: {e}", i + 1)))?;
            crate::registry::build(&c).map_err(|e| err(e.to_string()))?;
            Ok(c)
        })
        .collect()
}
