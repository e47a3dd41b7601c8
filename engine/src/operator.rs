//! The operator interface inside a task, and the task context operators write to.
//!
//! An operator has one hook per kind of message on its input edge: [`Operator::on_data`] for a
//! batch of records, [`Operator::on_watermark`], [`Operator::on_barrier`] and
//! [`Operator::on_end`] for the control messages. The control hooks forward the message to the
//! operator's children by default ([`Operator::forward`]), so an operator implements only what
//! it reacts to, as Arroyo's operator trait does. Every hook returns a [`Result`]: an operator
//! that cannot go on (a value it cannot serialize, an aggregate that fails) returns an error
//! naming the place ([`TaskCx::fail`]), which stops the task; a record that alone is bad
//! becomes a dead letter instead and the batch goes on. Panics are not how operators fail: the
//! runtime catches them only as a backstop for bugs in user closures.
//!
//! A task is single-threaded, so operators are `Rc<RefCell<..>>`; the DAG has no cycles, so no
//! operator is ever borrowed twice. Control messages may arrive once per parent at a merge:
//! operators treat repeats as no-ops.
//!
//! This module is the operator API other crates build on (the SQL layer, `runnel-sql`): the
//! trait and the task context here, and re-exported beside them the output buffer
//! ([`OutBuf`]), the function types of the DSL's fallible nodes
//! ([`KStream::map_batch`](crate::KStream::map_batch) with [`BatchFn`],
//! [`KStream::to_rows`](crate::KStream::to_rows) with [`WriteRows`],
//! [`StreamsBuilder::stream_runs`](crate::StreamsBuilder::stream_runs) with [`DecodeRun`],
//! aggregations with [`AggFns`]) and the helpers a windowed operator needs ([`rises`],
//! [`late`]). The stores are in [`crate::state`]; [`KStream::with_store_operator`](crate::KStream::with_store_operator)
//! puts an operator of this trait over a store of its own into a topology.

use crate::error::{EngineError, Result};
use crate::record::{Control, Rec};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

pub use crate::ops::aggregate::{AddFn, AggFns, MergeFn};
pub use crate::ops::sink::WriteRows;
pub use crate::ops::stateless::{BatchFn, Refused};
pub use crate::ops::{rises, window::late};
pub use crate::out_buf::OutBuf;
pub use crate::task::{DecodeRun, DecodedRun, is_marker};

pub trait Operator<K, V> {
    /// A batch of records, in source order.
    ///
    /// # Errors
    ///
    /// Only when the task cannot go on (an aggregate or a serialization that fails): the error,
    /// usually [`TaskCx::fail`]'s `EngineError::TaskFailed`, stops the task and its run. A record
    /// that alone is bad becomes a dead letter instead.
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>) -> Result<()>;

    /// Passes a control message on to the operator's children: what the control hooks do
    /// unless overridden. Terminal operators (sinks) and secondary inputs (a join's right
    /// side, whose left side forwards the same messages) forward nothing.
    ///
    /// # Errors
    ///
    /// The first error of a child's hook, unchanged.
    fn forward(&mut self, cx: &mut TaskCx, control: Control) -> Result<()>;

    /// No record with an event time at or below `watermark` will arrive any more (except
    /// late ones).
    ///
    /// # Errors
    ///
    /// As [`on_data`](Self::on_data); by default, the first error of a child's hook.
    fn on_watermark(&mut self, cx: &mut TaskCx, watermark: i64) -> Result<()> {
        self.forward(cx, Control::Watermark(watermark))
    }

    /// A commit is about to happen: flush anything buffered.
    ///
    /// # Errors
    ///
    /// As [`on_data`](Self::on_data); by default, the first error of a child's hook.
    fn on_barrier(&mut self, cx: &mut TaskCx) -> Result<()> {
        self.forward(cx, Control::Barrier)
    }

    /// The bounded input is over; the final watermark has been sent.
    ///
    /// # Errors
    ///
    /// As [`on_data`](Self::on_data); by default, the first error of a child's hook.
    fn on_end(&mut self, cx: &mut TaskCx) -> Result<()> {
        self.forward(cx, Control::End)
    }
}

pub type OpRef<K, V> = Rc<RefCell<dyn Operator<K, V>>>;

pub fn op<K, V, O: Operator<K, V> + 'static>(o: O) -> OpRef<K, V> {
    Rc::new(RefCell::new(o))
}

/// Calls the hook of `op` for a control message.
fn on_control<K, V>(op: &mut dyn Operator<K, V>, cx: &mut TaskCx, control: Control) -> Result<()> {
    match control {
        Control::Watermark(w) => op.on_watermark(cx, w),
        Control::Barrier => op.on_barrier(cx),
        Control::End => op.on_end(cx),
    }
}

