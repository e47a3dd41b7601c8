//! [`KTable`]: a changelog stream — the latest value per key; `None` deletes the key.

use super::{Data, KStream, Key, StreamsBuilder};
use crate::operator::op;
use crate::ops::join::{Joiner, TableTableSide};
use crate::ops::stateless::{FlatFn, Stateless};
use crate::serdes::{OptionSerde, SerdeRef};
use crate::state::KeyValueStore;
use crate::topology::{NodeKind, TopicName};
use std::sync::Arc;

/// A table: every record is an update (`Some`) or a deletion (`None`) of its key.
pub struct KTable<K, V> {
    pub(crate) b: StreamsBuilder,
    pub(crate) node: usize,
    pub(crate) serdes: Option<(SerdeRef<K>, SerdeRef<V>)>,
}

impl<K, V> Clone for KTable<K, V> {
    fn clone(&self) -> Self {
        Self {
            b: self.b.clone(),
            node: self.node,
            serdes: self.serdes.clone(),
        }
    }
}

impl<K: Key, V: Data> KTable<K, V> {
    pub(crate) fn new(
        b: StreamsBuilder,
        node: usize,
        serdes: Option<(SerdeRef<K>, SerdeRef<V>)>,
    ) -> Self {
        Self { b, node, serdes }
    }

    pub(crate) fn serdes_or_panic(&self, what: &str) -> (SerdeRef<K>, SerdeRef<V>) {
        self.serdes.clone().unwrap_or_else(|| {
            panic!("a table used in a {what} needs serdes: call with_serdes(..) on it first")
        })
    }

    /// Declares the serdes of key and value (after `map_values` changed the type).
    pub fn with_serdes(
        mut self,
        key: impl crate::serdes::Serde<K> + 'static,
        value: impl crate::serdes::Serde<V> + 'static,
    ) -> Self {
        self.serdes = Some((Arc::new(key), Arc::new(value)));
        self
    }

    pub(crate) fn changes<V2: Data>(
        &self,
        prefix: &str,
        f: FlatFn<K, Option<V>, K, Option<V2>>,
        serdes: Option<(SerdeRef<K>, SerdeRef<V2>)>,
    ) -> KTable<K, V2> {
        let node = self.b.add_node(
            prefix,
            NodeKind::Processor,
            vec![self.node],
            vec![],
            Arc::new(move |inst| {
                let out = inst.out::<K, Option<V2>>();
                let node = inst.node_name.clone();
                inst.input::<K, Option<V>>(op(Stateless {
                    node,
                    f: f.clone(),
                    out,
                }));
                Ok(())
            }),
        );
        KTable::new(self.b.clone(), node, serdes)
    }

