//! `parquet-sink`: JSON object records into Parquet files with a declared schema.
//!
//! Keys: `topics`, `directory`, `schema` (`name:type,...` with types `int32`, `int64`,
//! `float32`, `float64`, `boolean`, `string`, `timestamp` (epoch milliseconds); every column is
//! nullable), `rotate.rows` (default 100,000), `rotate.size.bytes`, `rotate.interval.ms`.
//!
//! One open file per topic partition, written as `<topic>-<partition>-<first offset>.parquet.tmp`
//! and renamed to `.parquet` once closed, so a reader never sees a file without its footer. A
//! file is closed when it reaches a rotation limit, when it has been open `rotate.interval.ms`
//! (checked as records arrive and while idle), and when the sink is dropped (the connector
//! deleted or the worker stopping). Only the offsets of closed files are committed
//! ([`Sink::durable_offsets`]): after a crash the records of the open file are read again, and
//! a replayed file gets the same name and contents, so nothing is lost or doubled.
//! `.parquet.tmp` files left by a crash are removed when the partition's first file opens.
//! A failed write or close (a full disk) fails the task, which the worker restarts with
//! backoff; the failed file is never renamed, and its records are read again.
//!
//! A record that is not a JSON object or has a value of the wrong type for its column is
//! rejected (dead-letter topic); fields outside the schema are ignored; missing ones are null.

use crate::api::{Rejected, Sink};
use crate::config::{ConnectorConfig, List};
use crate::error::{ConnectError, Result};
use crate::parquet::rows::Rows;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use runnel_log::{ConsumerRecord, RecordRun, TopicPartition};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The keys of a `parquet-sink`.
#[derive(Debug, serde::Deserialize)]
struct Config {
    topics: List,
    schema: String,
    directory: PathBuf,
    #[serde(rename = "rotate.rows", default = "default_rotate_rows")]
    rotate_rows: u64,
    #[serde(rename = "rotate.size.bytes", default)]
    rotate_size: u64,
    #[serde(rename = "rotate.interval.ms", default)]
    rotate_interval_ms: u64,
}

fn default_rotate_rows() -> u64 {
    100_000
}

struct OpenFile {
    writer: ArrowWriter<std::fs::File>,
    tmp: PathBuf,
    done: PathBuf,
    rows: u64,
    next_offset: u64,
    opened: Instant,
}

pub struct ParquetSink {
    topics: Vec<String>,
    directory: PathBuf,
    schema: SchemaRef,
    rotate_rows: u64,
    rotate_size: u64,
    rotate_interval: Option<Duration>,
    open: BTreeMap<(String, u32), OpenFile>,
    /// Partitions whose leftover `.tmp` files were cleared.
    cleared: std::collections::HashSet<(String, u32)>,
    /// Offsets made durable by closing files, not yet handed to the worker.
    durable: BTreeMap<(String, u32), u64>,
    /// Rows of one partition gathered during a `put`, written to its file in one batch.
    rows: Rows,
}

fn parse_schema(spec: &str) -> std::result::Result<Schema, String> {
    let mut fields = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, ty) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?}: expected name:type"))?;
        let dt = match ty.trim() {
            "int32" => DataType::Int32,
            "int64" => DataType::Int64,
            "float32" => DataType::Float32,
            "float64" => DataType::Float64,
            "boolean" => DataType::Boolean,
            "string" => DataType::Utf8,
            "timestamp" => DataType::Timestamp(TimeUnit::Millisecond, None),
            t => {
                return Err(format!(
                    "{name}: type {t:?}: use int32, int64, float32, float64, boolean, string or timestamp"
                ));
            }
        };
        fields.push(Field::new(name.trim(), dt, true));
    }
    if fields.is_empty() {
        return Err("declares no column".into());
    }
    Ok(Schema::new(fields))
}

