//! The operator interface inside a task, and the task context operators write to.
//!
//! An operator receives [`Msg`]s and sends `Msg`s to its children through [`Out`]. A task is
//! single-threaded, so operators are `Rc<RefCell<..>>`; the DAG has no cycles, so no operator
//! is ever borrowed twice. Control messages (watermark, barrier, end) may arrive once per
//! parent at a merge: operators treat repeats as no-ops.

use crate::out_buf::OutBuf;
use crate::record::Msg;
use std::cell::RefCell;
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
