//! A task: one partition of one sub-topology — its operator chain, stores, and event time.
//!
//! Contract:
//! - Records reach the task as runs from one input partition, in offset order
//!   ([`Task::process`]). The task tracks, per input partition, the next offset to read and
//!   the highest event time seen; the watermark is the minimum over active partitions of
//!   (highest event time − allowed out-of-orderness). Partitions without records for the idle
//!   timeout do not hold the watermark back. A repartition partition's watermark is the
//!   minimum of the watermarks its writers (the upstream tasks) put into it as marker records.
//! - When the watermark rises, every source forwards it; operators close windows with it.
//! - With a bounded input, a partition ends at the end offset seen at start (a repartition
//!   partition when every writer said so); when all have ended, the task sends the final
//!   watermark (`i64::MAX`) and `End`.
//! - [`Task::prepare_commit`] sends a barrier through the chain and writes dirty store
//!   entries to the changelogs; the runner then flushes and commits [`Task::positions`].
//! - Operators fail by returning an error that names the place (see [`crate::operator`]);
//!   the runner calls into a task through [`Task::guard`], which also turns a panic of user
//!   code into such an error, so a failing task stops its run and never its thread.

use crate::error::{EngineError, Result};
use crate::operator::{Out, TaskCx};
use crate::record::{Control, Rec};
use crate::serdes::SerdeRef;
use crate::state::StoreHandle;
use bytes::Bytes;
use runnel_log::{Header, RecordRef, RecordRun, TopicPartition};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Header of the marker records that carry an upstream task's watermark through a repartition
/// topic. Value: `<writer partition>:<millis>`, `<writer>:idle`, `<writer>:end`, or
/// `<writer>:restart`, written when the task starts, before anything else it writes.
pub(crate) const WATERMARK_HEADER: &str = "runnel.watermark";

/// Header of repartitioned records: the writing task's partition, the offset of the input
/// record it derives from, and its index among the outputs of that input (big-endian
/// u32, u64, u32). A writer replays its input in the same order after a crash, so a reader
/// that remembers the last origin per writer drops exactly the records it already has.
pub(crate) const ORIGIN_HEADER: &str = "runnel.origin";

/// Last origin `(offset, index)` read per writer, kept with the reader's state so that it
/// matches the committed positions.
pub(crate) type DedupStore = crate::state::KeyValueStore<u32, (u64, u32)>;

pub(crate) fn encode_origin(writer: u32, offset: u64, index: u32) -> Bytes {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&writer.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&index.to_be_bytes());
    Bytes::from(b)
}

fn decode_origin(r: &RecordRef) -> Option<(u32, (u64, u32))> {
    let v = r.header(ORIGIN_HEADER)?.filter(|v| v.len() == 16)?;
    let u32_at = |i: usize| u32::from_be_bytes(v[i..i + 4].try_into().expect("4 bytes"));
    Some((
        u32_at(0),
        (
            u64::from_be_bytes(v[4..12].try_into().expect("8 bytes")),
            u32_at(12),
        ),
    ))
}

/// What to do with a record whose key or value cannot be deserialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDeserializeError {
    /// Stop the task with an error naming the record.
    Fail,
    /// Log it, send it to the dead-letter topic with the reason in headers, go on.
    #[default]
    LogAndContinue,
}

/// The entry point of a sub-topology for one input topic, whatever its record types.
pub(crate) trait SourceOp {
    /// Deserializes and forwards a run of records of one partition. Returns the highest event
    /// time among them.
    fn on_records(&mut self, cx: &mut TaskCx, records: &RecordRun) -> Result<Option<i64>>;
    fn on_control(&mut self, cx: &mut TaskCx, control: Control) -> Result<()>;
    /// Allowed out-of-orderness in milliseconds.
    fn out_of_orderness(&self) -> i64;
}

/// Turns a record's value bytes into the source's value type (streams and tables differ in
/// what a null means).
pub(crate) type DecodeValue<V> = Arc<dyn Fn(Option<&[u8]>) -> Result<V, String> + Send + Sync>;
pub(crate) type TimestampFn<K, V> = Arc<dyn Fn(&K, &V, i64) -> i64 + Send + Sync>;