impl ParquetSink {
    /// A sink to `c`'s directory; files are opened as records arrive.
    ///
    /// # Errors
    /// [`ConnectError::Config`] for a key or value [`ConnectorConfig::parse`] refuses, an empty
    /// `topics`, or a `schema` that declares no column or a type not supported.
    pub fn new(c: &ConnectorConfig) -> Result<Self> {
        let config: Config = c.parse()?;
        let topics = config.topics.non_empty(c, "topics")?;
        let schema = parse_schema(&config.schema).map_err(|e| c.error(format!("schema: {e}")))?;
        let interval = config.rotate_interval_ms;
        let schema: SchemaRef = Arc::new(schema);
        Ok(Self {
            topics,
            directory: config.directory,
            rows: Rows::new(schema.clone()),
            schema,
            rotate_rows: config.rotate_rows.max(1),
            rotate_size: config.rotate_size,
            rotate_interval: (interval > 0).then(|| Duration::from_millis(interval)),
            open: BTreeMap::new(),
            cleared: Default::default(),
            durable: BTreeMap::new(),
        })
    }

    fn io(&self, path: &std::path::Path, e: impl std::fmt::Display) -> ConnectError {
        ConnectError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        }
    }

    fn open_file(&mut self, topic: &str, partition: u32, first: u64) -> Result<()> {
        let key = (topic.to_string(), partition);
        if self.open.contains_key(&key) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.directory).map_err(|e| self.io(&self.directory, e))?;
        let stem = format!("{topic}-{partition}-");
        if self.cleared.insert(key.clone()) {
            // A crash's unfinished files: their records were not committed and come again.
            if let Ok(entries) = std::fs::read_dir(&self.directory) {
                for e in entries.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.starts_with(&stem) && n.ends_with(".parquet.tmp") {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        let done = self.directory.join(format!("{stem}{first:020}.parquet"));
        let tmp = self
            .directory
            .join(format!("{stem}{first:020}.parquet.tmp"));
        let file = std::fs::File::create(&tmp).map_err(|e| self.io(&tmp, e))?;
        let writer =
            ArrowWriter::try_new(file, self.schema.clone(), None).map_err(|e| self.io(&tmp, e))?;
        self.open.insert(
            key,
            OpenFile {
                writer,
                tmp,
                done,
                rows: 0,
                next_offset: first,
                opened: Instant::now(),
            },
        );
        Ok(())
    }

    /// Writes the footer, syncs, renames; the file's offsets become durable.
    fn close(&mut self, key: &(String, u32)) -> Result<()> {
        let Some(f) = self.open.remove(key) else {
            return Ok(());
        };
        let (tmp, done) = (f.tmp.clone(), f.done.clone());
        let closed = f
            .writer
            .into_inner()
            .map_err(|e| self.io(&tmp, e))
            .and_then(|file| file.sync_all().map_err(|e| self.io(&tmp, e)))
            .and_then(|()| std::fs::rename(&tmp, &done).map_err(|e| self.io(&done, e)));
        if let Err(e) = closed {
            // Its records come again; on a full disk its bytes are the space they need.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Ok(d) = std::fs::File::open(&self.directory) {
            let _ = d.sync_all();
        }
        self.durable.insert(key.clone(), f.next_offset);
        Ok(())
    }

    fn close_expired(&mut self) -> Result<()> {
        if let Some(every) = self.rotate_interval {
            let expired: Vec<_> = self
                .open
                .iter()
                .filter(|(_, f)| f.opened.elapsed() >= every && f.rows > 0)
                .map(|(k, _)| k.clone())
                .collect();
            for k in expired {
                self.close(&k)?;
            }
        }
        Ok(())
    }

    /// Puts records given as (topic, partition, offset, value), in order.
    fn put_all<'a>(
        &mut self,
        records: impl Iterator<Item = (&'a str, u32, u64, Option<&'a [u8]>)>,
    ) -> Result<Vec<Rejected>> {
        self.close_expired()?;
        let mut rejected = Vec::new();
        // The partition whose rows `self.rows` gathers, and the offset after its last one.
        let mut gathering: Option<((String, u32), u64)> = None;
        for (index, (topic, partition, offset, value)) in records.enumerate() {
            let Some(v) = value else {
                continue;
            };
            let same = gathering
                .as_ref()
                .is_some_and(|((t, p), _)| t == topic && *p == partition);
            if !same && let Some((key, next)) = gathering.take() {
                self.write_rows(&key, next)?;
            }
            if let Err(reason) = self.rows.push(v) {
                rejected.push(Rejected { index, reason });
                continue;
            }
            let (key, next) =
                gathering.get_or_insert_with(|| ((topic.to_string(), partition), offset));
            if self.rows.len() == 1 {
                // The file's name is its first row's offset.
                self.open_file(&key.0, key.1, offset)?;
            }
            *next = offset + 1;
            let written = self.open.get(key).expect("opened above").rows;
            if written + self.rows.len() as u64 >= self.rotate_rows {
                let (key, next) = gathering.take().expect("set above");
                self.write_rows(&key, next)?;
            }
        }
        if let Some((key, next)) = gathering {
            self.write_rows(&key, next)?;
        }
        Ok(rejected)
    }

    /// Writes the gathered rows of partition `key` to its open file, `next` the offset after
    /// the last of them; closes the file when it reached a rotation limit.
    fn write_rows(&mut self, key: &(String, u32), next: u64) -> Result<()> {
        let rows = self.rows.len() as u64;
        let batch = self.rows.finish().map_err(|e| ConnectError::Record {
            what: format!("parquet-sink {}-{}", key.0, key.1),
            message: e,
        })?;
        let f = self.open.get_mut(key).expect("opened with its first row");
        if let Err(e) = f.writer.write(&batch) {
            // A writer that failed mid-row-group (a full disk) must not get a footer when the
            // sink is dropped: its records come again, into a new file.
            let f = self.open.remove(key).expect("opened above");
            let _ = std::fs::remove_file(&f.tmp);
            return Err(ConnectError::Io {
                path: f.tmp.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            });
        }
        f.rows += rows;
        f.next_offset = next;
        let size = f.writer.bytes_written() as u64 + f.writer.in_progress_size() as u64;
        if f.rows >= self.rotate_rows || (self.rotate_size > 0 && size >= self.rotate_size) {
            self.close(key)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for ParquetSink {
    fn topics(&self) -> Vec<String> {
        self.topics.clone()
    }

    async fn put(&mut self, records: &[ConsumerRecord]) -> Result<Vec<Rejected>> {
        self.put_all(records.iter().map(|r| {
            let value = r.record.value.as_deref();
            (&*r.topic, r.partition, r.record.offset, value)
        }))
    }

    async fn put_runs(&mut self, runs: &[RecordRun]) -> Result<Vec<Rejected>> {
        self.put_all(runs.iter().flat_map(|run| {
            let topic = &*run.topic;
            run.iter()
                .map(move |r| (topic, run.partition, r.offset, r.value))
        }))
    }

    async fn flush(&mut self) -> Result<()> {
        // Open files become durable only when closed; see durable_offsets.
        Ok(())
    }

    fn durable_offsets(&mut self) -> Option<Vec<(TopicPartition, u64)>> {
        if let Err(e) = self.close_expired() {
            tracing::warn!(error = %e, "closing an expired Parquet file failed; trying again later");
        }
        Some(
            std::mem::take(&mut self.durable)
                .into_iter()
                .map(|((t, p), o)| (TopicPartition::new(&*t, p), o))
                .collect(),
        )
    }
}

impl Drop for ParquetSink {
    /// Shutdown closes the open files, footers written, so what they hold is readable.
    fn drop(&mut self) {
        let keys: Vec<_> = self.open.keys().cloned().collect();
        for k in keys {
            if let Err(e) = self.close(&k) {
                tracing::warn!(error = %e, "closing a Parquet file at shutdown failed");
            }
        }
    }
}
