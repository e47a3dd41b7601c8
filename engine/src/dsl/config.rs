//! The small configuration values DSL calls take: serdes, time extraction, windows.

use crate::serdes::{Serde, SerdeRef};
use crate::task::TimestampFn;
use std::sync::Arc;
use std::time::Duration;

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// How a source topic is read: serdes, event time, allowed out-of-orderness.
pub struct Consumed<K, V> {
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
    pub(crate) timestamp: Option<TimestampFn<K, V>>,
    pub(crate) out_of_orderness: i64,
}

impl<K: 'static, V: 'static> Consumed<K, V> {
    pub fn with(key: impl Serde<K> + 'static, value: impl Serde<V> + 'static) -> Self {
        Self {
            key: Arc::new(key),
            value: Arc::new(value),
            timestamp: None,
            out_of_orderness: 0,
        }
    }

    /// Event time from the record itself (`f(key, value, record_timestamp)`), instead of the
    /// record's timestamp.
    pub fn with_timestamp(
        mut self,
        f: impl Fn(&K, &V, i64) -> i64 + Send + Sync + 'static,
    ) -> Self {
        self.timestamp = Some(Arc::new(f));
        self
    }

    /// How far behind the highest event time seen a record may be and still be on time:
    /// watermark = max event time − this.
    pub fn with_out_of_orderness(mut self, d: Duration) -> Self {
        self.out_of_orderness = ms(d);
        self
    }
}

/// Serdes for writing to a topic.
pub struct Produced<K, V> {
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
}

impl<K: 'static, V: 'static> Produced<K, V> {
    pub fn with(key: impl Serde<K> + 'static, value: impl Serde<V> + 'static) -> Self {
        Self {
            key: Arc::new(key),
            value: Arc::new(value),
        }
    }
}

/// Serdes for a repartition topic (after `group_by` or a key change).
pub struct Grouped<K, V> {
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
}

impl<K: 'static, V: 'static> Grouped<K, V> {
    pub fn with(key: impl Serde<K> + 'static, value: impl Serde<V> + 'static) -> Self {
        Self {
            key: Arc::new(key),
            value: Arc::new(value),
        }
    }
}

/// Tumbling (`advance == size`) or hopping windows, with grace.
#[derive(Debug, Clone, Copy)]
pub struct TimeWindows {
    pub(crate) size: i64,
    pub(crate) advance: i64,
    pub(crate) grace: i64,
}

impl TimeWindows {
    /// Tumbling windows of `size` without grace.
    pub fn of(size: Duration) -> Self {
        Self {
            size: ms(size),
            advance: ms(size),
            grace: 0,
        }
    }
    /// Hopping: a new window every `advance`.
    pub fn advance_by(mut self, advance: Duration) -> Self {
        self.advance = ms(advance);
        self
    }
    /// How long after its end (in event time) a window still accepts records.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = ms(grace);
        self
    }
}

/// Session windows: events of a key closer than `gap` share a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionWindows {
    pub(crate) gap: i64,
    pub(crate) grace: i64,
}

impl SessionWindows {
    pub fn with_inactivity_gap(gap: Duration) -> Self {
        Self {
            gap: ms(gap),
            grace: 0,
        }
    }
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = ms(grace);
        self
    }
}

/// Stream–stream join window: records join when their times differ by at most the bounds.
#[derive(Debug, Clone, Copy)]
pub struct JoinWindows {
    pub(crate) before: i64,
    pub(crate) after: i64,
    pub(crate) grace: i64,
}

impl JoinWindows {
    /// `|t_left - t_right| <= diff`.
    pub fn of(diff: Duration) -> Self {
        Self {
            before: ms(diff),
            after: ms(diff),
            grace: 0,
        }
    }
    /// Right records may be up to `before` earlier than the left one.
    pub fn before(mut self, before: Duration) -> Self {
        self.before = ms(before);
        self
    }
    /// Right records may be up to `after` later than the left one.
    pub fn after(mut self, after: Duration) -> Self {
        self.after = ms(after);
        self
    }
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = ms(grace);
        self
    }
}