    /// Keeps rows for which `pred` holds; a row that stops matching becomes a deletion.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.table("t", Consumed::with(StringSerde, I64Serde)).filter(|_, v| *v > 0).to("out");
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("t", "a".to_string(), 5i64, 0);
    /// d.pipe("t", "a".to_string(), -1i64, 1);
    /// d.run();
    /// assert_eq!(d.table::<String, i64>("out").get("a"), None);
    /// ```
    pub fn filter(&self, pred: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> KTable<K, V> {
        let f: FlatFn<K, Option<V>, K, Option<V>> = Arc::new(move |mut r, out| {
            if r.value.as_ref().is_some_and(|v| !pred(&r.key, v)) {
                r.value = None;
            }
            out.push(r);
            Ok(())
        });
        self.changes("KTABLE-FILTER", f, self.serdes.clone())
    }

    /// Keeps rows for which `pred` does not hold.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.table("t", Consumed::with(StringSerde, I64Serde)).filter_not(|_, v| *v > 0).to("out");
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("t", "a".to_string(), -5i64, 0);
    /// d.run();
    /// assert_eq!(d.table::<String, i64>("out").get("a"), Some(&-5));
    /// ```
    pub fn filter_not(
        &self,
        pred: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KTable<K, V> {
        self.filter(move |k, v| !pred(k, v))
    }

    /// Maps each row's value.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.table("t", Consumed::with(StringSerde, I64Serde))
    ///     .map_values(|v| v * 100)
    ///     .with_serdes(StringSerde, I64Serde)
    ///     .to("out");
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("t", "a".to_string(), 2i64, 0);
    /// d.run();
    /// assert_eq!(d.table::<String, i64>("out").get("a"), Some(&200));
    /// ```
    pub fn map_values<V2: Data>(
        &self,
        f: impl Fn(&V) -> V2 + Send + Sync + 'static,
    ) -> KTable<K, V2> {
        let g: FlatFn<K, Option<V>, K, Option<V2>> = Arc::new(move |r, out| {
            let v = r.value.as_ref().map(&f);
            let k = r.key.clone();
            out.push(r.with(k, v));
            Ok(())
        });
        self.changes("KTABLE-MAPVALUES", g, None)
    }

    /// The table's updates as a stream (`None` for deletions).
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// b.table("t", Consumed::with(StringSerde, I64Serde))
    ///     .to_stream()
    ///     .map_values(|v| v.unwrap_or(-1))
    ///     .to("out", Produced::with(StringSerde, I64Serde));
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("t", "a".to_string(), 2i64, 0);
    /// d.pipe_tombstone::<String>("t", "a".to_string(), 1);
    /// d.run();
    /// assert_eq!(d.read::<String, i64>("out"), vec![("a".into(), 2), ("a".into(), -1)]);
    /// ```
    pub fn to_stream(&self) -> KStream<K, Option<V>> {
        let serdes = self
            .serdes
            .clone()
            .map(|(k, v)| -> (SerdeRef<K>, SerdeRef<Option<V>>) { (k, Arc::new(OptionSerde(v))) });
        KStream::new(self.b.clone(), self.node, serdes, false)
    }

    /// Writes the table's updates to `topic` with its serdes; deletions become tombstones.
    ///
    /// # Panics
    ///
    /// If the table has no serdes (call `with_serdes` after `map_values`).
    pub fn to(&self, topic: &str) {
        let (k, v) = self.serdes_or_panic("`to`");
        self.b.sink::<K, Option<V>>(
            self.node,
            TopicName::External(topic.into()),
            k,
            Arc::new(OptionSerde(v)),
        );
    }

    /// Table–table inner join: a row exists while both sides have one.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// let l = b.table("l", Consumed::with(StringSerde, I64Serde));
    /// let r = b.table("r", Consumed::with(StringSerde, I64Serde));
    /// l.join(&r, |a, b| a * b).with_serdes(StringSerde, I64Serde).to("out");
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("l", "k".to_string(), 3i64, 0);
    /// d.pipe("r", "k".to_string(), 4i64, 1);
    /// d.run();
    /// assert_eq!(d.table::<String, i64>("out").get("k"), Some(&12));
    /// ```
    ///
    /// # Panics
    ///
    /// If either table has no serdes (call `with_serdes` after `map_values`).
    pub fn join<V2: Data, VR: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, &V2) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        let j: Joiner<K, V, V2, VR> = Arc::new(move |_, l, r| Some(joiner(l?, r?)));
        self.join_tables(other, j, "KTABLE-JOIN")
    }

