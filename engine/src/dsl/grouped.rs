//! Grouped streams and their aggregations: plain (a table per key), time-windowed and
//! session-windowed (a table per key and window).

use super::config::{SessionWindows, TimeWindows};
use super::{Data, KStream, KTable, Key};
use crate::operator::op;
use crate::ops::aggregate::{AggFns, Aggregate};
use crate::ops::combine::{Combine, PartialSerde, PartialsSerde, partial_fns};
use crate::ops::session::SessionAggregate;
use crate::ops::stateless::FlatFn;
use crate::ops::window::{EmitStrategy, TimeWindowSpec, WindowAggregate};
use crate::query::{TableRows, key_value_rows, session_rows, table_reader, window_rows};
use crate::record::Windowed;
use crate::serdes::{I64Serde, Serde, SerdeRef, WindowedSerde};
use crate::state::{KeyValueStore, SessionStore, WindowStore};
use crate::topology::NodeKind;
use std::sync::Arc;

/// A stream grouped by its key, ready to aggregate. If the key changed upstream, the
/// aggregation repartitions it (combining first where it can).
pub struct KGroupedStream<K, V> {
    stream: KStream<K, V>,
}

fn count_fns<K, V>() -> AggFns<K, V, i64> {
    AggFns {
        init: Arc::new(|| 0),
        add: Arc::new(|_, _, a| Ok(a + 1)),
        merge: Some(Arc::new(|_, a, b| Ok(a + b))),
    }
}

fn reduce_fns<K, V: Clone>(
    f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
) -> AggFns<K, V, Option<V>> {
    let f = Arc::new(f);
    let f2 = f.clone();
    AggFns {
        init: Arc::new(|| None),
        add: Arc::new(move |_, v, a| Ok(Some(a.map_or_else(|| v.clone(), |a| f(&a, v))))),
        merge: Some(Arc::new(move |_, a, b| {
            Ok(match (a, b) {
                (Some(a), Some(b)) => Some(f2(&a, &b)),
                (a, b) => a.or(b),
            })
        })),
    }
}

impl<K: Key, V: Data> KGroupedStream<K, V> {
    pub(crate) fn new(stream: KStream<K, V>) -> Self {
        Self { stream }
    }

    /// The stream partitioned by its key: through a repartition topic if the key changed.
    fn partitioned(&self) -> KStream<K, V> {
        self.stream.partitioned(None)
    }

    fn serdes(&self) -> (SerdeRef<K>, SerdeRef<V>) {
        self.stream.serdes.clone().unwrap_or_else(|| {
            panic!("aggregating needs the key and value serdes: pass Grouped::with(..) or call with_serdes(..)")
        })
    }

    /// Aggregates with `fns` into the key-value store `store` (the SQL layer's aggregate
    /// functions may fail, see [`AggFns`]).
    ///
    /// # Panics
    ///
    /// If the stream has no serdes (give them with `group_by_key(Some(Grouped::with(..)))` or
    /// `with_serdes`), or the topology already has a store named `store`.
    pub fn aggregate_into<A: Data>(
        &self,
        store: &str,
        fns: AggFns<K, V, A>,
        agg_serde: SerdeRef<A>,
    ) -> KTable<K, A> {
        let s = self.partitioned();
        let b = &s.b;
        let (ks, _) = self.serdes();
        let (n, k2, a2) = (store.to_string(), ks.clone(), agg_serde.clone());
        b.add_store(store, "key-value", move || {
            KeyValueStore::new(n.clone(), k2.clone(), a2.clone())
        });
        b.set_table_reader(
            store,
            table_reader(|s: &KeyValueStore<K, A>, key| key_value_rows(s, key)),
        );
        let st = store.to_string();
        let node = b.add_node(
            "KSTREAM-AGGREGATE",
            NodeKind::Processor,
            vec![s.node],
            vec![store.to_string()],
            Arc::new(move |inst| {
                let out = inst.out::<K, Option<A>>();
                let store = inst.store::<KeyValueStore<K, A>>(&st)?;
                let node = inst.node_name.clone();
                inst.input::<K, V>(op(Aggregate {
                    node,
                    fns: fns.clone(),
                    store,
                    out,
                }));
                Ok(())
            }),
        );
        KTable::new(b.clone(), node, Some((ks, agg_serde)))
    }

