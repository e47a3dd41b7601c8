//! The operator interface inside a task, and the task context operators write to.
//!
//! An operator receives [`Msg`]s and sends `Msg`s to its children through [`Out`]. A task is
//! single-threaded, so operators are `Rc<RefCell<..>>`; the DAG has no cycles, so no operator
//! is ever borrowed twice. Control messages (watermark, barrier, end) may arrive once per
//! parent at a merge: operators treat repeats as no-ops.

use crate::record::Msg;
use runnel_log::Header;
use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

pub(crate) trait Operator<K, V> {
    fn on(&mut self, cx: &mut TaskCx, msg: Msg<K, V>);
}

pub(crate) type OpRef<K, V> = Rc<RefCell<dyn Operator<K, V>>>;

pub(crate) fn op<K, V, O: Operator<K, V> + 'static>(o: O) -> OpRef<K, V> {
    Rc::new(RefCell::new(o))
}

/// The children of a node. Data is cloned for all but the last child.
pub(crate) struct Out<K, V> {
    children: Vec<OpRef<K, V>>,
}

impl<K: Clone, V: Clone> Out<K, V> {
    pub fn new(children: Vec<OpRef<K, V>>) -> Self {
        Self { children }
    }

    pub fn send(&self, cx: &mut TaskCx, msg: Msg<K, V>) {
        if let Some((last, rest)) = self.children.split_last() {
            for c in rest {
                c.borrow_mut().on(cx, msg.clone());
            }
            last.borrow_mut().on(cx, msg);
        }
    }

    pub fn data(&self, cx: &mut TaskCx, batch: Vec<crate::record::Rec<K, V>>) {
        if !batch.is_empty() {
            self.send(cx, Msg::Data(batch));
        }
    }
}

/// An output record, its bytes in [`OutBuf::bytes`].
pub(crate) struct OutRecord {
    /// Its topic in [`OutBuf::topics`].
    pub topic: u32,
    pub partition: Option<u32>,
    pub key: Option<Range<usize>>,
    pub value: Option<Range<usize>>,
    pub timestamp: i64,
    pub headers: Vec<Header>,
}

/// Records a task produced since the last send, serialized into one buffer.
///
/// Topics are kept once, not per record: tasks on different threads write to the same topic
/// `Arc`, and a reference count changed per record would move its cache line between cores.
#[derive(Default)]
pub(crate) struct OutBuf {
    pub bytes: Vec<u8>,
    pub records: Vec<OutRecord>,
    pub topics: Vec<Arc<str>>,
}

impl OutBuf {
    /// The index of `topic` in `topics` (most records go to the topic of the record before).
    fn topic_index(&mut self, topic: &Arc<str>) -> u32 {
        let last = self.records.last().map(|r| r.topic as usize);
        if let Some(i) = last.filter(|&i| Arc::ptr_eq(&self.topics[i], topic)) {
            return i as u32;
        }
        match self.topics.iter().position(|t| t == topic) {
            Some(i) => i as u32,
            None => {
                self.topics.push(topic.clone());
                (self.topics.len() - 1) as u32
            }
        }
    }

    /// The topic of `record`.
    pub fn topic(&self, record: &OutRecord) -> &Arc<str> {
        &self.topics[record.topic as usize]
    }

    /// Serializes with `write_key` / `write_value` (which append and return `false` for null).
    pub fn push(
        &mut self,
        topic: &Arc<str>,
        partition: Option<u32>,
        timestamp: i64,
        headers: Vec<Header>,
        write_key: impl FnOnce(&mut Vec<u8>) -> Result<bool, String>,
        write_value: impl FnOnce(&mut Vec<u8>) -> Result<bool, String>,
    ) -> Result<(), String> {
        let mark = self.bytes.len();
        let k0 = self.bytes.len();
        let key = match write_key(&mut self.bytes) {
            Ok(present) => present.then_some(k0..self.bytes.len()),
            Err(e) => {
                self.bytes.truncate(mark);
                return Err(e);
            }
        };
        let v0 = self.bytes.len();
        let value = match write_value(&mut self.bytes) {
            Ok(present) => present.then_some(v0..self.bytes.len()),
            Err(e) => {
                self.bytes.truncate(mark);
                return Err(e);
            }
        };
        let topic = self.topic_index(topic);
        self.records.push(OutRecord {
            topic,
            partition,
            key,
            value,
            timestamp,
            headers,
        });
        Ok(())
    }

    pub fn push_raw(
        &mut self,
        topic: &Arc<str>,
        partition: Option<u32>,
        timestamp: i64,
        headers: Vec<Header>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) {
        let copy =
            |b: &mut Vec<u8>, d: Option<&[u8]>| Ok(d.map(|d| b.extend_from_slice(d)).is_some());
        let _ = self.push(
            topic,
            partition,
            timestamp,
            headers,
            |b| copy(b, key),
            |b| copy(b, value),
        );
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
        self.topics.clear();
    }
}

/// Counters of one task, summed into the application's metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct TaskMetrics {
    pub records_in: u64,
    pub records_out: u64,
    pub late_records: u64,
    pub dead_letters: u64,
}

/// The per-task context every operator call receives.
pub(crate) struct TaskCx {
    pub partition: u32,
    /// The topic of the batch being processed, and the offset of the record at hand.
    pub topic: Arc<str>,
    pub offset: u64,
    /// The operator whose user code is running (for failure messages).
    pub node: Arc<str>,
    pub watermark: i64,
    pub out: OutBuf,
    pub metrics: TaskMetrics,
    /// Records that arrived after their window closed go here when set (and are counted).
    pub late_topic: Option<Arc<str>>,
}

impl TaskCx {
    pub fn new(partition: u32, late_topic: Option<Arc<str>>) -> Self {
        Self {
            partition,
            topic: Arc::from(""),
            offset: 0,
            node: Arc::from(""),
            watermark: i64::MIN,
            out: OutBuf::default(),
            metrics: TaskMetrics::default(),
            late_topic,
        }
    }

    /// Notes where user code is about to run, for the failure message if it panics.
    #[inline]
    pub fn at(&mut self, node: &Arc<str>, offset: u64) {
        if !Arc::ptr_eq(&self.node, node) {
            self.node = node.clone();
        }
        self.offset = offset;
    }
}
