//! Operators, one kind per file: stateless transformations, sinks, aggregations, windows, joins
//! and user processors. Each implements the hooks of [`crate::operator::Operator`] it reacts
//! to; the others forward.

pub(crate) mod aggregate;
pub(crate) mod combine;
pub(crate) mod join;
pub(crate) mod processor;
pub(crate) mod session;
pub(crate) mod sink;
pub(crate) mod stateless;
pub(crate) mod window;

/// Raises an operator's `watermark` to `w`; whether it rose (an operator whose state closes
/// with the watermark then closes what it passed).
#[inline]
pub fn rises(watermark: &mut i64, w: i64) -> bool {
    if w > *watermark {
        *watermark = w;
        true
    } else {
        false
    }
}
