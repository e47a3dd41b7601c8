//! The typed DSL: [`StreamsBuilder`], [`KStream`], [`KTable`], grouped and windowed streams.
//!
//! Every operation adds a named node (`KSTREAM-FILTER-0000000003`, as Kafka Streams names
//! them) to the builder and returns a new handle; [`StreamsBuilder::build`] freezes them into
//! a [`Topology`]. A key-changing operation (`map`, `select_key`, `flat_map`, `group_by`)
//! followed by a stateful one routes records through an internal repartition topic, so the
//! stateful operator sees every record of a key in one task whatever the input partitioning.

mod config;
mod grouped;
mod stream;
mod table;

pub use config::{Consumed, Grouped, JoinWindows, Produced, SessionWindows, TimeWindows};
pub use grouped::{
    KGroupedStream, SessionWindowedKStream, TimeWindowedKStream, WindowKind, WindowedKStream,
};
pub use stream::KStream;
pub use table::KTable;

use crate::operator::op;
use crate::ops::sink::Sink;
use crate::serdes::SerdeRef;
use crate::state::{StateStore, StoreHandle};
use crate::task::{DecodeRun, DecodeValue, DedupStore, RunSource, TypedSource};
use crate::topology::{BuildFn, Instantiation, NodeDef, NodeKind, StoreDef, TopicName, Topology};
use std::cell::RefCell;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::Arc;

/// Keys: cloneable, hashable, comparable.
pub trait Key: Clone + Hash + Eq + 'static {}
impl<T: Clone + Hash + Eq + 'static> Key for T {}

/// Values: cloneable.
pub trait Data: Clone + 'static {}
impl<T: Clone + 'static> Data for T {}

#[derive(Default)]
struct Inner {
    nodes: Vec<NodeDef>,
    stores: Vec<StoreDef>,
    weights: crate::topology::Weights,
    counter: usize,
}

/// Builds a topology. Cheap to clone; clones add to the same topology.
#[derive(Clone, Default)]
pub struct StreamsBuilder {
    inner: Rc<RefCell<Inner>>,
}

