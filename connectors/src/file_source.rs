//! `file-source` (Kafka's `FileStreamSource`): the lines of a file, tailed as it grows.
//!
//! Keys: `file`, `topic`, `format` (`text` | `json`; default `text`), `batch.max.lines`.
//! Only complete lines are read; the source offset is the byte position after the line, so a
//! restart resumes exactly. A file that became shorter than the stored position was rotated
//! or truncated: reading starts again at 0. With `format = json` a line that is not JSON is
//! handed on with its error (to the dead-letter topic under `errors.tolerance = all`).

use crate::config::ConnectorConfig;
use crate::connector::{Source, SourceRecord};
use crate::error::{ConnectError, Result};
use async_trait::async_trait;
use std::io::{Read, Seek, SeekFrom};

pub const KEYS: &[&str] = &["file", "topic", "format", "batch.max.lines"];

pub struct FileSource {
    file: String,
    topic: String,
    json: bool,
    max_lines: usize,
    position: u64,
    /// Lines so far, for error messages.
    line_no: u64,
}

impl FileSource {
    pub fn new(c: &ConnectorConfig) -> Result<Self> {
        let json = match c.get("format").unwrap_or("text") {
            "text" => false,
            "json" => true,
            f => return Err(c.error(format!("format = {f:?}: use text or json"))),
        };
        Ok(Self {
            file: c.require("file")?.into(),
            topic: c.require("topic")?.into(),
            json,
            max_lines: c.parse_or("batch.max.lines", 10_000)?,
            position: 0,
            line_no: 0,
        })
    }

    fn partition(&self) -> serde_json::Value {
        serde_json::json!({ "filename": self.file })
    }
}

#[async_trait]
impl Source for FileSource {
    async fn start(&mut self, offsets: &[(serde_json::Value, serde_json::Value)]) -> Result<()> {
        let me = self.partition();
        if let Some((_, o)) = offsets.iter().find(|(p, _)| *p == me) {
            self.position = o["position"].as_u64().unwrap_or(0);
        }
        Ok(())
    }

    async fn poll(&mut self) -> Result<Vec<SourceRecord>> {
        let io = |e| ConnectError::Io {
            path: self.file.clone(),
            source: e,
        };
        let mut f = match std::fs::File::open(&self.file) {
            Ok(f) => f,
            // Not there yet: a tailing source waits for it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let len = f.metadata().map_err(io)?.len();
        if len < self.position {
            tracing::info!(file = %self.file, "the file is shorter than the stored position: rotated or truncated, reading from the start");
            self.position = 0;
            self.line_no = 0;
        }
        if len == self.position {
            return Ok(Vec::new());
        }
        f.seek(SeekFrom::Start(self.position)).map_err(io)?;
        let mut buf = Vec::with_capacity((len - self.position).min(8 << 20) as usize);
        f.take(8 << 20).read_to_end(&mut buf).map_err(io)?;
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + nl];
            start += nl + 1;
            self.line_no += 1;
            let offset = serde_json::json!({ "position": self.position + start as u64 });
            let error = if self.json {
                serde_json::from_slice::<serde::de::IgnoredAny>(line)
                    .err()
                    .map(|e| format!("{}:{}: not JSON: {e}", self.file, self.line_no))
            } else {
                None
            };
            out.push(SourceRecord {
                topic: self.topic.clone(),
                key: None,
                value: Some(line.to_vec()),
                timestamp: None,
                partition: self.partition(),
                offset,
                error,
                text: !self.json,
            });
            if out.len() >= self.max_lines {
                break;
            }
        }
        self.position += start as u64;
        Ok(out)
    }
}