    /// Records per key, into the key-value store `store`.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde)).group_by_key(None).count("n").to("out");
    /// let mut d = TestDriver::new(b.build());
    /// for _ in 0..3 { d.pipe("in", "a".to_string(), 0i64, 0); }
    /// d.run();
    /// assert_eq!(d.table::<String, i64>("out").get("a"), Some(&3));
    /// assert_eq!(d.kv_store::<String, i64>("n").get("a"), Some(&3));
    /// ```
    ///
    /// # Panics
    ///
    /// As [`aggregate_into`](Self::aggregate_into): without serdes, or with a store name in use.
    pub fn count(&self, store: &str) -> KTable<K, i64> {
        self.aggregate_into(store, count_fns(), Arc::new(I64Serde))
    }

    /// Combines the values of each key with `f`.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde)).group_by_key(None).reduce(|a, b| *a.max(b), "max").to("out");
    /// let mut d = TestDriver::new(b.build());
    /// for v in [3i64, 9, 4] { d.pipe("in", "a".to_string(), v, 0); }
    /// d.run();
    /// assert_eq!(d.table::<String, i64>("out").get("a"), Some(&9));
    /// ```
    ///
    /// # Panics
    ///
    /// As [`aggregate_into`](Self::aggregate_into): without serdes, or with a store name in use.
    pub fn reduce(
        &self,
        f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        store: &str,
    ) -> KTable<K, V> {
        let (_, vs) = self.serdes();
        self.aggregate_into(
            store,
            reduce_fns(f),
            Arc::new(crate::serdes::OptionSerde(vs.clone())),
        )
        .flatten_option(vs)
    }

    /// Folds values into an aggregate starting from `init()`.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .group_by_key(None)
    ///     .aggregate(|| 0i64, |_, v, sum| sum + v, I64Serde, "sums")
    ///     .to("out");
    /// let mut d = TestDriver::new(b.build());
    /// for v in [1i64, 2, 3] { d.pipe("in", "a".to_string(), v, 0); }
    /// d.run();
    /// assert_eq!(d.table::<String, i64>("out").get("a"), Some(&6));
    /// ```
    ///
    /// # Panics
    ///
    /// As [`aggregate_into`](Self::aggregate_into): without serdes, or with a store name in use.
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        add: impl Fn(&K, &V, A) -> A + Send + Sync + 'static,
        agg_serde: impl Serde<A> + 'static,
        store: &str,
    ) -> KTable<K, A> {
        let fns = AggFns {
            init: Arc::new(init),
            add: Arc::new(move |k, v, a| Ok(add(k, v, a))),
            merge: None,
        };
        self.aggregate_into(store, fns, Arc::new(agg_serde))
    }

    /// Tumbling or hopping windows.
    pub fn windowed_by(&self, windows: TimeWindows) -> TimeWindowedKStream<K, V> {
        WindowedKStream {
            grouped: KGroupedStream::new(self.stream.clone()),
            windows,
            emit: EmitStrategy::default(),
        }
    }

    /// Session windows.
    pub fn windowed_by_session(&self, windows: SessionWindows) -> SessionWindowedKStream<K, V> {
        WindowedKStream {
            grouped: KGroupedStream::new(self.stream.clone()),
            windows,
            emit: EmitStrategy::default(),
        }
    }
}

/// A grouped stream cut into windows: [`TimeWindows`] (tumbling, hopping) or
/// [`SessionWindows`].
pub struct WindowedKStream<K, V, W> {
    grouped: KGroupedStream<K, V>,
    windows: W,
    emit: EmitStrategy,
}

pub type TimeWindowedKStream<K, V> = WindowedKStream<K, V, TimeWindows>;
pub type SessionWindowedKStream<K, V> = WindowedKStream<K, V, SessionWindows>;

/// What a kind of window adds to the topology: its store and its aggregation operator.
pub trait WindowKind: Copy + 'static {
    /// `(size, advance, grace)` for windows a combiner can pre-aggregate by pane.
    #[doc(hidden)]
    fn panes(&self) -> Option<(i64, i64, i64)> {
        None
    }
    #[doc(hidden)]
    fn add_aggregation<K: Key, V: Data, A: Data>(
        &self,
        stream: &KStream<K, V>,
        serdes: (SerdeRef<K>, SerdeRef<V>),
        store: &str,
        emit: EmitStrategy,
        fns: AggFns<K, V, A>,
        agg_serde: SerdeRef<A>,
    ) -> usize;
}

impl WindowKind for TimeWindows {
    fn panes(&self) -> Option<(i64, i64, i64)> {
        Some((self.size, self.advance, self.grace))
    }