impl StreamsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A record stream read from `topic`.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// let rides: KStream<String, String> = b.stream("rides", Consumed::with(StringSerde, StringSerde));
    /// rides.to("copy", Produced::with(StringSerde, StringSerde));
    /// assert!(b.build().describe().contains("Source: KSTREAM-SOURCE-0000000000 (topics: [rides])"));
    /// ```
    pub fn stream<K: Key, V: Data>(&self, topic: &str, consumed: Consumed<K, V>) -> KStream<K, V> {
        let serde = consumed.value.clone();
        let decode: DecodeValue<V> = Arc::new(move |d| serde.deserialize(d));
        let node = self.source(
            "KSTREAM-SOURCE",
            TopicName::External(topic.into()),
            false,
            &consumed,
            decode,
            None,
        );
        KStream::new(
            self.clone(),
            node,
            Some((consumed.key, consumed.value)),
            false,
        )
    }

    /// A stream of `topic` whose records arrive decoded a run at a time: each record of the
    /// returned stream holds one run of input records (see [`DecodeRun`]). The SQL layer reads
    /// its inputs this way, straight into Arrow batches.
    pub fn stream_runs<V: Data>(
        &self,
        topic: &str,
        out_of_orderness: std::time::Duration,
        decode: DecodeRun<V>,
    ) -> KStream<(), V> {
        let topic = TopicName::External(topic.into());
        let resolved = topic.clone();
        let ooo = out_of_orderness.as_millis() as i64;
        let node = self.add_node(
            "KSTREAM-SOURCE",
            NodeKind::Source {
                topic,
                bootstrap: false,
            },
            vec![],
            vec![],
            Arc::new(move |inst: &mut Instantiation<'_>| {
                let out = inst.out::<(), V>();
                let name = inst.topic(&resolved);
                let dead_letters: Arc<str> = Arc::from(format!("{}-dlq", inst.app_id));
                inst.sources.push((
                    name,
                    false,
                    Box::new(RunSource {
                        node: inst.node_name.clone(),
                        decode: decode.clone(),
                        out_of_orderness: ooo,
                        on_error: inst.on_deserialize_error,
                        dead_letters,
                        out,
                    }),
                ));
                Ok(())
            }),
        );
        KStream::new(self.clone(), node, None, false)
    }

    /// A changelog stream read from `topic` as a table: the latest value per key; a null value
    /// deletes the key. Tables are read to their end before the task processes other inputs.
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// let b = StreamsBuilder::new();
    /// let t: KTable<String, String> = b.table("restaurants", Consumed::with(StringSerde, StringSerde));
    /// t.to("restaurants-copy");
    /// assert!(b.build().describe().contains("KTABLE-SOURCE"));
    /// ```
    pub fn table<K: Key, V: Data>(&self, topic: &str, consumed: Consumed<K, V>) -> KTable<K, V> {
        let serde = consumed.value.clone();
        let decode: DecodeValue<Option<V>> =
            Arc::new(move |d| d.map(|b| serde.deserialize(Some(b))).transpose());
        let consumed_opt: Consumed<K, Option<V>> = Consumed {
            key: consumed.key.clone(),
            value: Arc::new(crate::serdes::OptionSerde(consumed.value.clone())),
            timestamp: None,
            out_of_orderness: consumed.out_of_orderness,
        };
        let node = self.source(
            "KTABLE-SOURCE",
            TopicName::External(topic.into()),
            true,
            &consumed_opt,
            decode,
            None,
        );
        KTable::new(self.clone(), node, Some((consumed.key, consumed.value)))
    }

    /// Freezes the topology.
    pub fn build(self) -> Topology {
        let inner = std::mem::take(&mut *self.inner.borrow_mut());
        Topology::new(inner.nodes, inner.stores, inner.weights)
    }

    /// Counts a value of type `V` as `weigh(value)` records in the per-operator figures
    /// ([`crate::stats::OperatorStats`]): for values that hold a batch of records (the SQL
    /// layer's columnar chunks). Other values count as one record each.
    pub fn weigh<V: 'static>(&self, weigh: fn(&V) -> u64) {
        self.inner
            .borrow_mut()
            .weights
            .insert(std::any::TypeId::of::<V>(), Box::new(weigh));
    }

    fn source<K: Key, V: Data>(
        &self,
        prefix: &str,
        topic: TopicName,
        bootstrap: bool,
        consumed: &Consumed<K, V>,
        decode: DecodeValue<V>,
        dedup: Option<String>,
    ) -> usize {
        let key_serde = consumed.key.clone();
        let ts = consumed.timestamp.clone();
        let ooo = consumed.out_of_orderness;
        let resolved = topic.clone();
        let stores = dedup.iter().cloned().collect();
        self.add_node(
            prefix,
            NodeKind::Source { topic, bootstrap },
            vec![],
            stores,
            Arc::new(move |inst: &mut Instantiation<'_>| {
                let out = inst.out::<K, V>();
                let dedup = match &dedup {
                    Some(name) => Some(inst.store::<DedupStore>(name)?),
                    None => None,
                };
                let name = inst.topic(&resolved);
                let dead_letters: Arc<str> = Arc::from(format!("{}-dlq", inst.app_id));
                inst.sources.push((
                    name,
                    bootstrap,
                    Box::new(TypedSource {
                        node: inst.node_name.clone(),
                        key_serde: key_serde.clone(),
                        decode_value: decode.clone(),
                        timestamp: ts.clone(),
                        out_of_orderness: ooo,
                        on_error: inst.on_deserialize_error,
                        dead_letters,
                        dedup,
                        out,
                    }),
                ));
                Ok(())
            }),
        )
    }

    /// Adds a node; returns its id. Names are `<PREFIX>-<10-digit counter>`.
    pub(crate) fn add_node(
        &self,
        prefix: &str,
        kind: NodeKind,
        parents: Vec<usize>,
        stores: Vec<String>,
        build: BuildFn,
    ) -> usize {
        let mut inner = self.inner.borrow_mut();
        let name = format!("{prefix}-{:010}", inner.counter);
        inner.counter += 1;
        inner.nodes.push(NodeDef {
            name,
            kind,
            parents,
            stores,
            build,
        });
        inner.nodes.len() - 1
    }

    /// The name the next node with this prefix will get (stores of a join are named after it).
    pub(crate) fn next_node_name(&self, prefix: &str) -> String {
        format!("{prefix}-{:010}", self.inner.borrow().counter)
    }

    pub(crate) fn node_name(&self, id: usize) -> String {
        self.inner.borrow().nodes[id].name.clone()
    }

    /// Declares a store; `make` builds one task's instance.
    pub(crate) fn add_store<S: StateStore + 'static>(
        &self,
        name: &str,
        kind: &'static str,
        make: impl Fn() -> S + Send + Sync + 'static,
    ) {
        let mut inner = self.inner.borrow_mut();
        assert!(
            !inner.stores.iter().any(|s| s.name == name),
            "a store named {name:?} already exists in this topology: store names must be unique"
        );
        inner.stores.push(StoreDef {
            name: name.into(),
            kind,
            factory: Arc::new(move || StoreHandle::new(make())),
            reader: None,
            storage: None,
        });
    }

    /// Keeps the store `name` in `storage` (Kafka Streams'
    /// `Materialized.as(Stores.persistentKeyValueStore(name))`), whatever the application's
    /// default ([`crate::StreamsConfig::storage`]).
    ///
    /// ```
    /// use runnel_engine::prelude::*;
    /// use runnel_engine::state::Storage;
    /// let b = StreamsBuilder::new();
    /// b.stream("in", Consumed::with(StringSerde, I64Serde)).group_by_key(None).count("n").to("out");
    /// b.store_storage("n", Storage::Disk { cache_bytes: 16 << 20 });
    /// let mut d = TestDriver::new(b.build());
    /// for _ in 0..3 { d.pipe("in", "a".to_string(), 0i64, 0); }
    /// d.run();
    /// assert_eq!(d.kv_store::<String, i64>("n").get("a"), Some(&3));
    /// ```
    ///
    /// # Panics
    ///
    /// If no store is named `name` yet (declare it first). Running a topology that keeps a
    /// session store on disk fails with `EngineError::Config`: only key-value and window
    /// stores can be kept there yet.
    pub fn store_storage(&self, name: &str, storage: crate::state::Storage) -> &Self {
        let mut inner = self.inner.borrow_mut();
        let store = (inner.stores.iter_mut())
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no store named {name:?} is declared yet"));
        store.storage = Some(storage);
        self
    }

    /// Makes a declared store readable as its aggregation's table (interactive queries).
    pub(crate) fn set_table_reader(&self, name: &str, reader: crate::query::TableReader) {
        let mut inner = self.inner.borrow_mut();
        let store = inner
            .stores
            .iter_mut()
            .find(|s| s.name == name)
            .expect("a reader is set on a declared store");
        store.reader = Some(reader);
    }

    /// The table reader of a declared store, if it has one.
    pub(crate) fn table_reader(&self, name: &str) -> Option<crate::query::TableReader> {
        let inner = self.inner.borrow();
        inner.stores.iter().find(|s| s.name == name)?.reader.clone()
    }

    /// A sink node writing to `topic`.
    pub(crate) fn sink<K: Key, V: Data>(
        &self,
        parent: usize,
        topic: TopicName,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> usize {
        let t = topic.clone();
        self.add_node(
            "KSTREAM-SINK",
            NodeKind::Sink { topic },
            vec![parent],
            vec![],
            Arc::new(move |inst| {
                let topic: Arc<str> = Arc::from(inst.topic(&t));
                let node = inst.node_name.clone();
                let origin = matches!(t, TopicName::Internal(_)).then_some((u64::MAX, 0));
                inst.input::<K, V>(op(Sink {
                    node,
                    origin,
                    topic,
                    key_serde: key_serde.clone(),
                    value_serde: value_serde.clone(),
                }));
                Ok(())
            }),
        )
    }

    /// Routes `parent`'s records through `<app>-<node>-repartition`; returns the new source.
    pub(crate) fn repartition<K: Key, V: Data>(
        &self,
        parent: usize,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
    ) -> usize {
        self.repartition_with(parent, key_serde, value_serde, true)
    }

    /// [`repartition`](Self::repartition); `dedup: false` for records that replace rather
    /// than add (a combiner's cumulative partials), where a resent one must be read again.
    pub(crate) fn repartition_with<K: Key, V: Data>(
        &self,
        parent: usize,
        key_serde: SerdeRef<K>,
        value_serde: SerdeRef<V>,
        dedup: bool,
    ) -> usize {
        let name = format!("{}-repartition", self.node_name(parent));
        let topic = TopicName::Internal(name);
        self.sink(
            parent,
            topic.clone(),
            key_serde.clone(),
            value_serde.clone(),
        );
        let serde = value_serde.clone();
        let decode: DecodeValue<V> = Arc::new(move |d| serde.deserialize(d));
        let consumed = Consumed {
            key: key_serde,
            value: value_serde,
            timestamp: None,
            out_of_orderness: 0,
        };
        // Records an upstream task sends again after a crash are dropped by their origin.
        let dedup = dedup.then(|| {
            let name = format!("{}-dedup", self.next_node_name("KSTREAM-SOURCE"));
            let n = name.clone();
            self.add_store(&name, "key-value", move || {
                DedupStore::new(n.clone(), crate::serdes::json(), crate::serdes::json())
            });
            name
        });
        self.source("KSTREAM-SOURCE", topic, false, &consumed, decode, dedup)
    }
}
