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
//!
//! A failed write or sync (a full disk, an I/O error) is an error naming the file and the
//! cause, never a rejected record: the worker marks the task FAILED and restarts it with
//! backoff, and nothing after the last flush is committed. Before the error is returned,
//! what is buffered is dropped and the file is cut back to its length at the last successful
//! flush (the committed length under exactly-once), so no torn line stays for the replayed
//! records to be glued to. A file whose end is not a line's end when the sink opens it (a
//! crash in the middle of a write) is cut back to its last complete line.
//!
//! With `exactly.once.support = required` each flush, after the sync, commits by rename a
//! sidecar `<file>.offsets` holding the file's length, its rotation generation and the next
//! offset per partition; rotations wait for that commit. At start the file is cut back to the
//! committed length (what a crash wrote after it goes) and the worker resumes from the
//! committed offsets, so the files never hold a record twice.

use crate::api::{Rejected, Sink};
use crate::config::{ConnectorConfig, List};
use crate::csv;
use crate::error::{ConnectError, Result};
use crate::file::{Format, json_line};
use async_trait::async_trait;
use runnel_log::{ConsumerRecord, RecordRun, TopicPartition};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

/// The keys of a `file-sink`.
#[derive(Debug, serde::Deserialize)]
struct Config {
    topics: List,
    file: String,
    #[serde(default)]
    format: Format,
    #[serde(rename = "rotate.size.bytes", default)]
    rotate_size: u64,
    #[serde(rename = "rotate.interval.ms", default)]
    rotate_interval_ms: u64,
}

struct Open {
    w: std::io::BufWriter<std::fs::File>,
    /// Bytes put, buffered ones included.
    size: u64,
    /// The length as of the last successful flush (under exactly-once, commit): where a
    /// failed write cuts the file back to.
    durable: u64,
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
    /// Exactly-once: the committed state, and whether a rotation waits for the next commit.
    commits: Option<Commits>,
}

/// What `<file>.offsets` holds: the file as of the last commit and where reading resumes.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Committed {
    /// Rotations so far (the last rotated file is `<file>.<generation>`).
    generation: u64,
    length: u64,
    offsets: Vec<(String, u32, u64)>,
}

#[derive(Default)]
struct Commits {
    committed: Committed,
    /// The next offset per partition of what was put since.
    next: BTreeMap<(String, u32), u64>,
    rotate_due: bool,
}

impl FileSink {
    /// A sink to `c`'s file; the file is opened at the first put.
    ///
    /// # Errors
    /// [`ConnectError::Config`] for a key or value [`ConnectorConfig::parse`] refuses, or an
    /// empty `topics`.
    pub fn new(c: &ConnectorConfig) -> Result<Self> {
        let config: Config = c.parse()?;
        let interval = config.rotate_interval_ms;
        Ok(Self {
            topics: config.topics.non_empty(c, "topics")?,
            path: config.file,
            format: config.format,
            rotate_size: config.rotate_size,
            rotate_interval: (interval > 0).then(|| Duration::from_millis(interval)),
            file: None,
            commits: c.common()?.exactly_once().then(Commits::default),
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
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)?;
        let mut size = f.metadata()?.len();
        // Under exactly-once the committed length decided it already (`recover`).
        if self.commits.is_none() && size > 0 {
            let complete = last_line_end(&mut f, size)?;
            if complete < size {
                tracing::warn!(file = %self.path, length = complete, dropped = size - complete,
                    "cutting a torn last line (a write interrupted by a crash or a full disk)");
                f.set_len(complete)?;
                size = complete;
            }
        }
        // Appending to a CSV file from before: its header is the first line.
        let header = if self.format == Format::Csv && size > 0 {
            let mut first = String::new();
            std::io::BufReader::new(std::fs::File::open(&self.path)?).read_line(&mut first)?;
            Some(csv::Reader::new().line(first.trim_end_matches(['\n', '\r']).as_bytes()))
        } else {
            None
        };
        self.file = Some(Open {
            w: std::io::BufWriter::with_capacity(1 << 20, f),
            size,
            durable: size,
            opened: Instant::now(),
            header,
        });
        Ok(())
    }

    /// Rotates now, or under exactly-once at the next commit (so that a rotated file holds
    /// committed records only).
    fn rotate_or_defer(&mut self) -> std::io::Result<()> {
        match &mut self.commits {
            Some(c) => {
                c.rotate_due = true;
                Ok(())
            }
            None => self.rotate().map(drop),
        }
    }

    /// Syncs and renames the current file to `<file>.<n>`; returns `n`.
    fn rotate(&mut self) -> std::io::Result<u64> {
        let Some(open) = &mut self.file else {
            return Ok(0);
        };
        // Still in `self.file` if this fails, for `abandon` to cut back.
        open.w.flush()?;
        open.w.get_ref().sync_data()?;
        self.file = None;
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
        std::fs::File::open(dir)?.sync_all()?;
        Ok(n)
    }

    fn sidecar(&self) -> String {
        format!("{}.offsets", self.path)
    }

    /// Exactly-once: records the synced file's length and the offsets after what it holds,
    /// by rename; then performs a rotation that was waiting for it.
    fn commit(&mut self) -> Result<()> {
        let length = self.file.as_ref().map_or(0, |o| o.size);
        let Some(c) = &mut self.commits else {
            return Ok(());
        };
        let mut offsets: BTreeMap<(String, u32), u64> = c
            .committed
            .offsets
            .iter()
            .map(|(t, p, o)| ((t.clone(), *p), *o))
            .collect();
        offsets.extend(std::mem::take(&mut c.next));
        c.committed.offsets = offsets.into_iter().map(|((t, p), o)| (t, p, o)).collect();
        c.committed.length = length;
        let rotate = std::mem::take(&mut c.rotate_due);
        self.write_sidecar()?;
        if rotate {
            let generation = self.rotate().map_err(|e| self.io(e))?;
            let c = self.commits.as_mut().expect("exactly-once");
            c.committed.generation = generation;
            c.committed.length = 0;
            self.write_sidecar()?;
        }
        Ok(())
    }

    /// Errors name the sidecar: that is the file that could not be written.
    fn write_sidecar(&self) -> Result<()> {
        let c = &self.commits.as_ref().expect("exactly-once").committed;
        let path = self.sidecar();
        let tmp = format!("{path}.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(c).expect("offsets serialize"))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            let dir = std::path::Path::new(&path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|source| ConnectError::Io {
            path: path.clone(),
            source,
        })
    }

