//! [`KStream`]: a record stream and its operations.

use super::config::{Grouped, JoinWindows, Produced};
use super::{Data, KGroupedStream, KTable, Key, StreamsBuilder};
use crate::operator::{OpRef, Out, op};
use crate::ops::join::{
    Buffered, JoinKind, JoinSpec, Joiner, Materialize, StreamStreamInput, StreamStreamState,
    StreamTableJoin,
};
use crate::ops::processor::{Processor, ProcessorOp, ProcessorState};
use crate::ops::sink::{RowsSink, WriteRows};
use crate::ops::stateless::{BatchFn, Batchwise, FlatFn, Predicate, Retain, Stateless};
use crate::record::Rec;
use crate::serdes::SerdeRef;
use crate::state::{KeyValueStore, StateStore, WindowStore};
use crate::task::WallPunctuator;
use crate::topology::{NodeKind, TopicName};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A stream of keyed records. Handles are cheap to clone; each operation returns a new one.
pub struct KStream<K, V> {
    pub(crate) b: StreamsBuilder,
    pub(crate) node: usize,
    pub(crate) serdes: Option<(SerdeRef<K>, SerdeRef<V>)>,
    /// The key changed since the last partitioning by key: a stateful operation must repartition.
    pub(crate) key_changed: bool,
}

impl<K, V> Clone for KStream<K, V> {
    fn clone(&self) -> Self {
        Self {
            b: self.b.clone(),
            node: self.node,
            serdes: self.serdes.clone(),
            key_changed: self.key_changed,
        }
    }
}

impl<K: Key, V: Data> KStream<K, V> {
    pub(crate) fn new(
        b: StreamsBuilder,
        node: usize,
        serdes: Option<(SerdeRef<K>, SerdeRef<V>)>,
        key_changed: bool,
    ) -> Self {
        Self {
            b,
            node,
            serdes,
            key_changed,
        }
    }

    /// A record-at-a-time node: `f` appends the outputs of one input.
    fn flat<K2: Key, V2: Data>(
        &self,
        prefix: &str,
        f: FlatFn<K, V, K2, V2>,
        serdes: Option<(SerdeRef<K2>, SerdeRef<V2>)>,
        key_changed: bool,
    ) -> KStream<K2, V2> {
        let node = self.b.add_node(
            prefix,
            NodeKind::Processor,
            vec![self.node],
            vec![],
            Arc::new(move |inst| {
                let out = inst.out::<K2, V2>();
                let node = inst.node_name.clone();
                inst.input::<K, V>(op(Stateless {
                    node,
                    f: f.clone(),
                    out,
                }));
                Ok(())
            }),
        );
        KStream::new(self.b.clone(), node, serdes, key_changed)
    }

    /// A node that transforms whole batches (`f` returns the outputs of one input batch).
    pub fn map_batch<K2: Key, V2: Data>(
        &self,
        prefix: &str,
        f: BatchFn<K, V, K2, V2>,
        key_changed: bool,
    ) -> KStream<K2, V2> {
        let node = self.b.add_node(
            prefix,
            NodeKind::Processor,
            vec![self.node],
            vec![],
            Arc::new(move |inst| {
                let out = inst.out::<K2, V2>();
                let node = inst.node_name.clone();
                let dead_letters = Arc::from(format!("{}-dlq", inst.app_id));
                inst.input::<K, V>(op(Batchwise {
                    node,
                    f: f.clone(),
                    out,
                    dead_letters,
                }));
                Ok(())
            }),
        );
        KStream::new(self.b.clone(), node, None, self.key_changed || key_changed)
    }

    /// Declares the serdes of this stream's key and value, for operations that need them
    /// (joins, grouping) after a `map` changed the types.
    pub fn with_serdes(
        mut self,
        key: impl crate::serdes::Serde<K> + 'static,
        value: impl crate::serdes::Serde<V> + 'static,
    ) -> Self {
        self.serdes = Some((Arc::new(key), Arc::new(value)));
        self
    }

