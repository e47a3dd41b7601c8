//! `file-sink` (Kafka's `FileStreamSink`): appends each record's value as a line to a file.
//!
//! Keys: `file`, `topics` (comma-separated). `flush` syncs the file, after which the worker
//! commits the consumed offsets: a crash re-appends at most what was written since.

use crate::config::ConnectorConfig;
use crate::connector::{Rejected, Sink};
use crate::error::{ConnectError, Result};
use async_trait::async_trait;
use runnel_log::ConsumerRecord;
use std::io::Write;

pub const KEYS: &[&str] = &["file", "topics"];

pub struct FileSink {
    path: String,
    topics: Vec<String>,
    file: Option<std::io::BufWriter<std::fs::File>>,
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
        Ok(Self {
            path: c.require("file")?.into(),
            topics,
            file: None,
        })
    }

    fn io(&self, e: std::io::Error) -> ConnectError {
        ConnectError::Io {
            path: self.path.clone(),
            source: e,
        }
    }
}

#[async_trait]
impl Sink for FileSink {
    fn topics(&self) -> Vec<String> {
        self.topics.clone()
    }

    async fn put(&mut self, records: &[ConsumerRecord]) -> Result<Vec<Rejected>> {
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| self.io(e))?;
            self.file = Some(std::io::BufWriter::with_capacity(1 << 20, f));
        }
        let w = self.file.as_mut().expect("opened above");
        let mut res = Ok(());
        for r in records {
            if let Some(v) = &r.record.value {
                res = w.write_all(v).and_then(|_| w.write_all(b"\n"));
                if res.is_err() {
                    break;
                }
            }
        }
        res.map_err(|e| self.io(e))?;
        Ok(Vec::new())
    }

    async fn flush(&mut self) -> Result<()> {
        if let Some(w) = &mut self.file {
            let r = w.flush().and_then(|_| w.get_ref().sync_data());
            r.map_err(|e| self.io(e))?;
        }
        Ok(())
    }
}
