//! `file-source` (Kafka's `FileStreamSource`): the lines of files, tailed as they grow and
//! followed through rotation.
//!
//! Keys: `file` (a path, or a glob whose last component has `*` / `?`, e.g. `logs/*.jsonl`) or
//! `directory` (every regular file in it not starting with `.`), `topic`, `format` (`text` |
//! `json` | `csv`; default `text`), `batch.max.lines` (lines per poll, default 100,000: the
//! worker stores the offsets after each poll's lines are written, so a crash replays at most
//! that many).
//!
//! Files are read in blocks of 8 MiB; text and JSON lines are handed on as spans of the block
//! ([`SourceRun`]), never copied one by one, and the worker encodes them straight into log
//! batches.
//!
//! Each file is a source partition, named by its inode (`{"inode": n}`); its offset is
//! `{"position": byte after the line, "filename": path}`, so a restart resumes exactly (an
//! offset is stored after its lines are written: a crash replays at most a poll's lines).
//! Offsets of earlier versions, keyed by path, are honoured ([`resume`](super::resume) has the
//! upgrade rules). Only complete lines are read from a live file.
//!
//! `tasks.max = n`: a glob or directory runs as `n` tasks, task `i` reading the files whose
//! inode mod `n` is `i` (`task.share = "i/n"` in its configuration), so a file stays with one
//! task through renames and truncation, and a restart with another `n` resumes every file
//! where it was. Lines keep their order within a file, not across files. A single `file`
//! runs as one task whatever `tasks.max` says (its task logs so).
//!
//! Rotation, as `tail -F` follows it: when a path names a new file (renamed away and created
//! again), the old file is read to its end through the handle still open, its last line even
//! without a newline, and the new one from 0 (after the old one when both are the same task's);
//! if the glob also matches the old file's new name, it goes on there from its position (same
//! inode), not from 0. A file shorter than its position was truncated: reading starts again at
//! 0. A file rotated while the worker was down is found again by its inode when it is first
//! listed; one appearing later is new.
//!
//! Formats: `text` hands each line on as a string; `json` checks it is JSON and hands a bad
//! line on with its error (dead-letter topic under `errors.tolerance = all`); `csv` takes the
//! first line of each file as the field names and makes each further line a JSON object of
//! strings (RFC 4180 quoting on one line; `Cast` types them), a line with another number of
//! fields being an error record.

use crate::api::{Source, SourceBatch, SourceRun};
use crate::config::ConnectorConfig;
use crate::csv;
use crate::error::{ConnectError, Result};
use crate::file::resume::{self, Share, Stored};
use crate::file::{Format, json_line};
use async_trait::async_trait;
use bytes::BytesMut;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The keys of a `file-source`.
#[derive(Debug, serde::Deserialize)]
struct Config {
    file: Option<String>,
    directory: Option<String>,
    topic: String,
    #[serde(default)]
    format: Format,
    #[serde(rename = "batch.max.lines", default = "default_max_lines")]
    max_lines: usize,
    /// Set by [`FileSource::split`] on each task's configuration: `"i/n"`.
    #[serde(rename = "task.share")]
    share: Option<String>,
}

fn default_max_lines() -> usize {
    100_000
}

/// Which files: those of `dir` whose name matches `name` (any with `None`).
#[derive(Debug, Clone)]
struct Selection {
    dir: PathBuf,
    name: Option<String>,
    glob: bool,
}

struct Tracked {
    path: String,
    inode: u64,
    file: File,
    position: u64,
    line_no: u64,
    header: Option<Vec<String>>,
    /// Bytes read after `position`, not handed on yet.
    pending: BytesMut,
}

pub struct FileSource {
    selection: Selection,
    topic: String,
    format: Format,
    max_lines: usize,
    files: BTreeMap<String, Tracked>,
    /// Rotated away: read to the end, then dropped.
    draining: Vec<Tracked>,
    /// This task's files, when the connector is split over tasks.
    share: Option<Share>,
    /// `tasks.max`, for saying why a single file runs as one task.
    tasks_max: u32,
    /// Stored offsets not yet claimed; `None` once the files were first listed.
    stored: Option<Stored>,
}