    fn add_aggregation<K: Key, V: Data, A: Data>(
        &self,
        s: &KStream<K, V>,
        (ks, vs): (SerdeRef<K>, SerdeRef<V>),
        store: &str,
        emit: EmitStrategy,
        fns: AggFns<K, V, A>,
        agg_serde: SerdeRef<A>,
    ) -> usize {
        let spec = TimeWindowSpec {
            size: self.size,
            advance: self.advance,
            grace: self.grace,
        };
        assert!(
            spec.size > 0 && spec.advance > 0 && spec.advance <= spec.size,
            "window size and advance must be positive, with advance <= size"
        );
        let (n, k2, a2) = (store.to_string(), ks.clone(), agg_serde);
        s.b.add_store(store, "window", move || {
            WindowStore::new(n.clone(), k2.clone(), a2.clone())
        });
        let merge = fns.merge.clone();
        s.b.set_table_reader(
            store,
            table_reader(move |s: &WindowStore<K, A>, key| {
                window_rows(s, spec, merge.as_ref(), key)
            }),
        );
        let st = store.to_string();
        s.b.add_node(
            "KSTREAM-WINDOWED-AGGREGATE",
            NodeKind::Processor,
            vec![s.node],
            vec![store.to_string()],
            Arc::new(move |inst| {
                let out = inst.out::<Windowed<K>, Option<A>>();
                let store = inst.store::<WindowStore<K, A>>(&st)?;
                inst.input::<K, V>(op(WindowAggregate {
                    node: inst.node_name.clone(),
                    spec,
                    emit,
                    fns: fns.clone(),
                    store,
                    key_serde: ks.clone(),
                    value_serde: vs.clone(),
                    watermark: i64::MIN,
                    out,
                }));
                Ok(())
            }),
        )
    }
}

impl WindowKind for SessionWindows {
    fn add_aggregation<K: Key, V: Data, A: Data>(
        &self,
        s: &KStream<K, V>,
        (ks, vs): (SerdeRef<K>, SerdeRef<V>),
        store: &str,
        emit: EmitStrategy,
        fns: AggFns<K, V, A>,
        agg_serde: SerdeRef<A>,
    ) -> usize {
        let (n, k2, a2) = (store.to_string(), ks.clone(), agg_serde);
        s.b.add_store(store, "session", move || {
            SessionStore::new(n.clone(), k2.clone(), a2.clone())
        });
        s.b.set_table_reader(
            store,
            table_reader(|s: &SessionStore<K, A>, key| Ok(session_rows(s, key))),
        );
        let (st, w) = (store.to_string(), *self);
        s.b.add_node(
            "KSTREAM-SESSION-AGGREGATE",
            NodeKind::Processor,
            vec![s.node],
            vec![store.to_string()],
            Arc::new(move |inst| {
                let out = inst.out::<Windowed<K>, Option<A>>();
                let store = inst.store::<SessionStore<K, A>>(&st)?;
                inst.input::<K, V>(op(SessionAggregate {
                    node: inst.node_name.clone(),
                    gap: w.gap,
                    grace: w.grace,
                    emit,
                    fns: fns.clone(),
                    store,
                    key_serde: ks.clone(),
                    value_serde: vs.clone(),
                    watermark: i64::MIN,
                    out,
                }));
                Ok(())
            }),
        )
    }
}

impl<K: Key, V: Data, W: WindowKind> WindowedKStream<K, V, W> {
    /// When results go downstream (default: once, when the window closes).
    pub fn emit(mut self, emit: EmitStrategy) -> Self {
        self.emit = emit;
        self
    }

    /// Aggregates with `fns` into the window or session store `store` (the SQL layer's
    /// aggregate functions may fail, see [`AggFns`]).
    ///
    /// # Panics
    ///
    /// - If the stream has no serdes (give them with `group_by_key(Some(Grouped::with(..)))` or
    ///   `with_serdes`);
    /// - if the topology already has a store named `store` (or `<store>-combine`, the combiner's
    ///   store when a re-keyed stream is pre-aggregated);
    /// - for [`TimeWindows`] of size 0, or an advance of 0 or larger than the size.
    pub fn aggregate_into<A: Data>(
        &self,
        store: &str,
        fns: AggFns<K, V, A>,
        agg_serde: SerdeRef<A>,
    ) -> KTable<Windowed<K>, A> {
        if self.grouped.stream.key_changed
            && self.emit == EmitStrategy::OnWindowClose
            && fns.merge.is_some()
            && let Some((size, advance, grace)) = self.windows.panes()
        {
            let spec = TimeWindowSpec {
                size,
                advance,
                grace,
            };
            return self.build_combined(store, spec, fns, agg_serde);
        }
        let s = &self.grouped.partitioned();
        let serdes = self.grouped.serdes();
        let ks = serdes.0.clone();
        let node =
            self.windows
                .add_aggregation(s, serdes, store, self.emit, fns, agg_serde.clone());
        KTable::new(
            s.b.clone(),
            node,
            Some((Arc::new(WindowedSerde(ks)), agg_serde)),
        )
    }

