//! The topology: a DAG of named nodes (sources, operators, sinks) and the stores they use,
//! grouped into sub-topologies (the parts connected without going through a topic).
//!
//! A topology is data plus factories: [`NodeDef::build`] instantiates a node for one task, so
//! each task (one per input partition of its sub-topology) gets its own operator chain and
//! stores. Nodes are numbered in creation order and a node's parents are always older, so
//! instantiating in reverse order builds every child before the parents that feed it.

use crate::error::{EngineError, Result};
use crate::operator::{OpRef, Out};
use crate::state::StoreHandle;
use crate::task::{OnDeserializeError, SourceOp, WallPunctuator};
use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

/// A topic name as the topology knows it: a user topic, or an internal one whose full name
/// (`<application.id>-<suffix>`) is known only when the application runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicName {
    External(String),
    Internal(String),
}

impl TopicName {
    pub fn resolve(&self, app_id: &str) -> String {
        match self {
            TopicName::External(t) => t.clone(),
            TopicName::Internal(suffix) => format!("{app_id}-{suffix}"),
        }
    }
}

impl std::fmt::Display for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicName::External(t) => f.write_str(t),
            TopicName::Internal(s) => write!(f, "<app>-{s}"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    Source {
        topic: TopicName,
        /// Tables are read to their end before the task processes anything else.
        bootstrap: bool,
    },
    Processor,
    Sink {
        topic: TopicName,
    },
}

