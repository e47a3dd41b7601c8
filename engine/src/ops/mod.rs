//! Operators, one kind per file: stateless transformations, sinks, aggregations, windows, joins
//! and user processors.

pub(crate) mod aggregate;
pub(crate) mod combine;
pub(crate) mod join;
pub(crate) mod processor;
pub(crate) mod session;
pub(crate) mod sink;
pub(crate) mod stateless;
pub(crate) mod window;

use crate::operator::{Out, TaskCx};
use crate::record::{Msg, Rec};

/// An operator whose state closes with the watermark (windows, sessions).
pub(crate) trait Windowed<K, V, KO, VO> {
    fn watermark(&mut self) -> &mut i64;
    fn out(&self) -> &Out<KO, VO>;
    fn add(&mut self, cx: &mut TaskCx, batch: Vec<Rec<K, V>>);
    /// Emits and forgets what the watermark closed.
    fn close(&mut self, cx: &mut TaskCx);
}

/// The message handling every windowed operator shares: data is added, a rising watermark
/// closes, control messages pass on.
pub(crate) fn on_windowed<K, V, KO: Clone, VO: Clone>(
    op: &mut impl Windowed<K, V, KO, VO>,
    cx: &mut TaskCx,
    msg: Msg<K, V>,
) {
    match msg {
        Msg::Data(batch) => op.add(cx, batch),
        Msg::Watermark(w) => {
            if w > *op.watermark() {
                *op.watermark() = w;
                op.close(cx);
            }
            op.out().send(cx, Msg::Watermark(w));
        }
        Msg::Barrier => op.out().send(cx, Msg::Barrier),
        Msg::End => op.out().send(cx, Msg::End),
    }
}