    /// Table–table left join: a row exists while the left side has one.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// let l = b.table("l", Consumed::with(StringSerde, I64Serde));
    /// let r = b.table("r", Consumed::with(StringSerde, I64Serde));
    /// l.left_join(&r, |a, b| a * b.copied().unwrap_or(1)).with_serdes(StringSerde, I64Serde).to("out");
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("l", "k".to_string(), 3i64, 0);
    /// d.run();
    /// assert_eq!(d.table::<String, i64>("out").get("k"), Some(&3));
    /// ```
    ///
    /// # Panics
    ///
    /// If either table has no serdes (call `with_serdes` after `map_values`).
    pub fn left_join<V2: Data, VR: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        let j: Joiner<K, V, V2, VR> = Arc::new(move |_, l, r| Some(joiner(l?, r)));
        self.join_tables(other, j, "KTABLE-LEFTJOIN")
    }

    /// Table–table outer join: a row exists while either side has one.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// let l = b.table("l", Consumed::with(StringSerde, I64Serde));
    /// let r = b.table("r", Consumed::with(StringSerde, I64Serde));
    /// l.outer_join(&r, |a, b| a.copied().unwrap_or(0) + b.copied().unwrap_or(0)).with_serdes(StringSerde, I64Serde).to("out");
    /// let mut d = TestDriver::new(b.build());
    /// d.pipe("r", "k".to_string(), 4i64, 0);
    /// d.run();
    /// assert_eq!(d.table::<String, i64>("out").get("k"), Some(&4));
    /// ```
    ///
    /// # Panics
    ///
    /// If either table has no serdes (call `with_serdes` after `map_values`).
    pub fn outer_join<V2: Data, VR: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> VR + Send + Sync + 'static,
    ) -> KTable<K, VR> {
        let j: Joiner<K, V, V2, VR> = Arc::new(move |_, l, r| {
            if l.is_none() && r.is_none() {
                None
            } else {
                Some(joiner(l, r))
            }
        });
        self.join_tables(other, j, "KTABLE-OUTERJOIN")
    }

    fn join_tables<V2: Data, VR: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: Joiner<K, V, V2, VR>,
        prefix: &str,
    ) -> KTable<K, VR> {
        let (lk, lv) = self.serdes_or_panic("join");
        let (rk, rv) = other.serdes_or_panic("join");
        let name = self.b.next_node_name(prefix);
        let (ls, rs) = (format!("{name}-this-store"), format!("{name}-other-store"));
        let (a, b2, c) = (ls.clone(), lk.clone(), lv.clone());
        self.b.add_store(&ls, "key-value", move || {
            KeyValueStore::new(a.clone(), b2.clone(), c.clone())
        });
        let (a, b2, c) = (rs.clone(), rk.clone(), rv.clone());
        self.b.add_store(&rs, "key-value", move || {
            KeyValueStore::new(a.clone(), b2.clone(), c.clone())
        });
        let (left, right) = (self.node, other.node);
        let (ls2, rs2) = (ls.clone(), rs.clone());
        let node = self.b.add_node(
            prefix,
            NodeKind::Processor,
            vec![left, right],
            vec![ls, rs],
            Arc::new(move |inst| {
                let out = inst.out::<K, Option<VR>>();
                let (l, r) = (
                    inst.store::<KeyValueStore<K, V>>(&ls2)?,
                    inst.store::<KeyValueStore<K, V2>>(&rs2)?,
                );
                let node = inst.node_name.clone();
                let out2 = inst.out::<K, Option<VR>>();
                inst.input_from::<K, Option<V>>(
                    left,
                    op(TableTableSide::<K, V, V2, VR, true> {
                        node: node.clone(),
                        left: l.clone(),
                        right: r.clone(),
                        joiner: joiner.clone(),
                        out: out2,
                    }),
                );
                inst.input_from::<K, Option<V2>>(
                    right,
                    op(TableTableSide::<K, V, V2, VR, false> {
                        node,
                        left: l,
                        right: r,
                        joiner: joiner.clone(),
                        out,
                    }),
                );
                Ok(())
            }),
        );
        KTable::new(self.b.clone(), node, None)
    }
}

impl<K: Key, V: Data> KTable<K, Option<V>> {
    /// A table of `Option<V>` whose `None` values are deletions.
    pub(crate) fn flatten_option(&self, value_serde: SerdeRef<V>) -> KTable<K, V> {
        let f: FlatFn<K, Option<Option<V>>, K, Option<V>> = Arc::new(|r, out| {
            let k = r.key.clone();
            let v = r.value.clone().flatten();
            out.push(r.with(k, v));
            Ok(())
        });
        let serdes = self.serdes.clone().map(|(k, _)| (k, value_serde));
        self.changes("KTABLE-MAPVALUES", f, serdes)
    }
}