pub(crate) type BuildFn = Arc<dyn Fn(&mut Instantiation<'_>) -> Result<()> + Send + Sync>;

pub(crate) struct NodeDef {
    pub name: String,
    pub kind: NodeKind,
    pub parents: Vec<usize>,
    pub stores: Vec<String>,
    pub build: BuildFn,
}

/// A state store declaration: its name, kind and a factory for one task's instance.
pub(crate) struct StoreDef {
    pub name: String,
    pub kind: &'static str,
    pub factory: Arc<dyn Fn() -> StoreHandle + Send + Sync>,
    /// How to read it as the table its aggregation emits (interactive queries).
    pub reader: Option<crate::query::TableReader>,
    /// Where it keeps its entries when chosen by name; `None`: the application's default.
    pub storage: Option<crate::state::Storage>,
}

impl StoreDef {
    /// One task's instance, with the storage chosen for it.
    pub(crate) fn instantiate(&self) -> StoreHandle {
        let mut handle = (self.factory)();
        handle.storage = self.storage;
        handle
    }
}

/// How many records one value of a type stands for (`fn(&V) -> u64` by the type's id): a
/// value holding a batch (the SQL layer's columnar chunks) counts as its records in the
/// per-operator figures, any other value as one.
pub(crate) type Weights = HashMap<std::any::TypeId, Box<dyn Any + Send + Sync>>;

/// A finished topology, ready to run. See the module documentation.
pub struct Topology {
    pub(crate) nodes: Vec<NodeDef>,
    pub(crate) stores: Vec<StoreDef>,
    pub(crate) subtopologies: Vec<SubTopology>,
    pub(crate) weights: Weights,
}

/// Nodes connected without a topic in between; runs as one task per input partition.
#[derive(Debug, Clone)]
pub(crate) struct SubTopology {
    pub id: usize,
    pub nodes: Vec<usize>,
    pub sources: Vec<TopicName>,
    pub stores: Vec<String>,
}

impl Topology {
    pub(crate) fn new(nodes: Vec<NodeDef>, stores: Vec<StoreDef>, weights: Weights) -> Self {
        let subtopologies = split(&nodes);
        Self {
            nodes,
            stores,
            subtopologies,
            weights,
        }
    }

    pub(crate) fn children(&self) -> Vec<Vec<usize>> {
        let mut children = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &p in &n.parents {
                children[p].push(i);
            }
        }
        children
    }

    /// Every internal topic (repartition topics and changelogs) by suffix, with its kind.
    pub(crate) fn internal_topics(&self) -> Vec<(TopicName, bool)> {
        let mut topics = BTreeSet::new();
        for n in &self.nodes {
            if let NodeKind::Sink { topic } | NodeKind::Source { topic, .. } = &n.kind
                && matches!(topic, TopicName::Internal(_))
            {
                topics.insert((topic.clone(), false));
            }
        }
        for s in &self.stores {
            topics.insert((changelog_topic(&s.name), true));
        }
        topics.into_iter().collect()
    }

    /// The store names, as users see them (changelogs are `<app>-<store>-changelog`).
    pub fn store_names(&self) -> Vec<String> {
        self.stores.iter().map(|s| s.name.clone()).collect()
    }

    /// A human-readable listing of sub-topologies, nodes, edges, topics and stores.
    pub fn describe(&self) -> String {
        let children = self.children();
        let mut out = String::from("Topologies:\n");
        for st in &self.subtopologies {
            let _ = writeln!(out, "   Sub-topology: {}", st.id);
            for &i in &st.nodes {
                let n = &self.nodes[i];
                let name = |j: &usize| self.nodes[*j].name.clone();
                let kids: Vec<String> = children[i].iter().map(name).collect();
                let parents: Vec<String> = n.parents.iter().map(name).collect();
                let head = match &n.kind {
                    NodeKind::Source { topic, bootstrap } => {
                        let table = if *bootstrap {
                            ", read to its end first"
                        } else {
                            ""
                        };
                        format!("    Source: {} (topics: [{topic}]{table})", n.name)
                    }
                    NodeKind::Processor => {
                        format!(
                            "    Processor: {} (stores: [{}])",
                            n.name,
                            n.stores.join(", ")
                        )
                    }
                    NodeKind::Sink { topic } => format!("    Sink: {} (topic: {topic})", n.name),
                };
                let _ = writeln!(out, "{head}");
                if !kids.is_empty() {
                    let _ = writeln!(out, "      --> {}", kids.join(", "));
                }
                if !parents.is_empty() {
                    let _ = writeln!(out, "      <-- {}", parents.join(", "));
                }
            }
        }
        if !self.stores.is_empty() {
            out.push_str("Stores:\n");
            for s in &self.stores {
                let _ = writeln!(
                    out,
                    "    {} ({}, changelog {})",
                    s.name,
                    s.kind,
                    changelog_topic(&s.name)
                );
            }
        }
        out
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

pub(crate) fn changelog_topic(store: &str) -> TopicName {
    TopicName::Internal(format!("{store}-changelog"))
}

/// Connected components over parent edges and shared stores (a store is one task's state, so
/// every node using it must run in the same task).
fn split(nodes: &[NodeDef]) -> Vec<SubTopology> {
    let mut parent: Vec<usize> = (0..nodes.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    let union = |p: &mut Vec<usize>, a: usize, b: usize| {
        let (ra, rb) = (find(p, a), find(p, b));
        if ra != rb {
            p[ra.max(rb)] = ra.min(rb);
        }
    };
    let mut store_owner: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for &q in &n.parents {
            union(&mut parent, i, q);
        }
        for s in &n.stores {
            match store_owner.get(s.as_str()) {
                Some(&o) => union(&mut parent, i, o),
                None => {
                    store_owner.insert(s, i);
                }
            }
        }
    }
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for i in 0..nodes.len() {
        let r = find(&mut parent, i);
        match groups.iter_mut().find(|(root, _)| *root == r) {
            Some((_, g)) => g.push(i),
            None => groups.push((r, vec![i])),
        }
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(id, (_, members))| {
            let mut sources = Vec::new();
            let mut stores = BTreeSet::new();
            for &m in &members {
                if let NodeKind::Source { topic, .. } = &nodes[m].kind {
                    sources.push(topic.clone());
                }
                stores.extend(nodes[m].stores.iter().cloned());
            }
            SubTopology {
                id,
                nodes: members,
                sources,
                stores: stores.into_iter().collect(),
            }
        })
        .collect()
}

/// What a node's factory sees while one task is being built.
pub(crate) struct Instantiation<'a> {
    pub app_id: &'a str,
    pub current: usize,
    pub node_name: Arc<str>,
    pub children: &'a [Vec<usize>],
    pub parents: &'a [usize],
    /// `(child, parent)` → the child's input operator for that parent, as `OpRef<K, V>`.
    inputs: HashMap<(usize, usize), Box<dyn Any>>,
    stores: &'a HashMap<String, StoreHandle>,
    weights: &'a Weights,
    pub sources: Vec<(String, bool, Box<dyn SourceOp>)>,
    pub wall_punctuators: Vec<WallPunctuator>,
    pub on_deserialize_error: OnDeserializeError,
}

impl<'a> Instantiation<'a> {
    pub(crate) fn new(
        app_id: &'a str,
        children: &'a [Vec<usize>],
        stores: &'a HashMap<String, StoreHandle>,
        weights: &'a Weights,
    ) -> Self {
        Self {
            app_id,
            current: 0,
            node_name: Arc::from(""),
            children,
            parents: &[],
            inputs: HashMap::new(),
            stores,
            weights,
            sources: Vec::new(),
            wall_punctuators: Vec::new(),
            on_deserialize_error: OnDeserializeError::default(),
        }
    }

    /// The current node's children, as one output.
    pub fn out<K: Clone + 'static, V: Clone + 'static>(&mut self) -> Out<K, V> {
        let me = self.current;
        let children = self.children[me].clone();
        let ops = children
            .into_iter()
            .map(|c| {
                let input = self
                    .inputs
                    .get(&(c, me))
                    .unwrap_or_else(|| panic!("node {c} was not built before its parent {me}"));
                let op = input
                    .downcast_ref::<OpRef<K, V>>()
                    .unwrap_or_else(|| panic!("node {c} does not accept the output type of {me}"))
                    .clone();
                (c, op)
            })
            .collect();
        let weigh = self
            .weights
            .get(&std::any::TypeId::of::<V>())
            .and_then(|w| w.downcast_ref::<fn(&V) -> u64>())
            .copied();
        Out::new(me, ops, weigh)
    }

    /// Registers `op` as the current node's input for every parent.
    pub fn input<K: 'static, V: 'static>(&mut self, op: OpRef<K, V>) {
        for &p in self.parents {
            self.inputs.insert((self.current, p), Box::new(op.clone()));
        }
    }

    /// Registers `op` as the current node's input for one parent (two-input operators).
    pub fn input_from<K: 'static, V: 'static>(&mut self, parent: usize, op: OpRef<K, V>) {
        self.inputs.insert((self.current, parent), Box::new(op));
    }

    /// This task's instance of a store, untyped (for processors that look stores up by name).
    pub fn store_handle(&self, name: &str) -> Result<StoreHandle> {
        self.stores.get(name).cloned().ok_or_else(|| {
            EngineError::Topology(format!(
                "node {} uses unknown store {name:?}",
                self.node_name
            ))
        })
    }

    /// This task's instance of a store, typed.
    pub fn store<T: 'static>(&self, name: &str) -> Result<std::rc::Rc<std::cell::RefCell<T>>> {
        let handle = self.stores.get(name).ok_or_else(|| {
            EngineError::Topology(format!(
                "node {} uses unknown store {name:?}",
                self.node_name
            ))
        })?;
        handle.typed::<T>().ok_or_else(|| {
            EngineError::Topology(format!(
                "store {name:?} used by {} has another type than declared",
                self.node_name
            ))
        })
    }

    pub fn topic(&self, name: &TopicName) -> String {
        name.resolve(self.app_id)
    }
}