/// The children of a node. Data is cloned for all but the last child.
pub struct Out<K, V> {
    children: Vec<OpRef<K, V>>,
    /// The node's index in the topology, and its children's (for [`OperatorCounts`]).
    node: usize,
    child_nodes: Vec<usize>,
    /// Records a value stands for, when it is not one (see `StreamsBuilder::weigh`).
    weigh: Option<fn(&V) -> u64>,
}

impl<K: Clone, V: Clone> Out<K, V> {
    pub(crate) fn new(
        node: usize,
        children: Vec<(usize, OpRef<K, V>)>,
        weigh: Option<fn(&V) -> u64>,
    ) -> Self {
        let (child_nodes, children) = children.into_iter().unzip();
        Self {
            children,
            node,
            child_nodes,
            weigh,
        }
    }

    /// Sends a batch to every child (nothing when it is empty).
    ///
    /// # Errors
    ///
    /// The first error of a child's [`Operator::on_data`], unchanged; the children after it do
    /// not get the batch.
    pub fn data(&self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let records = match self.weigh {
            Some(weigh) => batch.iter().map(|r| weigh(&r.value)).sum(),
            None => batch.len() as u64,
        };
        cx.operators.sent(self.node, &self.child_nodes, records);
        if let Some((last, rest)) = self.children.split_last() {
            for c in rest {
                c.borrow_mut().on_data(cx, batch.clone())?;
            }
            last.borrow_mut().on_data(cx, batch)?;
        }
        Ok(())
    }

    /// Sends a control message to every child.
    ///
    /// # Errors
    ///
    /// The first error of a child's hook, unchanged; the children after it do not get the message.
    pub fn control(&self, cx: &mut TaskCx, control: Control) -> Result<()> {
        for c in &self.children {
            on_control(&mut *c.borrow_mut(), cx, control)?;
        }
        Ok(())
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

/// Records into and out of each operator of a task, by node index in the topology; counted
/// per batch where a node hands records to its children, so a record costs nothing more.
/// A source's input is the task's (`TaskMetrics::records_in`), a sink's output the topic's.
#[derive(Debug, Default, Clone)]
pub struct OperatorCounts {
    pub records_in: Vec<u64>,
    pub records_out: Vec<u64>,
}

impl OperatorCounts {
    #[inline]
    fn sent(&mut self, from: usize, to: &[usize], n: u64) {
        let needed = to.iter().copied().chain([from]).max().unwrap_or(0) + 1;
        if self.records_in.len() < needed {
            self.records_in.resize(needed, 0);
            self.records_out.resize(needed, 0);
        }
        self.records_out[from] += n;
        for &c in to {
            self.records_in[c] += n;
        }
    }

    /// Node `i`'s `(records in, records out)`.
    pub fn of(&self, i: usize) -> (u64, u64) {
        (
            self.records_in.get(i).copied().unwrap_or(0),
            self.records_out.get(i).copied().unwrap_or(0),
        )
    }
}

/// The per-task context every operator call receives.
pub struct TaskCx {
    /// The task's name, `<sub-topology>_<partition>`.
    pub task: Arc<str>,
    pub partition: u32,
    /// The topic of the batch being processed, and the offset of the record at hand.
    pub topic: Arc<str>,
    pub offset: u64,
    /// The operator at work (for failure messages).
    pub node: Arc<str>,
    pub watermark: i64,
    pub out: OutBuf,
    pub metrics: TaskMetrics,
    pub operators: OperatorCounts,
    /// Records that arrived after their window closed go here when set (and are counted).
    pub late_topic: Option<Arc<str>>,
}

impl TaskCx {
    pub fn new(task: Arc<str>, partition: u32, late_topic: Option<Arc<str>>) -> Self {
        Self {
            task,
            partition,
            topic: Arc::from(""),
            offset: 0,
            node: Arc::from(""),
            watermark: i64::MIN,
            out: OutBuf::default(),
            metrics: TaskMetrics::default(),
            operators: OperatorCounts::default(),
            late_topic,
        }
    }

    /// Notes where an operator is about to work, for the failure message if it fails.
    #[inline]
    pub fn at(&mut self, node: &Arc<str>, offset: u64) {
        if !Arc::ptr_eq(&self.node, node) {
            self.node = node.clone();
        }
        self.offset = offset;
    }

    /// The error that stops the task, naming the operator and the record at hand (see
    /// [`at`](Self::at)).
    pub fn fail(&self, message: impl std::fmt::Display) -> EngineError {
        EngineError::TaskFailed {
            task: self.task.to_string(),
            node: self.node.to_string(),
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
            message: message.to_string(),
        }
    }
}
