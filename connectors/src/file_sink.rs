//! `file-sink` (Kafka's `FileStreamSink`): appends each record's value as a line to a file.
//!
//! Keys: `file`, `topics` (comma-separated), `format` (`text`: the value's bytes; `json`: the
//! value must be JSON, written on one line; `csv`: the value must be a JSON object, its fields
//! under a header line written at the top of each file, taken from the first record's fields),
//! `rotate.size.bytes` (rotate once the file reaches that size) and `rotate.interval.ms`
//! (rotate a file open that long, checked when records arrive). Rotation renames the file to
//! `<file>.<n>` (`n` one more than the largest there) after syncing it, and starts a new
//! `<file>`, as logrotate does, so a tailing reader follows it.
//!
//! `flush` syncs the file, after which the worker commits the consumed offsets: a crash
//! re-appends at most what was written since. A record the format refuses (not JSON, a CSV
//! field outside the header) is returned as rejected, for the dead-letter topic.

use crate::config::ConnectorConfig;
use crate::connector::{Rejected, Sink};
use crate::error::{ConnectError, Result};
use async_trait::async_trait;
use runnel_log::ConsumerRecord;
use serde_json::Value;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

pub const KEYS: &[&str] = &[
    "file",
    "topics",
    "format",
    "rotate.size.bytes",
    "rotate.interval.ms",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
    Csv,
}

struct Open {
    w: std::io::BufWriter<std::fs::File>,
    size: u64,
    opened: Instant,
    header: Option<Vec<String>>,
}

pub struct FileSink {
    path: String,
    topics: Vec<String>,
    format: Format,
    rotate_size: u64,
    rotate_interval: Option<Duration>,
    file: Option<Open>,
}

impl FileSink {
    pub fn new(c: &ConnectorConfig) -> Result<Self> {
        let topics: Vec<String> = c
            .require("topics")?
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if topics.is_empty() {
            return Err(c.error("topics is empty".into()));
        }
        let format = match c.get("format").unwrap_or("text") {
            "text" => Format::Text,
            "json" => Format::Json,
            "csv" => Format::Csv,
            f => return Err(c.error(format!("format = {f:?}: use text, json or csv"))),
        };
        let interval: u64 = c.parse_or("rotate.interval.ms", 0)?;
        Ok(Self {
            path: c.require("file")?.into(),
            topics,
            format,
            rotate_size: c.parse_or("rotate.size.bytes", 0)?,
            rotate_interval: (interval > 0).then(|| Duration::from_millis(interval)),
            file: None,
        })
    }

    fn io(&self, e: std::io::Error) -> ConnectError {
        ConnectError::Io {
            path: self.path.clone(),
            source: e,
        }
    }

    fn open(&mut self) -> std::io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)?;
        let size = f.metadata()?.len();
        // Appending to a CSV file from before: its header is the first line.
        let header = if self.format == Format::Csv && size > 0 {
            let mut first = String::new();
            std::io::BufReader::new(std::fs::File::open(&self.path)?).read_line(&mut first)?;
            Some(csv_line_fields(first.trim_end()))
        } else {
            None
        };
        self.file = Some(Open {
            w: std::io::BufWriter::with_capacity(1 << 20, f),
            size,
            opened: Instant::now(),
            header,
        });
        Ok(())
    }

    /// Syncs and renames the current file to `<file>.<n>`.
    fn rotate(&mut self) -> std::io::Result<()> {
        let Some(mut open) = self.file.take() else {
            return Ok(());
        };
        open.w.flush()?;
        open.w.get_ref().sync_data()?;
        drop(open);
        let p = std::path::Path::new(&self.path);
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let n = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_prefix(&format!("{name}."))
                    .and_then(|s| s.parse::<u64>().ok())
            })
            .max()
            .unwrap_or(0)
            + 1;
        std::fs::rename(&self.path, format!("{}.{n}", self.path))?;
        // The rename is durable with its directory.
        std::fs::File::open(dir)?.sync_all()
    }

    /// The line of a record, or why the format refuses it.
    fn line(
        &self,
        value: &[u8],
        header: &mut Option<Vec<String>>,
    ) -> std::result::Result<Vec<u8>, String> {
        match self.format {
            Format::Text => Ok(value.to_vec()),
            Format::Json => {
                let v: Value =
                    serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
                if value.contains(&b'\n') {
                    Ok(serde_json::to_vec(&v).expect("JSON serializes"))
                } else {
                    Ok(value.to_vec())
                }
            }
            Format::Csv => {
                let o = match serde_json::from_slice::<Value>(value) {
                    Ok(Value::Object(o)) => o,
                    Ok(other) => {
                        return Err(format!("format csv needs a JSON object, found {other}"));
                    }
                    Err(e) => return Err(format!("not JSON: {e}")),
                };
                let mut out = Vec::new();
                if header.is_none() {
                    let h: Vec<String> = o.keys().cloned().collect();
                    out.extend(csv_join(h.iter().map(String::as_str)));
                    out.push(b'\n');
                    *header = Some(h);
                }
                let h = header.as_ref().expect("set above");
                if let Some(extra) = o.keys().find(|k| !h.contains(k)) {
                    return Err(format!(
                        "field {extra:?} is not a column of {} (its header: {})",
                        self.path,
                        h.join(",")
                    ));
                }
                let cells: Vec<String> = h
                    .iter()
                    .map(|k| match o.get(k) {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                    })
                    .collect();
                out.extend(csv_join(cells.iter().map(String::as_str)));
                Ok(out)
            }
        }
    }
}

fn csv_join<'a>(cells: impl Iterator<Item = &'a str>) -> Vec<u8> {
    cells
        .map(|c| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

fn csv_line_fields(line: &str) -> Vec<String> {
    line.split(',')
        .map(|s| s.trim_matches('"').to_string())
        .collect()
}

#[async_trait]
impl Sink for FileSink {
    fn topics(&self) -> Vec<String> {
        self.topics.clone()
    }

    async fn put(&mut self, records: &[ConsumerRecord]) -> Result<Vec<Rejected>> {
        let mut rejected = Vec::new();
        if let (Some(every), Some(open)) = (self.rotate_interval, &self.file)
            && open.opened.elapsed() >= every
            && open.size > 0
        {
            self.rotate().map_err(|e| self.io(e))?;
        }
        for (index, r) in records.iter().enumerate() {
            let Some(v) = &r.record.value else { continue };
            self.open().map_err(|e| self.io(e))?;
            let mut header = self.file.as_mut().expect("opened above").header.take();
            let line = self.line(v, &mut header);
            let open = self.file.as_mut().expect("opened above");
            open.header = header;
            let mut line = match line {
                Ok(l) => l,
                Err(reason) => {
                    rejected.push(Rejected { index, reason });
                    continue;
                }
            };
            line.push(b'\n');
            open.w.write_all(&line).map_err(|e| ConnectError::Io {
                path: self.path.clone(),
                source: e,
            })?;
            open.size += line.len() as u64;
            if self.rotate_size > 0 && open.size >= self.rotate_size {
                self.rotate().map_err(|e| self.io(e))?;
            }
        }
        Ok(rejected)
    }

    async fn flush(&mut self) -> Result<()> {
        if let Some(open) = &mut self.file {
            let r = open.w.flush().and_then(|_| open.w.get_ref().sync_data());
            r.map_err(|e| self.io(e))?;
        }
        Ok(())
    }
}