    /// Two-phase: a combiner per upstream task sends cumulative partials per key and pane
    /// through the repartition topic; the window keeps the latest per writer and merges them.
    fn build_combined<A: Data>(
        &self,
        store: &str,
        spec: TimeWindowSpec,
        fns: AggFns<K, V, A>,
        agg_serde: SerdeRef<A>,
    ) -> KTable<Windowed<K>, A> {
        let s = &self.grouped.stream;
        let (ks, vs) = self.grouped.serdes();
        let combine_store = format!("{store}-combine");
        let (n, k2, a2) = (combine_store.clone(), ks.clone(), agg_serde.clone());
        s.b.add_store(&combine_store, "window", move || {
            WindowStore::new(n.clone(), k2.clone(), a2.clone())
        });
        let (st, ks2, merge) = (combine_store.clone(), ks.clone(), fns.merge.clone());
        let combiner = s.b.add_node(
            "KSTREAM-COMBINE",
            NodeKind::Processor,
            vec![s.node],
            vec![combine_store],
            Arc::new(move |inst| {
                let out = inst.out::<K, (u32, A)>();
                let store = inst.store::<WindowStore<K, A>>(&st)?;
                inst.input::<K, V>(op(Combine {
                    node: inst.node_name.clone(),
                    spec,
                    fns: fns.clone(),
                    store,
                    key_serde: ks2.clone(),
                    value_serde: vs.clone(),
                    watermark: i64::MIN,
                    dirty: Default::default(),
                    primed: false,
                    out,
                }));
                Ok(())
            }),
        );
        let partial: SerdeRef<(u32, A)> = Arc::new(PartialSerde(agg_serde.clone()));
        let source =
            s.b.repartition_with(combiner, ks.clone(), partial.clone(), false);
        let partials = KStream::new(
            s.b.clone(),
            source,
            Some((ks.clone(), partial.clone())),
            false,
        );
        let list: SerdeRef<Vec<(u32, A)>> = Arc::new(PartialsSerde(agg_serde.clone()));
        let node = self.windows.add_aggregation(
            &partials,
            (ks.clone(), partial),
            store,
            self.emit,
            partial_fns(),
            list.clone(),
        );
        let merge = merge.expect("checked by the caller");
        // Queries read the window's partials merged, as the fold below emits them.
        let (read_partials, m) = (
            s.b.table_reader(store)
                .expect("a windowed aggregation has a reader"),
            merge.clone(),
        );
        s.b.set_table_reader(
            store,
            Arc::new(move |h, key| {
                let rows = read_partials(h, key)?
                    .downcast::<TableRows<K, Vec<(u32, A)>>>()
                    .map_err(|_| "the partials' rows have another type")?;
                let mut merged: TableRows<K, A> = Vec::new();
                for (k, window, parts) in *rows {
                    let mut parts = parts.into_iter().map(|(_, a)| a);
                    if let Some(first) = parts.next() {
                        let value = parts.try_fold(first, |x, y| m(&k, x, y))?;
                        merged.push((k, window, value));
                    }
                }
                Ok(Box::new(merged) as Box<dyn std::any::Any>)
            }),
        );
        let fold: FlatFn<Windowed<K>, Option<Vec<(u32, A)>>, Windowed<K>, Option<A>> =
            Arc::new(move |r, out| {
                let value = match &r.value {
                    Some(parts) => {
                        let mut parts = parts.iter().map(|(_, a)| a.clone());
                        match parts.next() {
                            Some(first) => {
                                Some(parts.try_fold(first, |x, y| merge(&r.key.key, x, y))?)
                            }
                            None => None,
                        }
                    }
                    None => None,
                };
                let key = r.key.clone();
                out.push(r.with(key, value));
                Ok(())
            });
        let windowed: SerdeRef<Windowed<K>> = Arc::new(WindowedSerde(ks));
        KTable::<Windowed<K>, Vec<(u32, A)>>::new(s.b.clone(), node, Some((windowed.clone(), list)))
            .changes("KTABLE-MERGE-PARTIALS", fold, Some((windowed, agg_serde)))
    }

