//! The Processor API: user code with access to stores, record metadata, `forward`, and
//! punctuation on stream time (the task's watermark) or wall-clock time.

use crate::error::Result;
use crate::operator::{Operator, Out, TaskCx};
use crate::record::{Control, Rec};
use crate::state::StoreHandle;
use runnel_log::Header;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// What time a punctuation follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunctuationType {
    /// The task's watermark (event time): deterministic on replay.
    StreamTime,
    /// The machine's clock.
    WallClockTime,
}

/// Where the record at hand came from.
#[derive(Debug, Clone)]
pub struct RecordMetadata<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
    pub headers: &'a [Header],
}

/// A processor for what the DSL cannot say. All methods but `process` have no-op defaults.
pub trait Processor<K, V, KO, VO>: 'static {
    /// Called once per task before any record; schedule punctuations here.
    fn init(&mut self, _ctx: &mut ProcessorContext<'_, KO, VO>) {}
    fn process(&mut self, ctx: &mut ProcessorContext<'_, KO, VO>, record: Rec<K, V>);
    /// Called at each scheduled time.
    fn punctuate(
        &mut self,
        _ctx: &mut ProcessorContext<'_, KO, VO>,
        _time: i64,
        _kind: PunctuationType,
    ) {
    }
}

/// What a processor can reach: stores, metadata, `forward`, schedules.
pub struct ProcessorContext<'a, KO, VO> {
    cx: &'a TaskCx,
    forwarded: &'a mut Vec<Rec<KO, VO>>,
    stores: &'a HashMap<String, StoreHandle>,
    schedules: &'a mut Vec<(Duration, PunctuationType)>,
    current: Option<(u64, &'a [Header])>,
}

impl<KO, VO> ProcessorContext<'_, KO, VO> {
    /// Sends a record to this processor's children.
    pub fn forward(&mut self, record: Rec<KO, VO>) {
        self.forwarded.push(record);
    }

    /// A store this processor declared, by name and type (`KeyValueStore<K, V>`, ...).
    ///
    /// # Panics
    /// If the store was not declared for this processor or has another type: a topology bug.
    pub fn store<T: 'static>(&self, name: &str) -> Rc<RefCell<T>> {
        self.stores
            .get(name)
            .and_then(|h| h.typed::<T>())
            .unwrap_or_else(|| {
                panic!("store {name:?} is not declared for this processor with this type")
            })
    }

    /// The record at hand's coordinates (`None` inside a punctuation).
    pub fn metadata(&self) -> Option<RecordMetadata<'_>> {
        self.current.map(|(offset, headers)| RecordMetadata {
            topic: &self.cx.topic,
            partition: self.cx.partition,
            offset,
            headers,
        })
    }

    /// The task's watermark (stream time).
    pub fn stream_time(&self) -> i64 {
        self.cx.watermark
    }

    /// Calls [`Processor::punctuate`] every `interval` of the given time (call from `init`).
    pub fn schedule(&mut self, interval: Duration, kind: PunctuationType) {
        self.schedules.push((interval, kind));
    }
}

pub(crate) struct ProcessorState<K, V, KO, VO> {
    pub node: Arc<str>,
    pub processor: Box<dyn Processor<K, V, KO, VO>>,
    pub stores: HashMap<String, StoreHandle>,
    pub stream_schedules: Vec<(i64, Option<i64>)>,
    pub out: Out<KO, VO>,
    pub initialized: bool,
    pub wall: Vec<(Duration, Option<std::time::Instant>)>,
}

impl<K: Clone + 'static, V: Clone + 'static, KO: Clone + 'static, VO: Clone + 'static>
    ProcessorState<K, V, KO, VO>
{
    fn with_ctx<T>(
        &mut self,
        cx: &mut TaskCx,
        current: Option<&Rec<K, V>>,
        f: impl FnOnce(&mut dyn Processor<K, V, KO, VO>, &mut ProcessorContext<'_, KO, VO>) -> T,
    ) -> Result<T> {
        let mut forwarded = Vec::new();
        let mut schedules = Vec::new();
        cx.at(&self.node, current.map_or(cx.offset, |r| r.offset));
        let r = {
            let mut ctx = ProcessorContext {
                cx,
                forwarded: &mut forwarded,
                stores: &self.stores,
                schedules: &mut schedules,
                current: current.map(|r| (r.offset, &r.headers[..])),
            };
            f(self.processor.as_mut(), &mut ctx)
        };
        for (interval, kind) in schedules {
            let ms = interval.as_millis().max(1) as i64;
            match kind {
                PunctuationType::StreamTime => self.stream_schedules.push((ms, None)),
                PunctuationType::WallClockTime => self.wall.push((interval, None)),
            }
        }
        self.out.data(cx, forwarded)?;
        Ok(r)
    }

    pub fn init(&mut self, cx: &mut TaskCx) -> Result<()> {
        if !self.initialized {
            self.initialized = true;
            self.with_ctx(cx, None, |p, ctx| p.init(ctx))?;
        }
        Ok(())
    }

    pub fn punctuate(&mut self, cx: &mut TaskCx, time: i64, kind: PunctuationType) -> Result<()> {
        self.with_ctx(cx, None, |p, ctx| p.punctuate(ctx, time, kind))
    }

    /// Runs the wall-clock punctuations that are due.
    pub fn fire_wall(
        &mut self,
        cx: &mut TaskCx,
        now: std::time::Instant,
        now_ms: i64,
    ) -> Result<()> {
        self.init(cx)?;
        for i in 0..self.wall.len() {
            let (interval, next) = self.wall[i];
            let due = *self.wall[i].1.get_or_insert(now + interval);
            if next.is_some() && now >= due {
                self.wall[i].1 = Some(now + interval);
                self.punctuate(cx, now_ms, PunctuationType::WallClockTime)?;
            }
        }
        Ok(())
    }
}

/// The operator: runs `process` per record and stream-time punctuations on watermarks.
pub(crate) struct ProcessorOp<K, V, KO, VO> {
    pub state: Rc<RefCell<ProcessorState<K, V, KO, VO>>>,
}

impl<K: Clone + 'static, V: Clone + 'static, KO: Clone + 'static, VO: Clone + 'static>
    Operator<K, V> for ProcessorOp<K, V, KO, VO>
{
    fn on_data(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>) -> Result<()> {
        let mut s = self.state.borrow_mut();
        s.init(cx)?;
        for r in batch {
            let rec = r.clone();
            s.with_ctx(cx, Some(&r), |p, ctx| p.process(ctx, rec))?;
        }
        Ok(())
    }

    /// Runs the stream-time punctuations the watermark passed, then forwards it.
    fn on_watermark(&mut self, cx: &mut TaskCx, w: i64) -> Result<()> {
        let mut s = self.state.borrow_mut();
        s.init(cx)?;
        for i in 0..s.stream_schedules.len() {
            loop {
                let (interval, next) = s.stream_schedules[i];
                // The first punctuation is one interval after the first watermark.
                let due = next.unwrap_or_else(|| w.div_euclid(interval) * interval + interval);
                s.stream_schedules[i].1 = Some(due);
                if w == i64::MAX || due > w {
                    break;
                }
                s.stream_schedules[i].1 = Some(due + interval);
                s.punctuate(cx, due, PunctuationType::StreamTime)?;
            }
        }
        s.out.control(cx, Control::Watermark(w))
    }

    fn forward(&mut self, cx: &mut TaskCx, control: Control) -> Result<()> {
        let mut s = self.state.borrow_mut();
        s.init(cx)?;
        s.out.control(cx, control)
    }
}