pub(crate) struct TypedSource<K, V> {
    pub node: Arc<str>,
    pub key_serde: SerdeRef<K>,
    pub decode_value: DecodeValue<V>,
    pub timestamp: Option<TimestampFn<K, V>>,
    pub out_of_orderness: i64,
    pub on_error: OnDeserializeError,
    pub dead_letters: Arc<str>,
    /// For repartition topics: drops records already read (see [`ORIGIN_HEADER`]).
    pub dedup: Option<Rc<RefCell<DedupStore>>>,
    pub out: Out<K, V>,
}

impl<K: Clone + 'static, V: Clone + 'static> SourceOp for TypedSource<K, V> {
    fn on_records(&mut self, cx: &mut TaskCx, records: &RecordRun) -> Result<Option<i64>> {
        let mut batch = Vec::with_capacity(records.len());
        let mut max_ts = None::<i64>;
        // The last origin per writer, read from the store once per run and written back once.
        let mut last_seen: Vec<(u32, (u64, u32), bool)> = Vec::new();
        for rec in records.iter() {
            if is_marker(&rec) {
                continue;
            }
            if let Some(dedup) = &self.dedup
                && let Some((writer, origin)) = decode_origin(&rec)
            {
                let i = match last_seen.iter().position(|(w, _, _)| *w == writer) {
                    Some(i) => i,
                    None => {
                        let last = dedup.borrow_mut().get(&writer).copied();
                        last_seen.push((writer, last.unwrap_or((0, 0)), last.is_some()));
                        last_seen.len() - 1
                    }
                };
                let (_, last, known) = &mut last_seen[i];
                if *known && origin <= *last {
                    continue;
                }
                (*last, *known) = (origin, true);
            }
            let key = self.key_serde.deserialize(rec.key);
            let value = key
                .as_ref()
                .map_err(|e| ("key", e.clone()))
                .and_then(|_| (self.decode_value)(rec.value).map_err(|e| ("value", e)));
            let (key, value) = match value {
                Ok(v) => (key.expect("checked"), v),
                Err((what, reason)) => {
                    let dead_letters = &self.dead_letters;
                    reject(cx, self.on_error, dead_letters, records, &rec, what, reason)?;
                    continue;
                }
            };
            let ts = match &self.timestamp {
                Some(f) => {
                    cx.at(&self.node, rec.offset);
                    f(&key, &value, rec.timestamp)
                }
                None => rec.timestamp,
            };
            max_ts = Some(max_ts.map_or(ts, |m| m.max(ts)));
            batch.push(Rec {
                key,
                value,
                timestamp: ts,
                headers: rec.owned_headers(),
                offset: rec.offset,
            });
        }
        if let Some(dedup) = &self.dedup {
            let mut store = dedup.borrow_mut();
            for (writer, last, known) in last_seen {
                if known && store.get(&writer) != Some(&last) {
                    store.put(writer, last);
                }
            }
        }
        cx.metrics.records_in += batch.len() as u64;
        self.out.data(cx, batch)?;
        Ok(max_ts)
    }

    fn on_control(&mut self, cx: &mut TaskCx, control: Control) -> Result<()> {
        self.out.control(cx, control)
    }

    fn out_of_orderness(&self) -> i64 {
        self.out_of_orderness
    }
}

/// Decodes a whole run of records of one partition into one value (the SQL layer's Arrow
/// batches), skipping watermark markers ([`is_marker`]). A record it cannot decode is
/// refused alone ([`DecodedRun::refused`]); `Err` when the run as a whole cannot become a
/// value (why), which stops the task at the run's first record.
pub type DecodeRun<V> = Arc<dyn Fn(&RecordRun) -> Result<DecodedRun<V>, String> + Send + Sync>;