    /// Records per key and window.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// use std::time::Duration;
    /// let b = StreamsBuilder::new();
    /// let grouped = b.stream("in", Consumed::with(StringSerde, I64Serde)).group_by_key(None);
    /// grouped
    ///     .windowed_by(TimeWindows::of(Duration::from_secs(10)))
    ///     .count("per-10s")
    ///     .to_stream()
    ///     .map(|w, n| (format!("{}@{}", w.key, w.window.start), n.unwrap_or(0)))
    ///     .to("tumbling", Produced::with(StringSerde, I64Serde));
    /// grouped
    ///     .windowed_by_session(SessionWindows::with_inactivity_gap(Duration::from_secs(5)))
    ///     .count("sessions")
    ///     .to_stream()
    ///     .map(|w, n| (format!("{}-{}", w.window.start, w.window.end), n.unwrap_or(0)))
    ///     .to("sessions", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// for ts in [1_000, 3_000, 12_000] { d.pipe("in", "a".to_string(), 0i64, ts); }
    /// d.finish();
    /// assert_eq!(d.read::<String, i64>("tumbling"), vec![("a@0".to_string(), 2), ("a@10000".to_string(), 1)]);
    /// assert_eq!(d.read::<String, i64>("sessions"), vec![("1000-3000".into(), 2), ("12000-12000".into(), 1)]);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`aggregate_into`](Self::aggregate_into): without serdes, with a store name in use, or
    /// with invalid time windows.
    pub fn count(&self, store: &str) -> KTable<Windowed<K>, i64> {
        self.aggregate_into(store, count_fns(), Arc::new(I64Serde))
    }

    /// Combines the values of each key and window with `f` (which must be associative).
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// use std::time::Duration;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .group_by_key(None)
    ///     .windowed_by(TimeWindows::of(Duration::from_secs(10)))
    ///     .reduce(|a, b| *a.max(b), "max")
    ///     .to_stream()
    ///     .map(|w, m| (w.key, m.unwrap_or(0)))
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// for v in [3i64, 9, 4] { d.pipe("in", "a".to_string(), v, 1_000); }
    /// d.finish();
    /// assert_eq!(d.read::<String, i64>("out"), vec![("a".to_string(), 9)]);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`aggregate_into`](Self::aggregate_into): without serdes, with a store name in use, or
    /// with invalid time windows.
    pub fn reduce(
        &self,
        f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        store: &str,
    ) -> KTable<Windowed<K>, V> {
        let (_, vs) = self.grouped.serdes();
        self.aggregate_into(
            store,
            reduce_fns(f),
            Arc::new(crate::serdes::OptionSerde(vs.clone())),
        )
        .flatten_option(vs)
    }

    /// Folds values into an aggregate; `merge` combines two partial aggregates (hopping
    /// windows are computed from panes; a record can join several sessions into one).
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// use std::time::Duration;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .group_by_key(None)
    ///     .windowed_by(TimeWindows::of(Duration::from_secs(10)).advance_by(Duration::from_secs(5)))
    ///     .aggregate(|| 0i64, |_, v, s| s + v, |_, a, b| a + b, I64Serde, "sums")
    ///     .to_stream()
    ///     .map(|w, s| (w.window.start.to_string(), s.unwrap_or(0)))
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("in", "a".to_string(), 1i64, 7_000);
    /// d.pipe("in", "a".to_string(), 2i64, 12_000);
    /// d.finish();
    /// assert_eq!(d.read::<String, i64>("out"), vec![("0".into(), 1), ("5000".into(), 3), ("10000".into(), 2)]);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`aggregate_into`](Self::aggregate_into): without serdes, with a store name in use, or
    /// with invalid time windows.
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        add: impl Fn(&K, &V, A) -> A + Send + Sync + 'static,
        merge: impl Fn(&K, A, A) -> A + Send + Sync + 'static,
        agg_serde: impl Serde<A> + 'static,
        store: &str,
    ) -> KTable<Windowed<K>, A> {
        let fns = AggFns {
            init: Arc::new(init),
            add: Arc::new(move |k, v, a| Ok(add(k, v, a))),
            merge: Some(Arc::new(move |k, a, b| Ok(merge(k, a, b)))),
        };
        self.aggregate_into(store, fns, Arc::new(agg_serde))
    }
}