impl FileSource {
    /// A source of `c`'s files; nothing is opened before [`Source::start`].
    ///
    /// # Errors
    /// [`ConnectError::Config`] for a key or value [`ConnectorConfig::parse`] refuses, both or
    /// neither of `file` and `directory`, a `file` whose directory part has `*` or `?`, or a
    /// `task.share` other than `"i/n"` with `i < n`.
    pub fn new(c: &ConnectorConfig) -> Result<Self> {
        let config: Config = c.parse()?;
        let share =
            match config.share.as_deref() {
                None => None,
                Some(s) => Some(Share::parse(s).ok_or_else(|| {
                    c.error(format!("task.share = {s:?}: use \"i/n\" with i < n"))
                })?),
            };
        let selection = match (config.file.as_deref(), config.directory) {
            (Some(_), Some(_)) => {
                return Err(c.error("set file (a path or a glob) or directory, not both".into()));
            }
            (None, None) => {
                return Err(c.error("missing required key \"file\" (or \"directory\")".into()));
            }
            (None, Some(d)) => Selection {
                dir: d.into(),
                name: None,
                glob: true,
            },
            (Some(f), None) => {
                let p = Path::new(f);
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| c.error(format!("file = {f:?} names no file")))?;
                let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
                if dir.to_string_lossy().contains(['*', '?']) {
                    return Err(c.error(format!(
                        "file = {f:?}: only the last component may have * or ?"
                    )));
                }
                Selection {
                    glob: name.contains(['*', '?']),
                    dir,
                    name: Some(name),
                }
            }
        };
        Ok(Self {
            selection,
            topic: config.topic,
            format: config.format,
            max_lines: config.max_lines.max(1),
            files: BTreeMap::new(),
            draining: Vec::new(),
            share,
            tasks_max: c.common()?.tasks_max.unwrap_or(1),
            stored: None,
        })
    }

    /// The configurations of at most `n` tasks: a glob or a directory is split by inode, each
    /// task's share in `task.share` (see [`resume`](super::resume)); a single file runs as one
    /// task whatever `n` is.
    ///
    /// # Errors
    /// What [`FileSource::new`] refuses.
    pub fn split(c: &ConnectorConfig, n: usize) -> Result<Vec<ConnectorConfig>> {
        if !Self::new(c)?.selection.glob {
            return Ok(vec![c.clone()]);
        }
        Ok((0..n)
            .map(|i| {
                let mut task = c.clone();
                task.props.insert("task.share".into(), format!("{i}/{n}"));
                task
            })
            .collect())
    }

    /// The matching files of this task's share now: (path, inode), in path order, one path
    /// per inode (a hard link or a symbolic link to a file also listed is the same file).
    fn discover(&self) -> Result<Vec<(String, u64)>> {
        let s = &self.selection;
        let mut out = Vec::new();
        if !s.glob {
            let path = s.dir.join(s.name.as_deref().unwrap_or_default());
            if let Ok(m) = std::fs::metadata(&path) {
                out.push((path.to_string_lossy().into_owned(), m.ino()));
            }
            return Ok(out);
        }
        let dir = if s.dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &s.dir
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            // Not there yet: a tailing source waits for it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(ConnectError::Io {
                    path: dir.display().to_string(),
                    source: e,
                });
            }
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let wanted = match &s.name {
                Some(p) => glob_match(p, &name),
                None => !name.starts_with('.'),
            };
            if !wanted {
                continue;
            }
            if let Ok(m) = std::fs::metadata(e.path())
                && m.is_file()
            {
                out.push((s.dir.join(&name).to_string_lossy().into_owned(), m.ino()));
            }
        }
        out.retain(|(_, inode)| self.share.is_none_or(|s| s.owns(*inode)));
        out.sort();
        let mut seen = std::collections::BTreeSet::new();
        out.retain(|(_, inode)| seen.insert(*inode));
        Ok(out)
    }

    /// Follows renames and new files; see the module documentation.
    fn refresh(&mut self) -> Result<()> {
        let found = self.discover()?;
        let now: BTreeMap<&str, u64> = found.iter().map(|(p, i)| (p.as_str(), *i)).collect();
        let gone: Vec<String> = self
            .files
            .iter()
            .filter(|(p, t)| now.get(p.as_str()) != Some(&t.inode))
            .map(|(p, _)| p.clone())
            .collect();
        // Whether every file listed was opened as listed (none renamed meanwhile).
        let mut settled = true;
        for p in gone {
            let t = self.files.remove(&p).expect("listed above");
            tracing::info!(file = %p, "rotated or removed: reading the old file to its end");
            self.draining.push(t);
        }
        for (path, inode) in found {
            if self.files.contains_key(&path) {
                continue;
            }
            // The old file under its new name: go on where it was.
            if let Some(i) = self.draining.iter().position(|t| t.inode == inode) {
                let mut t = self.draining.remove(i);
                t.path = path.clone();
                self.files.insert(path, t);
                continue;
            }
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    settled = false;
                    continue;
                }
                Err(e) => return Err(ConnectError::Io { path, source: e }),
            };
            if file.metadata().map(|m| m.ino()).ok() != Some(inode) {
                // Rotated since it was listed: the next listing sees which file it is (and
                // whose: another task may own the new inode).
                settled = false;
                continue;
            }
            // Rotated while the worker was down, the file is found by its inode.
            let position = self.stored.as_mut().map_or(0, |s| s.claim(&path, inode));
            self.files.insert(
                path.clone(),
                Tracked {
                    path,
                    inode,
                    file,
                    position,
                    line_no: 0,
                    header: None,
                    pending: BytesMut::new(),
                },
            );
        }
        // Once every file listed was opened, files appearing are new: see the resume module.
        if settled {
            self.stored = None;
        }
        Ok(())
    }

    /// Reads the complete lines of one file (and its last partial one when `last`), up to
    /// `room` records, as runs into `out`; returns whether it consumed any line, and how many
    /// records it made.
    ///
    /// Lines come from `t.pending`, the bytes read past `t.position` and not yet handed on;
    /// it is refilled with a block of up to [`BLOCK`] bytes only once it holds no complete
    /// line, so a line is read once and only a partial last line is copied. Text and JSON lines
    /// are handed on as spans of that block; a bad line ends the run before it and makes a run
    /// of its own, so its offset names it.
    fn read(
        &self,
        t: &mut Tracked,
        room: usize,
        last: bool,
        out: &mut SourceBatch,
    ) -> Result<(bool, usize)> {
        let io = |e| ConnectError::Io {
            path: t.path.clone(),
            source: e,
        };
        let len = t.file.metadata().map_err(io)?.len();
        if len < t.position {
            tracing::info!(file = %t.path, "the file is shorter than its position: truncated, reading from the start");
            t.position = 0;
            t.line_no = 0;
            t.header = None;
            t.pending.clear();
        }
        if self.format == Format::Csv && t.header.is_none() && t.position > 0 {
            let mut first = String::new();
            let f = t.file.try_clone().map_err(io)?;
            let mut r = BufReader::new(f);
            r.seek(SeekFrom::Start(0)).map_err(io)?;
            r.read_line(&mut first).map_err(io)?;
            t.header =
                Some(csv::Reader::new().line(first.trim_end_matches(['\n', '\r']).as_bytes()));
        }
        let mut cursor = t.position + t.pending.len() as u64;
        if cursor < len && memchr::memchr(b'\n', &t.pending).is_none() {
            // Only a partial line (or nothing) is left: read the next block after it.
            let more = (len - cursor).min(BLOCK) as usize;
            let mut block = Vec::with_capacity(t.pending.len() + more);
            block.extend_from_slice(&t.pending);
            t.file.seek(SeekFrom::Start(cursor)).map_err(io)?;
            (&mut t.file)
                .take(BLOCK)
                .read_to_end(&mut block)
                .map_err(io)?;
            t.pending = BytesMut::from(bytes::Bytes::from(block));
            cursor = t.position + t.pending.len() as u64;
        }
        // At the end of a rotated file: its last line counts without a newline.
        let eof = last && cursor >= len;
        let mut csv = (self.format == Format::Csv).then(csv::Reader::new);
        let mut cut = Cutter {
            source: self,
            t: &mut *t,
            out: &mut *out,
            base: 0,
            lines: Vec::new(),
            built: None,
        };
        let mut at = 0;
        let mut produced = 0;
        while produced < room {
            let pending = &cut.t.pending[at - cut.base..];
            let (end, next) = match memchr::memchr(b'\n', pending) {
                Some(nl) => (at + nl, at + nl + 1),
                None if eof && !pending.is_empty() => (at + pending.len(), at + pending.len()),
                None => break,
            };
            cut.t.line_no += 1;
            let end = if end > at && cut.t.pending[end - 1 - cut.base] == b'\r' {
                end - 1
            } else {
                end
            };
            let line = &cut.t.pending[at - cut.base..end - cut.base];
            match self.format {
                Format::Text => cut.lines.push(at..end),
                Format::Json => match json_line::check(line) {
                    Ok(_) => cut.lines.push(at..end),
                    Err(e) => {
                        let error = format!("{}:{}: not JSON: {e}", cut.t.path, cut.t.line_no);
                        cut.bad(at, end, next, error);
                    }
                },
                Format::Csv => {
                    let fields = csv.as_mut().expect("a CSV reader").line(line);
                    match &cut.t.header {
                        None => {
                            // The header line: field names, no record; its offset counts.
                            cut.t.header = Some(fields);
                            cut.close(at);
                            cut.close(next);
                            let run = SourceRun::marker(cut.partition(), cut.offset(next));
                            cut.out.push(run);
                            at = next;
                            continue;
                        }
                        Some(h) if h.len() != fields.len() => {
                            let error = format!(
                                "{}:{}: {} fields where the header has {}",
                                cut.t.path,
                                cut.t.line_no,
                                fields.len(),
                                h.len()
                            );
                            cut.bad(at, end, next, error);
                        }
                        Some(h) => {
                            let o: serde_json::Map<String, Value> = h
                                .iter()
                                .cloned()
                                .zip(fields.into_iter().map(Value::from))
                                .collect();
                            let value = serde_json::to_vec(&o).expect("JSON serializes");
                            let topic = &self.topic;
                            cut.built
                                .get_or_insert_with(|| {
                                    SourceRun::new(topic.clone(), Value::Null, Value::Null)
                                })
                                .push(None, Some(&value));
                        }
                    }
                }
            }
            at = next;
            produced += 1;
        }
        cut.close(at);
        t.position += at as u64;
        Ok((at > 0, produced))
    }
}