    /// Keeps the records for which `pred` holds.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .filter(|_, v| *v > 5)
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("in", "a".to_string(), 3i64, 0);
    /// d.pipe("in", "a".to_string(), 8i64, 1);
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("out"), vec![("a".to_string(), 8)]);
    /// ```
    pub fn filter(&self, pred: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> KStream<K, V> {
        let pred: Predicate<K, V> = Arc::new(pred);
        let node = self.b.add_node(
            "KSTREAM-FILTER",
            NodeKind::Processor,
            vec![self.node],
            vec![],
            Arc::new(move |inst| {
                let out = inst.out::<K, V>();
                let node = inst.node_name.clone();
                inst.input::<K, V>(op(Retain {
                    node,
                    pred: pred.clone(),
                    out,
                }));
                Ok(())
            }),
        );
        KStream::new(self.b.clone(), node, self.serdes.clone(), self.key_changed)
    }

    /// Drops the records for which `pred` holds.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .filter_not(|_, v| *v > 5)
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("in", "a".to_string(), 3i64, 0);
    /// d.pipe("in", "a".to_string(), 8i64, 1);
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("out"), vec![("a".to_string(), 3)]);
    /// ```
    pub fn filter_not(
        &self,
        pred: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KStream<K, V> {
        self.filter(move |k, v| !pred(k, v))
    }

    /// Replaces key and value (the key changes: a later stateful operation repartitions).
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .map(|k, v| (format!("{k}!"), v * 2))
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("in", "a".to_string(), 4i64, 0);
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("out"), vec![("a!".to_string(), 8)]);
    /// ```
    pub fn map<K2: Key, V2: Data>(
        &self,
        f: impl Fn(K, V) -> (K2, V2) + Send + Sync + 'static,
    ) -> KStream<K2, V2> {
        self.try_map(move |k, v| Ok(f(k, v)))
    }

    /// [`map`](Self::map) for functions that can fail (the SQL layer's aggregate results): an
    /// `Err` stops the task, naming the record.
    pub fn try_map<K2: Key, V2: Data>(
        &self,
        f: impl Fn(K, V) -> Result<(K2, V2), String> + Send + Sync + 'static,
    ) -> KStream<K2, V2> {
        let f: FlatFn<K, V, K2, V2> = Arc::new(move |r, out| {
            let (k, v) = f(r.key.clone(), r.value.clone())?;
            out.push(r.with(k, v));
            Ok(())
        });
        self.flat("KSTREAM-MAP", f, None, true)
    }

    /// Replaces the value, keeping the key (no repartition needed afterwards).
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .map_values(|v| v + 1)
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("in", "a".to_string(), 1i64, 0);
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("out"), vec![("a".to_string(), 2)]);
    /// ```
    pub fn map_values<V2: Data>(
        &self,
        f: impl Fn(V) -> V2 + Send + Sync + 'static,
    ) -> KStream<K, V2> {
        let f: FlatFn<K, V, K, V2> = Arc::new(move |r, out| {
            let Rec {
                key,
                value,
                timestamp,
                headers,
                offset,
            } = r;
            out.push(Rec {
                key,
                value: f(value),
                timestamp,
                headers,
                offset,
            });
            Ok(())
        });
        self.flat("KSTREAM-MAPVALUES", f, None, self.key_changed)
    }

    /// Zero or more records per record, with new keys.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, StringSerde))
    ///     .flat_map(|_, line| line.split(' ').map(|w| (w.to_string(), 1i64)).collect::<Vec<_>>())
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("in", "k".to_string(), "a b".to_string(), 0);
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("out").len(), 2);
    /// ```
    pub fn flat_map<K2: Key, V2: Data, I: IntoIterator<Item = (K2, V2)>>(
        &self,
        f: impl Fn(K, V) -> I + Send + Sync + 'static,
    ) -> KStream<K2, V2> {
        let f: FlatFn<K, V, K2, V2> = Arc::new(move |r, out| {
            for (k, v) in f(r.key.clone(), r.value.clone()) {
                out.push(r.derive(k, v))
            }
            Ok(())
        });
        self.flat("KSTREAM-FLATMAP", f, None, true)
    }

    /// Zero or more values per record, same key.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .flat_map_values(|v| vec![v, v * 10])
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("in", "a".to_string(), 1i64, 0);
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("out"), vec![("a".to_string(), 1), ("a".to_string(), 10)]);
    /// ```
    pub fn flat_map_values<V2: Data, I: IntoIterator<Item = V2>>(
        &self,
        f: impl Fn(V) -> I + Send + Sync + 'static,
    ) -> KStream<K, V2> {
        let f: FlatFn<K, V, K, V2> = Arc::new(move |r, out| {
            for v in f(r.value.clone()) {
                out.push(r.derive(r.key.clone(), v))
            }
            Ok(())
        });
        self.flat("KSTREAM-FLATMAPVALUES", f, None, self.key_changed)
    }

    /// Sets a new key computed from the record.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .select_key(|_, v| v.to_string())
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("in", "a".to_string(), 7i64, 0);
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("out"), vec![("7".to_string(), 7)]);
    /// ```
    pub fn select_key<K2: Key>(
        &self,
        f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
    ) -> KStream<K2, V> {
        let f: FlatFn<K, V, K2, V> = Arc::new(move |r, out| {
            let k = f(&r.key, &r.value);
            let v = r.value.clone();
            out.push(r.with(k, v));
            Ok(())
        });
        self.flat("KSTREAM-KEY-SELECT", f, None, true)
    }

    /// Calls `f` for each record and passes it on unchanged.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let s2 = seen.clone();
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .peek(move |_, _| { s2.fetch_add(1, Ordering::Relaxed); })
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("in", "a".to_string(), 1i64, 0);
    /// d.run();
    /// assert_eq!(seen.load(Ordering::Relaxed), 1);
    /// assert_eq!(d.read::<String, i64>("out").len(), 1);
    /// ```
    pub fn peek(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) -> KStream<K, V> {
        let f: FlatFn<K, V, K, V> = Arc::new(move |r, out| {
            f(&r.key, &r.value);
            out.push(r);
            Ok(())
        });
        self.flat("KSTREAM-PEEK", f, self.serdes.clone(), self.key_changed)
    }

    /// Calls `f` for each record; a terminal operation.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// use std::sync::{Arc, Mutex};
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let s2 = seen.clone();
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .foreach(move |k, v| s2.lock().unwrap().push((k.clone(), *v)));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("in", "a".to_string(), 1i64, 0);
    /// d.run();
    /// assert_eq!(*seen.lock().unwrap(), vec![("a".to_string(), 1)]);
    /// ```
    pub fn foreach(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) {
        let f: FlatFn<K, V, K, V> = Arc::new(move |r, _| {
            f(&r.key, &r.value);
            Ok(())
        });
        self.flat("KSTREAM-FOREACH", f, None, false);
    }

    /// Splits the stream: record goes to the first branch whose predicate holds; the last
    /// returned stream holds the records no predicate matched.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// let s = b.stream("in", Consumed::with(StringSerde, I64Serde));
    /// let branches = s.split(vec![Box::new(|_: &String, v: &i64| *v < 0), Box::new(|_: &String, v: &i64| *v < 10)]);
    /// branches[0].to("negative", Produced::with(StringSerde, I64Serde));
    /// branches[1].to("small", Produced::with(StringSerde, I64Serde));
    /// branches[2].to("large", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// for v in [-1i64, 5, 50] { d.pipe("in", "k".to_string(), v, 0); }
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("small"), vec![("k".to_string(), 5)]);
    /// assert_eq!(d.read::<String, i64>("large"), vec![("k".to_string(), 50)]);
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn split(
        &self,
        predicates: Vec<Box<dyn Fn(&K, &V) -> bool + Send + Sync>>,
    ) -> Vec<KStream<K, V>> {
        let preds: Arc<Vec<Box<dyn Fn(&K, &V) -> bool + Send + Sync>>> = Arc::new(predicates);
        (0..=preds.len())
            .map(|i| {
                let preds = preds.clone();
                let f: FlatFn<K, V, K, V> = Arc::new(move |r, out| {
                    let first = preds
                        .iter()
                        .position(|p| p(&r.key, &r.value))
                        .unwrap_or(preds.len());
                    if first == i {
                        out.push(r)
                    }
                    Ok(())
                });
                self.flat("KSTREAM-BRANCH", f, self.serdes.clone(), self.key_changed)
            })
            .collect()
    }

    /// Both streams' records in one stream.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// let x = b.stream("x", Consumed::with(StringSerde, I64Serde));
    /// let y = b.stream("y", Consumed::with(StringSerde, I64Serde));
    /// x.merge(&y).to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("x", "a".to_string(), 1i64, 0);
    /// d.pipe("y", "a".to_string(), 2i64, 0);
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("out").len(), 2);
    /// ```
    pub fn merge(&self, other: &KStream<K, V>) -> KStream<K, V> {
        let node = self.b.add_node(
            "KSTREAM-MERGE",
            NodeKind::Processor,
            vec![self.node, other.node],
            vec![],
            Arc::new(move |inst| {
                let out = inst.out::<K, V>();
                let node = inst.node_name.clone();
                let f: FlatFn<K, V, K, V> = Arc::new(|r, out| {
                    out.push(r);
                    Ok(())
                });
                inst.input::<K, V>(op(Stateless { node, f, out }));
                Ok(())
            }),
        );
        KStream::new(
            self.b.clone(),
            node,
            self.serdes.clone(),
            self.key_changed || other.key_changed,
        )
    }

    /// Writes the stream to `topic`, partitioned by key.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde)).to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("in", "a".to_string(), 1i64, 0);
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("out"), vec![("a".to_string(), 1)]);
    /// ```
    pub fn to(&self, topic: &str, produced: Produced<K, V>) {
        self.b.sink(
            self.node,
            TopicName::External(topic.into()),
            produced.key,
            produced.value,
        );
    }

    /// Writes to `topic` the output records `write` makes of each record (see [`WriteRows`]).
    pub fn to_rows(&self, topic: &str, write: WriteRows<K, V>) {
        let t = TopicName::External(topic.into());
        let resolved = t.clone();
        self.b.add_node(
            "KSTREAM-SINK",
            NodeKind::Sink { topic: t },
            vec![self.node],
            vec![],
            Arc::new(move |inst| {
                let topic: Arc<str> = Arc::from(inst.topic(&resolved));
                let node = inst.node_name.clone();
                inst.input::<K, V>(op(RowsSink {
                    node,
                    topic,
                    write: write.clone(),
                }));
                Ok(())
            }),
        );
    }

    /// Writes through an internal repartition topic so records are partitioned by their key.
    pub fn repartition(&self, grouped: Grouped<K, V>) -> KStream<K, V> {
        let node = self
            .b
            .repartition(self.node, grouped.key.clone(), grouped.value.clone());
        KStream::new(
            self.b.clone(),
            node,
            Some((grouped.key, grouped.value)),
            false,
        )
    }

    pub(crate) fn partitioned(&self, grouped: Option<Grouped<K, V>>) -> KStream<K, V> {
        let serdes = grouped
            .map(|g| (g.key, g.value))
            .or_else(|| self.serdes.clone());
        match (self.key_changed, serdes) {
            (false, serdes) => KStream::new(self.b.clone(), self.node, serdes, false),
            (true, Some((k, v))) => {
                let node = self.b.repartition(self.node, k.clone(), v.clone());
                KStream::new(self.b.clone(), node, Some((k, v)), false)
            }
            (true, None) => panic!(
                "the key of this stream changed, so grouping or joining it needs a repartition topic, \
                 which needs serdes: pass them with Grouped::with(..) or call with_serdes(..) first"
            ),
        }
    }

    /// Groups by the current key (repartitioning if an earlier operation changed it).
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .group_by_key(None)
    ///     .count("counts")
    ///     .to("out");
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("in", "a".to_string(), 1i64, 0);
    /// d.pipe("in", "a".to_string(), 1i64, 1);
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("out").last(), Some(&("a".to_string(), 2)));
    /// ```
    pub fn group_by_key(&self, grouped: Option<Grouped<K, V>>) -> KGroupedStream<K, V> {
        let mut s = self.clone();
        if let Some(g) = grouped {
            s.serdes = Some((g.key, g.value));
        }
        // Repartitioned by the aggregation, which may first combine (see `ops::combine`).
        KGroupedStream::new(s)
    }

    /// Groups by a new key (always through a repartition topic).
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .group_by(|_, v| (v % 2).to_string(), Grouped::with(StringSerde, I64Serde))
    ///     .count("parity-counts")
    ///     .to("out");
    /// let mut d = TestDriver::new(b.build());
    /// for v in [1i64, 2, 3] { d.pipe("in", format!("k{v}"), v, 0); }
    /// d.run();
    /// assert_eq!(d.table::<String, i64>("out").get("1"), Some(&2));
    /// ```
    pub fn group_by<K2: Key>(
        &self,
        f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
        grouped: Grouped<K2, V>,
    ) -> KGroupedStream<K2, V> {
        let mut keyed = self.select_key(f);
        keyed.serdes = Some((grouped.key, grouped.value));
        KGroupedStream::new(keyed)
    }

    /// Joins each record with the table's current value for its key (inner: records without
    /// one are dropped).
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// let names = b.table("names", Consumed::with(StringSerde, StringSerde));
    /// b.stream("orders", Consumed::with(StringSerde, I64Serde))
    ///     .join(&names, |amount, name| format!("{name}:{amount}"))
    ///     .to("out", Produced::with(StringSerde, StringSerde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("names", "r1".to_string(), "Luigi".to_string(), 0);
    /// d.pipe("orders", "r1".to_string(), 12i64, 1);
    /// d.pipe("orders", "r2".to_string(), 5i64, 2);
    /// d.run();
    /// assert_eq!(d.read::<String, String>("out"), vec![("r1".to_string(), "Luigi:12".to_string())]);
    /// ```
    ///
    /// # Panics
    ///
    /// If this stream's key changed (`map`, `select_key`, ...) and it has no serdes for the
    /// repartition topic, or if `table` has no serdes (call `with_serdes` on it).
    pub fn join<VT: Data, VR: Data>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, &VT) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        let j: Joiner<K, V, VT, VR> = Arc::new(move |_, l, r| Some(joiner(l?, r?)));
        self.join_table(table, j, "KSTREAM-JOIN")
    }

    /// Like [`join`](Self::join), but records without a table value join with `None`.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// let names = b.table("names", Consumed::with(StringSerde, StringSerde));
    /// b.stream("orders", Consumed::with(StringSerde, I64Serde))
    ///     .left_join(&names, |amount, name| format!("{}:{amount}", name.map_or("?", |n| n.as_str())))
    ///     .to("out", Produced::with(StringSerde, StringSerde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("orders", "r2".to_string(), 5i64, 2);
    /// d.run();
    /// assert_eq!(d.read::<String, String>("out"), vec![("r2".to_string(), "?:5".to_string())]);
    /// ```
    ///
    /// # Panics
    ///
    /// If this stream's key changed (`map`, `select_key`, ...) and it has no serdes for the
    /// repartition topic, or if `table` has no serdes (call `with_serdes` on it).
    pub fn left_join<VT: Data, VR: Data>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, Option<&VT>) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        let j: Joiner<K, V, VT, VR> = Arc::new(move |_, l, r| Some(joiner(l?, r)));
        self.join_table(table, j, "KSTREAM-LEFTJOIN")
    }

    fn join_table<VT: Data, VR: Data>(
        &self,
        table: &KTable<K, VT>,
        joiner: Joiner<K, V, VT, VR>,
        prefix: &str,
    ) -> KStream<K, VR> {
        let me = self.partitioned(None);
        let (ks, vts) = table.serdes_or_panic("join");
        let store = format!("{}-table-store", self.b.next_node_name(prefix));
        let (k2, v2) = (ks.clone(), vts.clone());
        let s2 = store.clone();
        self.b.add_store(&store, "key-value", move || {
            KeyValueStore::new(s2.clone(), k2.clone(), v2.clone())
        });
        let (left, right) = (me.node, table.node);
        let st = store.clone();
        let node = self.b.add_node(
            prefix,
            NodeKind::Processor,
            vec![left, right],
            vec![store],
            Arc::new(move |inst| {
                let out = inst.out::<K, VR>();
                let table = inst.store::<KeyValueStore<K, VT>>(&st)?;
                let node = inst.node_name.clone();
                inst.input_from::<K, V>(
                    left,
                    op(StreamTableJoin {
                        node,
                        table: table.clone(),
                        joiner: joiner.clone(),
                        out,
                    }),
                );
                inst.input_from::<K, Option<VT>>(right, op(Materialize { store: table }));
                Ok(())
            }),
        );
        KStream::new(self.b.clone(), node, None, false)
    }

    /// Windowed stream–stream inner join: records of both sides with the same key whose times
    /// are within the join window.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// use std::time::Duration;
    /// let b = StreamsBuilder::new();
    /// let placed = b.stream("placed", Consumed::with(StringSerde, I64Serde));
    /// let delivered = b.stream("delivered", Consumed::with(StringSerde, I64Serde));
    /// placed
    ///     .join_stream(&delivered, |p, d| d - p, JoinWindows::of(Duration::from_secs(60)))
    ///     .to("durations", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("placed", "o1".to_string(), 1_000i64, 1_000);
    /// d.pipe("delivered", "o1".to_string(), 31_000i64, 31_000);
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("durations"), vec![("o1".to_string(), 30_000)]);
    /// ```
    ///
    /// # Panics
    ///
    /// If either stream has no serdes (the join buffers both sides in stores): call `with_serdes`
    /// after an operation that changed a type.
    pub fn join_stream<V2: Data, VR: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, &V2) -> VR + Send + Sync + 'static,
        window: JoinWindows,
    ) -> KStream<K, VR> {
        let j: Joiner<K, V, V2, VR> = Arc::new(move |_, l, r| Some(joiner(l?, r?)));
        self.join_streams(other, j, window, JoinKind::Inner)
    }

    /// Windowed left join: left records without a partner are emitted with `None` once their
    /// window has closed.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// use std::time::Duration;
    /// let b = StreamsBuilder::new();
    /// let l = b.stream("l", Consumed::with(StringSerde, I64Serde));
    /// let r = b.stream("r", Consumed::with(StringSerde, I64Serde));
    /// l.left_join_stream(&r, |a, b| a + b.copied().unwrap_or(0), JoinWindows::of(Duration::from_secs(1)))
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("l", "k".to_string(), 5i64, 0);
    /// d.finish();
    /// assert_eq!(d.read::<String, i64>("out"), vec![("k".to_string(), 5)]);
    /// ```
    ///
    /// # Panics
    ///
    /// If either stream has no serdes, as [`join_stream`](Self::join_stream).
    pub fn left_join_stream<V2: Data, VR: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> VR + Send + Sync + 'static,
        window: JoinWindows,
    ) -> KStream<K, VR> {
        let j: Joiner<K, V, V2, VR> = Arc::new(move |_, l, r| Some(joiner(l?, r)));
        self.join_streams(other, j, window, JoinKind::Left)
    }

    /// Windowed outer join: records of either side without a partner are emitted with `None`
    /// for the other once their window has closed.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// use std::time::Duration;
    /// let b = StreamsBuilder::new();
    /// let l = b.stream("l", Consumed::with(StringSerde, I64Serde));
    /// let r = b.stream("r", Consumed::with(StringSerde, I64Serde));
    /// l.outer_join_stream(&r, |a, b| a.copied().unwrap_or(0) + b.copied().unwrap_or(0), JoinWindows::of(Duration::from_secs(1)))
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("r", "k".to_string(), 7i64, 0);
    /// d.finish();
    /// assert_eq!(d.read::<String, i64>("out"), vec![("k".to_string(), 7)]);
    /// ```
    ///
    /// # Panics
    ///
    /// If either stream has no serdes, as [`join_stream`](Self::join_stream).
    pub fn outer_join_stream<V2: Data, VR: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> VR + Send + Sync + 'static,
        window: JoinWindows,
    ) -> KStream<K, VR> {
        let j: Joiner<K, V, V2, VR> = Arc::new(move |_, l, r| Some(joiner(l, r)));
        self.join_streams(other, j, window, JoinKind::Outer)
    }

    fn join_streams<V2: Data, VR: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: Joiner<K, V, V2, VR>,
        window: JoinWindows,
        kind: JoinKind,
    ) -> KStream<K, VR> {
        let me = self.partitioned(None);
        let them = other.partitioned(None);
        let (lk, lv) = me
            .serdes
            .clone()
            .expect("partitioned streams know their serdes");
        let (rk, rv) = them.serdes.clone().unwrap_or_else(|| {
            panic!("the right side of a stream–stream join needs serdes: call with_serdes(..)")
        });
        let prefix = match kind {
            JoinKind::Inner => "KSTREAM-JOIN",
            JoinKind::Left => "KSTREAM-LEFTJOIN",
            JoinKind::Outer => "KSTREAM-OUTERJOIN",
        };
        let name = self.b.next_node_name(prefix);
        let (ls, rs) = (format!("{name}-this-store"), format!("{name}-other-store"));
        let (a, b2, c) = (ls.clone(), lk.clone(), lv.clone());
        self.b.add_store(&ls, "window", move || {
            WindowStore::<K, Buffered<V>>::new(a.clone(), b2.clone(), buffered_serde(c.clone()))
        });
        let (a, b2, c) = (rs.clone(), rk.clone(), rv.clone());
        self.b.add_store(&rs, "window", move || {
            WindowStore::<K, Buffered<V2>>::new(a.clone(), b2.clone(), buffered_serde(c.clone()))
        });
        let (left, right) = (me.node, them.node);
        let spec = JoinSpec {
            before: window.before,
            after: window.after,
            grace: window.grace,
        };
        let (ls2, rs2) = (ls.clone(), rs.clone());
        let node = self.b.add_node(
            prefix,
            NodeKind::Processor,
            vec![left, right],
            vec![ls, rs],
            Arc::new(move |inst| {
                let out = inst.out::<K, VR>();
                let state = Rc::new(RefCell::new(StreamStreamState {
                    node: inst.node_name.clone(),
                    spec,
                    kind,
                    left: inst.store(&ls2)?,
                    right: inst.store(&rs2)?,
                    joiner: joiner.clone(),
                    left_serdes: (lk.clone(), lv.clone()),
                    right_serdes: (rk.clone(), rv.clone()),
                    watermark: i64::MIN,
                    out,
                }));
                inst.input_from::<K, V>(
                    left,
                    op(StreamStreamInput::<K, V, V2, VR, true> {
                        state: state.clone(),
                    }),
                );
                inst.input_from::<K, V2>(
                    right,
                    op(StreamStreamInput::<K, V, V2, VR, false> { state }),
                );
                Ok(())
            }),
        );
        KStream::new(self.b.clone(), node, None, false)
    }

    /// Runs a [`Processor`] (made per task by `make`) with access to the named stores.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// struct Dedup;
    /// impl Processor<String, i64, String, i64> for Dedup {
    ///     fn process(&mut self, ctx: &mut ProcessorContext<'_, String, i64>, r: Rec<String, i64>) {
    ///         let seen = ctx.store::<KeyValueStore<String, i64>>("seen");
    ///         if seen.borrow_mut().get(&r.key).is_none() {
    ///             seen.borrow_mut().put(r.key.clone(), r.value);
    ///             assert_eq!(ctx.metadata().unwrap().topic, "in");
    ///             ctx.forward(r);
    ///         }
    ///     }
    /// }
    /// let b = StreamsBuilder::new();
    /// b.add_kv_store("seen", StringSerde, I64Serde);
    /// b.stream("in", Consumed::with(StringSerde, I64Serde))
    ///     .process(|| Dedup, &["seen"])
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("in", "a".to_string(), 1i64, 0);
    /// d.pipe("in", "a".to_string(), 2i64, 1);
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("out"), vec![("a".to_string(), 1)]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `stores` is not empty and this stream's key changed without serdes for the repartition
    /// topic. (A store name not declared is an error when the topology starts:
    /// `EngineError::Topology`.)
    pub fn process<KO: Key, VO: Data, P: Processor<K, V, KO, VO>>(
        &self,
        make: impl Fn() -> P + Send + Sync + 'static,
        stores: &[&str],
    ) -> KStream<KO, VO> {
        let me = if stores.is_empty() {
            self.clone()
        } else {
            self.partitioned(None)
        };
        let names: Vec<String> = stores.iter().map(|s| s.to_string()).collect();
        let n2 = names.clone();
        let node = self.b.add_node(
            "KSTREAM-PROCESSOR",
            NodeKind::Processor,
            vec![me.node],
            names,
            Arc::new(move |inst| {
                let out = inst.out::<KO, VO>();
                let mut handles = HashMap::new();
                for s in &n2 {
                    handles.insert(s.clone(), inst.store_handle(s)?);
                }
                let state = Rc::new(RefCell::new(ProcessorState {
                    node: inst.node_name.clone(),
                    processor: Box::new(make()),
                    stores: handles,
                    stream_schedules: Vec::new(),
                    out,
                    initialized: false,
                    wall: Vec::new(),
                }));
                let s2 = state.clone();
                inst.wall_punctuators.push(WallPunctuator {
                    interval: Duration::from_millis(10),
                    next: std::time::Instant::now(),
                    fire: Box::new(move |cx, now, now_ms| {
                        s2.borrow_mut().fire_wall(cx, now, now_ms)
                    }),
                });
                inst.input::<K, V>(op(ProcessorOp { state }));
                Ok(())
            }),
        );
        KStream::new(self.b.clone(), node, None, false)
    }

    /// A node running an operator of the [`operator`](crate::operator) API over a store of its
    /// own (the SQL layer's OVER windows): the stream is first partitioned by its key (through
    /// a repartition topic if the key changed), then each task gets a store from `make_store`
    /// and an operator from `make` (given the node's name, that store and the node's output).
    /// `key_changed`: whether the operator's output key differs from its input key.
    ///
    /// # Panics
    ///
    /// If this stream's key changed and it has no serdes for the repartition topic, or the
    /// topology already has a store named `store.0`.
    pub fn with_store_operator<KO: Key, VO: Data, S: StateStore + 'static>(
        &self,
        prefix: &str,
        store: (&str, &'static str),
        make_store: impl Fn() -> S + Send + Sync + 'static,
        make: impl Fn(Arc<str>, Rc<RefCell<S>>, Out<KO, VO>) -> OpRef<K, V> + Send + Sync + 'static,
        key_changed: bool,
    ) -> KStream<KO, VO> {
        let me = self.partitioned(None);
        let (name, kind) = (store.0.to_string(), store.1);
        self.b.add_store(&name, kind, make_store);
        let st = name.clone();
        let node = self.b.add_node(
            prefix,
            NodeKind::Processor,
            vec![me.node],
            vec![name],
            Arc::new(move |inst| {
                let out = inst.out::<KO, VO>();
                let store = inst.store::<S>(&st)?;
                let op = make(inst.node_name.clone(), store, out);
                inst.input::<K, V>(op);
                Ok(())
            }),
        );
        KStream::new(self.b.clone(), node, None, key_changed)
    }
}