    /// After a failed write, sync or commit: drops what is buffered (writing it now could
    /// tear a line) and cuts the file back to its last durable length, from which the worker
    /// replays. If the cut fails too, the next open cuts the torn line (at-least-once) or
    /// `recover` cuts to the commit (exactly-once).
    fn abandon(&mut self) {
        let Some(open) = self.file.take() else { return };
        let durable = open.durable;
        let (f, _dropped) = open.w.into_parts();
        let cut = f.metadata().and_then(|m| {
            if m.len() > durable {
                f.set_len(durable)
            } else {
                Ok(())
            }
        });
        if let Err(e) = cut {
            tracing::warn!(file = %self.path, length = durable, error = %e,
                "cannot cut the file back after a failed write");
        }
    }

    /// [`Self::abandon`], then the error naming the file.
    fn fail(&mut self, e: std::io::Error) -> ConnectError {
        self.abandon();
        self.io(e)
    }

    /// Exactly-once, at start: the committed state, with the file cut back to it. A rotation
    /// done after the last commit (its file exists) committed nothing new: the current file
    /// then holds only what a crash wrote after it.
    fn recover(&mut self) -> std::io::Result<Vec<(TopicPartition, u64)>> {
        let mut committed: Committed = match std::fs::read(self.sidecar()) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", self.sidecar())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Committed::default(),
            Err(e) => return Err(e),
        };
        let next_rotation = format!("{}.{}", self.path, committed.generation + 1);
        if std::path::Path::new(&next_rotation).exists() {
            committed.generation += 1;
            committed.length = 0;
        }
        match std::fs::OpenOptions::new().write(true).open(&self.path) {
            Ok(f) if f.metadata()?.len() > committed.length => {
                tracing::info!(file = %self.path, length = committed.length,
                    "cutting the file back to its last commit");
                f.set_len(committed.length)?;
                f.sync_all()?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let offsets = committed
            .offsets
            .iter()
            .map(|(t, p, o)| (TopicPartition::new(t, *p), *o))
            .collect();
        self.commits = Some(Commits {
            committed,
            ..Default::default()
        });
        Ok(offsets)
    }

    /// The line of a record (without its newline), or why the format refuses it. Text, and
    /// JSON on one line, are the value's own bytes.
    fn line<'v>(
        &self,
        value: &'v [u8],
        header: &mut Option<Vec<String>>,
    ) -> std::result::Result<Cow<'v, [u8]>, String> {
        match self.format {
            Format::Text => Ok(value.into()),
            Format::Json if !value.contains(&b'\n') => {
                json_line::check(value).map_err(|e| format!("not JSON: {e}"))?;
                Ok(value.into())
            }
            Format::Json => {
                let v: Value =
                    serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
                Ok(serde_json::to_vec(&v).expect("JSON serializes").into())
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
                let csv = csv::Writer::new();
                if header.is_none() {
                    let h: Vec<String> = o.keys().cloned().collect();
                    csv.record(h.iter().map(|c| Some(c.as_bytes())), &mut out);
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
                let cells: Vec<Cow<str>> = h
                    .iter()
                    .map(|k| match o.get(k) {
                        None | Some(Value::Null) => "".into(),
                        Some(Value::String(s)) => s.as_str().into(),
                        Some(v) => v.to_string().into(),
                    })
                    .collect();
                csv.record(cells.iter().map(|c| Some(c.as_bytes())), &mut out);
                Ok(out.into())
            }
        }
    }