/// Bytes a [`FileSource`] reads from a file at a time.
const BLOCK: u64 = 8 << 20;

/// Cuts the lines read from one file into runs. Positions are relative to the file's
/// position; the open run's records are `lines` (spans of the pending bytes) or, for CSV,
/// `built`.
struct Cutter<'a> {
    source: &'a FileSource,
    t: &'a mut Tracked,
    out: &'a mut SourceBatch,
    /// Where `t.pending` starts now (the bytes before were split off into runs).
    base: usize,
    lines: Vec<std::ops::Range<usize>>,
    built: Option<SourceRun>,
}

impl Cutter<'_> {
    fn partition(&self) -> Value {
        resume::partition(self.t.inode)
    }

    /// The offset of the byte at `at`.
    fn offset(&self, at: usize) -> Value {
        resume::offset(self.t.position + at as u64, &self.t.path)
    }

    /// Ends the open run at `at`: it takes the pending bytes before `at` (CSV's drops them).
    fn close(&mut self, at: usize) {
        let data = self.t.pending.split_to(at - self.base);
        let base = std::mem::replace(&mut self.base, at);
        if let Some(mut run) = self.built.take() {
            (run.partition, run.offset) = (self.partition(), self.offset(at));
            self.out.push(run);
        }
        if !self.lines.is_empty() {
            let ranges: Vec<_> = self
                .lines
                .drain(..)
                .map(|r| r.start - base..r.end - base)
                .collect();
            let run = SourceRun::new(self.source.topic.clone(), self.partition(), self.offset(at));
            let mut run = run.with_values(data, ranges);
            run.text = self.source.format == Format::Text;
            self.out.push(run);
        }
    }

    /// The line `at..end` (its newline ends at `next`) is bad: a run of its own, with `error`.
    fn bad(&mut self, at: usize, end: usize, next: usize, error: String) {
        self.close(at);
        self.lines.push(at..end);
        self.close(next);
        self.out.last_mut().expect("closed with the bad line").error = Some(error);
    }
}