pub struct DecodedRun<V> {
    /// `None` when no record was kept.
    pub value: Option<V>,
    /// How many records the value holds, and their highest event time.
    pub kept: usize,
    pub max_ts: Option<i64>,
    /// The records it could not decode (their index in the run) and why.
    pub refused: Vec<(usize, String)>,
}

/// A source that forwards each run of records as one record holding the decoded run: its
/// timestamp is the run's highest event time, its offset the last record's.
pub(crate) struct RunSource<V> {
    pub node: Arc<str>,
    pub decode: DecodeRun<V>,
    pub out_of_orderness: i64,
    pub on_error: OnDeserializeError,
    pub dead_letters: Arc<str>,
    pub out: Out<(), V>,
}

impl<V: Clone + 'static> SourceOp for RunSource<V> {
    fn on_records(&mut self, cx: &mut TaskCx, records: &RecordRun) -> Result<Option<i64>> {
        if let Some(first) = records.get(0) {
            cx.at(&self.node, first.offset);
        }
        let decoded = (self.decode)(records).map_err(|e| cx.fail(e))?;
        for (i, reason) in decoded.refused {
            let rec = records.get(i).expect("a refused record is in the run");
            let dead_letters = &self.dead_letters;
            reject(
                cx,
                self.on_error,
                dead_letters,
                records,
                &rec,
                "value",
                reason,
            )?;
        }
        cx.metrics.records_in += decoded.kept as u64;
        let last = records.iter().rev().find(|r| !is_marker(r));
        if let (Some(value), Some(last)) = (decoded.value, last) {
            let rec = Rec {
                key: (),
                value,
                timestamp: decoded.max_ts.unwrap_or(last.timestamp),
                headers: Vec::new(),
                offset: last.offset,
            };
            self.out.data(cx, vec![rec])?;
        }
        Ok(decoded.max_ts)
    }

    fn on_control(&mut self, cx: &mut TaskCx, control: Control) -> Result<()> {
        self.out.control(cx, control)
    }

    fn out_of_orderness(&self) -> i64 {
        self.out_of_orderness
    }
}

/// A record whose key or value cannot be deserialized: fails the task, or goes to the
/// dead-letter topic with the reason in its headers.
fn reject(
    cx: &mut TaskCx,
    on_error: OnDeserializeError,
    dead_letters: &Arc<str>,
    r: &RecordRun,
    rec: &RecordRef,
    what: &'static str,
    reason: String,
) -> Result<()> {
    if on_error == OnDeserializeError::Fail {
        return Err(EngineError::Deserialize {
            what,
            topic: r.topic.to_string(),
            partition: r.partition,
            offset: rec.offset,
            reason,
        });
    }
    tracing::warn!(topic = %r.topic, partition = r.partition, offset = rec.offset, %reason,
        "cannot deserialize the record's {what}; sent to the dead-letter topic {dead_letters}");
    let mut headers = rec.owned_headers();
    let h = |k: &str, v: String| Header {
        key: k.into(),
        value: Some(Bytes::from(v)),
    };
    headers.push(h(
        "runnel.error",
        format!("cannot deserialize the {what}: {reason}"),
    ));
    headers.push(h("runnel.topic", r.topic.to_string()));
    headers.push(h("runnel.partition", r.partition.to_string()));
    headers.push(h("runnel.offset", rec.offset.to_string()));
    cx.out.push_raw(
        dead_letters,
        None,
        rec.timestamp,
        headers,
        rec.key,
        rec.value,
    );
    cx.metrics.dead_letters += 1;
    Ok(())
}

/// Whether a record is a watermark marker of a repartition topic, not data.
#[inline]
pub fn is_marker(r: &RecordRef) -> bool {
    r.header(WATERMARK_HEADER).is_some()
}

/// A wall-clock punctuation scheduled by a processor.
pub(crate) struct WallPunctuator {
    pub interval: Duration,
    pub next: Instant,
    pub fire: Box<dyn FnMut(&mut TaskCx, Instant, i64) -> Result<()>>,
}

/// An upstream task's last word in a repartition partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterMark {
    At(i64),
    Idle,
    End,
}