impl StreamsBuilder {
    /// Declares a key-value store for processors (see [`KStream::process`]).
    ///
    /// # Panics
    ///
    /// If the topology already has a store named `name`.
    pub fn add_kv_store<K: Key, V: Data>(
        &self,
        name: &str,
        key: impl crate::serdes::Serde<K> + 'static,
        value: impl crate::serdes::Serde<V> + 'static,
    ) {
        let (k, v): (SerdeRef<K>, SerdeRef<V>) = (Arc::new(key), Arc::new(value));
        let n = name.to_string();
        self.add_store(name, "key-value", move || {
            KeyValueStore::new(n.clone(), k.clone(), v.clone())
        });
    }
}

/// Join buffers: a list of (value, matched) per key and time, as JSON of the values' bytes.
fn buffered_serde<V: 'static>(inner: SerdeRef<V>) -> SerdeRef<Buffered<V>> {
    Arc::new(BufferedSerde(inner))
}

struct BufferedSerde<V>(SerdeRef<V>);

impl<V: 'static> crate::serdes::Serde<Buffered<V>> for BufferedSerde<V> {
    fn serialize(&self, value: &Buffered<V>, out: &mut Vec<u8>) -> Result<bool, String> {
        for (v, matched) in value {
            let mut b = Vec::new();
            self.0.serialize(v, &mut b)?;
            out.push(u8::from(*matched));
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(&b);
        }
        Ok(true)
    }
    fn deserialize(&self, data: Option<&[u8]>) -> Result<Buffered<V>, String> {
        let mut data = data.ok_or("null join buffer")?;
        let mut out = Vec::new();
        while !data.is_empty() {
            if data.len() < 5 {
                return Err("truncated join buffer".into());
            }
            let matched = data[0] == 1;
            let len = u32::from_be_bytes(data[1..5].try_into().expect("4 bytes")) as usize;
            let v = data.get(5..5 + len).ok_or("truncated join buffer")?;
            out.push((self.0.deserialize(Some(v))?, matched));
            data = &data[5 + len..];
        }
        Ok(out)
    }
}