/// `*` (any run) and `?` (one character) against a file name.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[async_trait]
impl Source for FileSource {
    async fn start(&mut self, offsets: &[(Value, Value)]) -> Result<()> {
        let s = &self.selection;
        match self.share {
            Some(share) => tracing::info!(
                files = %s.dir.join(s.name.as_deref().unwrap_or("*")).display(),
                %share,
                "task {share}: reading the files whose inode mod {} is {}",
                share.count,
                share.index
            ),
            None if !s.glob && self.tasks_max > 1 => tracing::info!(
                file = %s.dir.join(s.name.as_deref().unwrap_or_default()).display(),
                "one file: one task, whatever tasks.max = {} says",
                self.tasks_max
            ),
            None => {}
        }
        self.stored = Some(Stored::new(offsets));
        Ok(())
    }

    async fn poll(&mut self) -> Result<SourceBatch> {
        self.refresh()?;
        let mut out = Vec::new();
        let mut room = self.max_lines;
        // Rotated files first: their lines are older.
        let mut draining = std::mem::take(&mut self.draining);
        let mut keep = Vec::new();
        for mut t in draining.drain(..) {
            let more = room > 0 && {
                let (more, made) = self.read(&mut t, room, true, &mut out)?;
                room -= made;
                more
            };
            if more || room == 0 {
                keep.push(t);
            }
        }
        self.draining = keep;
        let paths: Vec<String> = self.files.keys().cloned().collect();
        for p in paths {
            if room == 0 {
                break;
            }
            let mut t = self.files.remove(&p).expect("listed above");
            let r = self.read(&mut t, room, false, &mut out);
            self.files.insert(p, t);
            room -= r?.1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(props: Value) -> ConnectorConfig {
        ConnectorConfig::from_json(Some("files"), &props).unwrap()
    }

    /// The lines one poll of a source started from `offsets` hands on, and their partitions.
    fn first_poll(
        source: &mut FileSource,
        offsets: &[(Value, Value)],
    ) -> (Vec<String>, Vec<Value>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let runs = rt.block_on(async {
            source.start(offsets).await.unwrap();
            source.poll().await.unwrap()
        });
        let lines = runs
            .iter()
            .flat_map(|r| {
                r.records()
                    .map(|(_, v)| String::from_utf8_lossy(v.unwrap()).into())
            })
            .collect();
        (lines, runs.into_iter().map(|r| r.partition).collect())
    }

    fn inode(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn tasks_share_a_directory_by_inode_and_a_single_file_is_one_task() {
        let dir = tempfile::tempdir().unwrap();
        let mut want: Vec<String> = (0..7).map(|i| format!("line of f{i}")).collect();
        for (i, line) in want.iter().enumerate() {
            std::fs::write(dir.path().join(format!("f{i}")), format!("{line}\n")).unwrap();
        }
        let c = config(
            json!({"directory": dir.path().to_str().unwrap(), "topic": "t", "tasks.max": "3"}),
        );
        let tasks = FileSource::split(&c, 3).unwrap();
        assert_eq!(tasks.len(), 3);
        let mut got = Vec::new();
        for task in &tasks {
            got.extend(first_poll(&mut FileSource::new(task).unwrap(), &[]).0);
        }
        got.sort();
        want.sort();
        assert_eq!(got, want, "each file read by one task");

        let one = config(
            json!({"file": dir.path().join("f0").to_str().unwrap(), "topic": "t", "tasks.max": "3"}),
        );
        assert_eq!(FileSource::split(&one, 3).unwrap(), [one]);
    }

    /// Offsets keyed by path, as versions before `tasks.max` split files stored them: the
    /// upgraded source resumes each file where it was, one rotated while it was down too, and
    /// stores offsets keyed by inode from then on.
    #[test]
    fn offsets_stored_by_earlier_versions_are_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        std::fs::write(&a, "a1\na2\na3\n").unwrap();
        std::fs::write(&b, "b1\nb2\n").unwrap();
        let old = [
            (
                json!({"filename": a.to_str().unwrap()}),
                json!({"position": 3, "inode": inode(&a)}),
            ),
            (
                json!({"filename": b.to_str().unwrap()}),
                json!({"position": 6, "inode": inode(&b)}),
            ),
        ];
        // b rotated while the worker was down: its old file read to its end, the new one whole.
        let b1 = dir.path().join("b.log.1");
        std::fs::rename(&b, &b1).unwrap();
        let mut old_b = std::fs::OpenOptions::new().append(true).open(&b1).unwrap();
        std::io::Write::write_all(&mut old_b, b"b3\n").unwrap();
        std::fs::write(&b, "new1\n").unwrap();
        let c = config(json!({"file": format!("{}/*.log*", dir.path().display()), "topic": "t"}));
        let (mut lines, partitions) = first_poll(&mut FileSource::new(&c).unwrap(), &old);
        lines.sort();
        assert_eq!(lines, ["a2", "a3", "b3", "new1"]);
        assert!(
            partitions.iter().all(|p| p["inode"].is_u64()),
            "{partitions:?}"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.jsonl", "app.jsonl"));
        assert!(glob_match("app-?.log*", "app-1.log.2"));
        assert!(!glob_match("*.jsonl", "app.json"));
    }
}