pub(crate) struct Input {
    pub tp: TopicPartition,
    pub source: usize,
    /// Next offset to process.
    pub position: Option<u64>,
    max_ts: Option<i64>,
    out_of_orderness: i64,
    last_record: Instant,
    /// Bounded runs: the offset at which this partition ends.
    pub end_offset: Option<u64>,
    pub ended: bool,
    pub bootstrap: bool,
    /// For repartition partitions: how many upstream tasks write into it, and their marks.
    writers: Option<(u32, HashMap<u32, WriterMark>)>,
}

impl Input {
    pub fn new(tp: TopicPartition, source: usize, bootstrap: bool, writers: Option<u32>) -> Self {
        Self {
            tp,
            source,
            position: None,
            max_ts: None,
            out_of_orderness: 0,
            last_record: Instant::now(),
            end_offset: None,
            ended: false,
            bootstrap,
            writers: writers.map(|n| (n, HashMap::new())),
        }
    }

    /// `None` when this partition must not hold the watermark back (idle or ended).
    fn watermark(&self, idle_timeout: Duration, now: Instant) -> Option<i64> {
        if self.ended {
            return None;
        }
        if let Some((count, marks)) = &self.writers {
            let mut wm = i64::MAX;
            let mut any = false;
            for w in 0..*count {
                match marks.get(&w) {
                    None => return Some(i64::MIN),
                    Some(WriterMark::At(t)) => {
                        wm = wm.min(*t);
                        any = true;
                    }
                    Some(WriterMark::Idle) | Some(WriterMark::End) => {}
                }
            }
            return any.then_some(wm);
        }
        match self.max_ts {
            _ if now.duration_since(self.last_record) > idle_timeout && self.max_ts.is_some() => {
                None
            }
            Some(t) => Some(t.saturating_sub(self.out_of_orderness)),
            None if now.duration_since(self.last_record) > idle_timeout => None,
            None => Some(i64::MIN),
        }
    }

    /// Whether this input went without records for `idle_timeout`; the runtime then asks the
    /// log whether it is caught up, since a slow worker is not an idle partition.
    pub fn idle_candidate(&self, idle_timeout: Duration, now: Instant) -> bool {
        !self.ended && self.writers.is_none() && now.duration_since(self.last_record) > idle_timeout
    }

    /// Records exist beyond the position: not idle, however long since the last record.
    pub fn still_active(&mut self, now: Instant) {
        self.last_record = now;
    }

    /// What this input still waits for (a bounded run that does not finish says it).
    pub fn waiting_for(&self) -> String {
        let writers = match &self.writers {
            Some((count, marks)) => {
                let marks: Vec<String> = (0..*count)
                    .map(|w| match marks.get(&w) {
                        None => format!("{w}:none"),
                        Some(WriterMark::At(t)) => format!("{w}:{t}"),
                        Some(WriterMark::Idle) => format!("{w}:idle"),
                        Some(WriterMark::End) => format!("{w}:end"),
                    })
                    .collect();
                format!(", writer marks [{}]", marks.join(" "))
            }
            None => String::new(),
        };
        format!(
            "{} at {:?} of end {:?}{writers}",
            self.tp, self.position, self.end_offset
        )
    }

    fn writers_ended(&self) -> bool {
        self.writers.as_ref().is_some_and(|(count, marks)| {
            (0..*count).all(|w| marks.get(&w) == Some(&WriterMark::End))
        })
    }
}

pub(crate) struct Task {
    pub name: Arc<str>,
    pub cx: TaskCx,
    /// The task's operators: index in the topology, and name.
    pub operators: Vec<(usize, Arc<str>)>,
    pub sources: Vec<Box<dyn SourceOp>>,
    pub inputs: Vec<Input>,
    pub stores: Vec<(StoreHandle, TopicPartition)>,
    pub wall: Vec<WallPunctuator>,
    pub idle_timeout: Duration,
    pub finished: bool,
    /// Topics of the repartition sinks, for marker records.
    pub marker_topics: Vec<(Arc<str>, u32)>,
    /// Added to the machine's clock (the test driver moves time forward with it).
    pub clock_skew: Duration,
    /// The last watermark mark written to them, and when.
    pub last_mark: Option<String>,
    pub last_mark_at: Instant,
}