    /// Before a put: rotates (or, under exactly-once, marks for rotation) a file open longer
    /// than `rotate.interval.ms`.
    fn rotate_if_old(&mut self) -> Result<()> {
        if let (Some(every), Some(open)) = (self.rotate_interval, &self.file)
            && open.opened.elapsed() >= every
            && open.size > 0
            && let Err(e) = self.rotate_or_defer()
        {
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// Exactly-once: the record at `offset` of `topic`-`partition` is put.
    fn consumed(&mut self, topic: &str, partition: u32, offset: u64) {
        if let Some(c) = &mut self.commits {
            c.next.insert((topic.to_string(), partition), offset + 1);
        }
    }

    /// Appends the line of one record's value (none for a null value); a value the format
    /// refuses goes into `rejected` as record `index`.
    fn put_value(
        &mut self,
        index: usize,
        value: Option<&[u8]>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<()> {
        let Some(v) = value else { return Ok(()) };
        if let Err(e) = self.open() {
            return Err(self.fail(e));
        }
        let mut header = self.file.as_mut().expect("opened above").header.take();
        let line = self.line(v, &mut header);
        let open = self.file.as_mut().expect("opened above");
        open.header = header;
        let line = match line {
            Ok(l) => l,
            Err(reason) => {
                rejected.push(Rejected { index, reason });
                return Ok(());
            }
        };
        let written = open
            .w
            .write_all(&line)
            .and_then(|()| open.w.write_all(b"\n"));
        if let Err(e) = written {
            return Err(self.fail(e));
        }
        open.size += line.len() as u64 + 1;
        if self.rotate_size > 0
            && open.size >= self.rotate_size
            && let Err(e) = self.rotate_or_defer()
        {
            return Err(self.fail(e));
        }
        Ok(())
    }
}

/// The length of `f` (of `size` bytes) up to and including its last newline: 0 when it has
/// none.
fn last_line_end(f: &mut std::fs::File, size: u64) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = vec![0u8; 64 << 10];
    let mut end = size;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[async_trait]
impl Sink for FileSink {
    fn topics(&self) -> Vec<String> {
        self.topics.clone()
    }

    async fn put(&mut self, records: &[ConsumerRecord]) -> Result<Vec<Rejected>> {
        self.rotate_if_old()?;
        let mut rejected = Vec::new();
        for (index, r) in records.iter().enumerate() {
            self.consumed(&r.topic, r.partition, r.record.offset);
            self.put_value(index, r.record.value.as_deref(), &mut rejected)?;
        }
        Ok(rejected)
    }

    async fn put_runs(&mut self, runs: &[RecordRun]) -> Result<Vec<Rejected>> {
        self.rotate_if_old()?;
        let (mut rejected, mut index) = (Vec::new(), 0);
        for run in runs {
            for r in run.iter() {
                self.put_value(index, r.value, &mut rejected)?;
                index += 1;
            }
            if let Some(last) = run.last() {
                self.consumed(&run.topic, run.partition, last.offset);
            }
        }
        Ok(rejected)
    }

    async fn flush(&mut self) -> Result<()> {
        if let Some(open) = &mut self.file
            && let Err(e) = open.w.flush().and_then(|_| open.w.get_ref().sync_data())
        {
            return Err(self.fail(e));
        }
        if let Err(e) = self.commit() {
            self.abandon();
            return Err(e);
        }
        if let Some(open) = &mut self.file {
            open.durable = open.size;
        }
        Ok(())
    }

    async fn stored_offsets(&mut self) -> Result<Option<Vec<(TopicPartition, u64)>>> {
        if self.commits.is_none() {
            return Ok(None);
        }
        self.recover().map(Some).map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_log::Record;

    fn record(offset: u64, value: &str) -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: 0,
            record: Record {
                offset,
                timestamp: 0,
                key: None,
                value: Some(value.as_bytes().to_vec().into()),
                headers: Vec::new(),
            },
        }
    }

    #[test]
    fn a_torn_last_line_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        // As a crash in the middle of a write leaves it.
        std::fs::write(&path, "a\nb\nhalf of c").unwrap();
        let config = ConnectorConfig::from_json(
            Some("s"),
            &serde_json::json!({"file": path.to_str().unwrap(), "topics": "t"}),
        )
        .unwrap();
        let mut sink = FileSink::new(&config).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            sink.put(&[record(2, "c"), record(3, "d")]).await.unwrap();
            sink.flush().await.unwrap();
        });
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\nc\nd\n");
    }

    #[test]
    fn a_file_without_a_newline_is_cut_to_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .unwrap();
        f.write_all(&vec![b'x'; 200 << 10]).unwrap();
        assert_eq!(last_line_end(&mut f, 200 << 10).unwrap(), 0);
        f.write_all(b"\n").unwrap();
        f.write_all(&vec![b'y'; 100 << 10]).unwrap();
        let size = (300 << 10) + 1;
        assert_eq!(last_line_end(&mut f, size).unwrap(), (200 << 10) + 1);
    }
}