/// Watermark markers go into repartition topics at most this often (and at every commit).
const MARKER_INTERVAL: Duration = Duration::from_millis(50);

impl Task {
    /// Wall-clock now, as this task sees it.
    pub fn now(&self) -> Instant {
        Instant::now() + self.clock_skew
    }

    /// Processes a run of records of input `i`, in offset order.
    pub fn process(&mut self, i: usize, records: &RecordRun) -> Result<()> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        if self.inputs[i].writers.is_some() {
            self.read_markers(i, records);
        }
        let source = self.inputs[i].source;
        self.cx.topic = records.topic.clone();
        let max_ts = self.sources[source].on_records(&mut self.cx, records)?;
        let input = &mut self.inputs[i];
        input.out_of_orderness = self.sources[source].out_of_orderness();
        input.position = Some(last.offset + 1);
        input.last_record = Instant::now() + self.clock_skew;
        if let Some(t) = max_ts {
            input.max_ts = Some(input.max_ts.map_or(t, |m| m.max(t)));
        }
        self.check_ended(i);
        self.advance_watermark()
    }

    fn read_markers(&mut self, i: usize, records: &RecordRun) {
        let Some((_, marks)) = &mut self.inputs[i].writers else {
            return;
        };
        for r in records.iter() {
            for (key, value) in r.headers() {
                if key != WATERMARK_HEADER {
                    continue;
                }
                let text = value.map(String::from_utf8_lossy);
                let Some((w, m)) = text.as_deref().and_then(|t| t.split_once(':')) else {
                    continue;
                };
                let Ok(w) = w.parse::<u32>() else { continue };
                if m == "restart" {
                    // The writer restarted and replays from its commit: what its earlier
                    // marks promised no longer holds (its partials may go back too).
                    marks.insert(w, WriterMark::At(i64::MIN));
                    continue;
                }
                let mark = match m {
                    "idle" => WriterMark::Idle,
                    "end" => WriterMark::End,
                    t => match t.parse() {
                        Ok(t) => WriterMark::At(t),
                        Err(_) => continue,
                    },
                };
                // Within one run of a writer its watermark never goes back.
                let keep = match (marks.get(&w), mark) {
                    (Some(WriterMark::At(old)), WriterMark::At(new)) => new >= *old,
                    (Some(WriterMark::End), _) => false,
                    _ => true,
                };
                if keep {
                    marks.insert(w, mark);
                }
            }
        }
    }

    /// Marks inputs that reached their end; call after positions move.
    pub fn check_ended(&mut self, i: usize) {
        let input = &mut self.inputs[i];
        if input.ended {
            return;
        }
        input.ended = if input.writers.is_some() {
            input.end_offset.is_some() && input.writers_ended()
        } else {
            matches!((input.end_offset, input.position), (Some(end), Some(p)) if p >= end)
                || input.end_offset == Some(0)
        };
    }

    /// Recomputes the watermark; forwards it if it rose; finishes the task at the end of input.
    pub fn advance_watermark(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        let now = self.now();
        let mut wm = None::<i64>;
        for input in &self.inputs {
            if let Some(w) = input.watermark(self.idle_timeout, now) {
                wm = Some(wm.map_or(w, |m| m.min(w)));
            }
        }
        if wm.is_none() {
            // Every input is idle: nothing is arriving, so what was seen is complete.
            wm = self
                .inputs
                .iter()
                .filter(|i| !i.ended && i.writers.is_none())
                .filter_map(|i| i.max_ts.map(|t| t.saturating_sub(i.out_of_orderness)))
                .min();
        }
        let all_ended = self.inputs.iter().all(|i| i.ended);
        if all_ended {
            self.control(Control::Watermark(i64::MAX))?;
            self.control(Control::End)?;
            self.finished = true;
            return Ok(());
        }
        match wm {
            Some(w) if w > self.cx.watermark => self.control(Control::Watermark(w)),
            _ => Ok(()),
        }
    }

    pub fn control(&mut self, c: Control) -> Result<()> {
        if let Control::Watermark(w) = c {
            if w <= self.cx.watermark && w != i64::MAX {
                return Ok(());
            }
            self.cx.watermark = self.cx.watermark.max(w);
        }
        for s in &mut self.sources {
            s.on_control(&mut self.cx, c)?;
        }
        Ok(())
    }

    /// Barrier through the chain, watermark markers into repartition topics, and dirty store
    /// entries into the changelogs.
    pub fn prepare_commit(&mut self) -> Result<()> {
        self.control(Control::Barrier)?;
        self.write_markers(true);
        for (store, changelog) in &self.stores {
            let topic: Arc<str> = Arc::from(changelog.topic.as_str());
            let partition = changelog.partition;
            let out = &mut self.cx.out;
            store
                .dynamic
                .borrow_mut()
                .drain_changes(&mut |k, v| {
                    out.push_raw(&topic, Some(partition), 0, Vec::new(), Some(k), v)
                })
                .map_err(|reason| EngineError::Store {
                    store: store.dynamic.borrow().name().to_string(),
                    reason,
                })?;
        }
        Ok(())
    }

    /// Tells the readers of this task's repartition topics that it (re)started: they forget its
    /// earlier marks until it sends new ones.
    pub fn write_restart_markers(&mut self) {
        self.push_marker("restart");
    }

    /// Writes `<partition>:<mark>` to every partition of every repartition topic it writes.
    fn push_marker(&mut self, mark: &str) {
        let value = Bytes::from(format!("{}:{mark}", self.cx.partition));
        for (topic, partitions) in &self.marker_topics {
            for p in 0..*partitions {
                let headers = vec![Header {
                    key: WATERMARK_HEADER.into(),
                    value: Some(value.clone()),
                }];
                self.cx.out.push_raw(topic, Some(p), 0, headers, None, None);
            }
        }
    }

    /// Tells the readers of this task's repartition topics how far its event time got, when
    /// that changed: at most every [`MARKER_INTERVAL`], unless `now` (commits) or finished.
    pub fn write_markers(&mut self, now: bool) {
        if self.marker_topics.is_empty()
            || !(now || self.finished || self.last_mark_at.elapsed() >= MARKER_INTERVAL)
        {
            return;
        }
        let mark = if self.finished {
            "end".to_string()
        } else if self.cx.watermark == i64::MIN
            && self
                .inputs
                .iter()
                .all(|i| i.watermark(self.idle_timeout, self.now()).is_none())
        {
            "idle".to_string()
        } else {
            self.cx.watermark.to_string()
        };
        // Only a changed mark is news; rewriting the same one would keep readers busy forever.
        if self.last_mark.as_deref() == Some(mark.as_str()) {
            return;
        }
        self.push_marker(&mark);
        self.last_mark = Some(mark);
        self.last_mark_at = Instant::now();
    }

    /// `(input partition, next offset)` of every input that has a position.
    pub fn positions(&self) -> Vec<(TopicPartition, u64)> {
        self.inputs
            .iter()
            .filter_map(|i| Some((i.tp.clone(), i.position?)))
            .collect()
    }

    pub fn fire_wall_clock(&mut self, now: Instant, now_ms: i64) -> Result<()> {
        for p in &mut self.wall {
            if now >= p.next {
                p.next = now + p.interval;
                (p.fire)(&mut self.cx, now, now_ms)?;
            }
        }
        Ok(())
    }

    /// Runs `f` on this task. Operators fail by returning errors; a panic (a bug in user
    /// code, such as a closure that divides by zero) becomes the same error, naming the
    /// operator and the record at hand, instead of unwinding through the runner's thread.
    pub fn guard<T>(&mut self, f: impl FnOnce(&mut Task) -> Result<T>) -> Result<T> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            Ok(r) => r,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                Err(self.cx.fail(message))
            }
        }
    }
}
