//! The session store: per key, sessions `[start, end]` (inclusive event times) with a value,
//! indexed by end so that closing expired sessions walks from the oldest end.

use super::map::{MapStore, decode_with_times, encode_with_times};
use super::{ChangeEmit, StateStore};
use crate::serdes::SerdeRef;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

/// See the module documentation of [`crate::state`].
pub struct SessionStore<K, V> {
    inner: MapStore<(K, i64, i64), V>,
    by_key: HashMap<K, BTreeSet<(i64, i64)>>,
    by_end: BTreeMap<i64, HashSet<(K, i64)>>,
}

impl<K: Hash + Eq + Clone + 'static, V: 'static> SessionStore<K, V> {
    pub fn new(name: impl Into<String>, key_serde: SerdeRef<K>, value_serde: SerdeRef<V>) -> Self {
        let k2 = key_serde.clone();
        Self {
            inner: MapStore::new(
                name.into(),
                Arc::new(move |(k, s, e), out| encode_with_times(&key_serde, k, &[*s, *e], out)),
                Arc::new(move |b| decode_with_times::<K, 2>(&k2, b).map(|(k, [s, e])| (k, s, e))),
                value_serde,
            ),
            by_key: HashMap::new(),
            by_end: BTreeMap::new(),
        }
    }

    /// Sessions of `key` that overlap `[from, to]`.
    pub fn overlapping(&self, key: &K, from: i64, to: i64) -> Vec<(i64, i64)> {
        self.by_key
            .get(key)
            .map(|s| {
                s.iter()
                    .filter(|(start, end)| *start <= to && *end >= from)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every session: key, start, end, value (in no order).
    pub fn iter(&self) -> impl Iterator<Item = (&K, i64, i64, &V)> {
        self.inner.map.iter().map(|((k, s, e), v)| (k, *s, *e, v))
    }

    pub fn get(&self, key: &K, start: i64, end: i64) -> Option<&V> {
        self.inner.map.get(&(key.clone(), start, end))
    }

    pub fn put(&mut self, key: K, start: i64, end: i64, value: V) {
        self.index(&key, start, end);
        self.inner.put((key, start, end), value);
    }

    pub fn remove(&mut self, key: &K, start: i64, end: i64) -> Option<V> {
        self.unindex(key, start, end);
        self.inner.remove(&(key.clone(), start, end))
    }

    /// The oldest session end held, if any.
    pub fn first_end(&self) -> Option<i64> {
        self.by_end.keys().next().copied()
    }

    /// `(key, start)` of the sessions ending at `end`.
    pub fn ending_at(&self, end: i64) -> Vec<(K, i64)> {
        self.by_end
            .get(&end)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn index(&mut self, key: &K, start: i64, end: i64) {
        self.by_key
            .entry(key.clone())
            .or_default()
            .insert((start, end));
        self.by_end
            .entry(end)
            .or_default()
            .insert((key.clone(), start));
    }

    fn unindex(&mut self, key: &K, start: i64, end: i64) {
        if let Some(s) = self.by_key.get_mut(key) {
            s.remove(&(start, end));
            if s.is_empty() {
                self.by_key.remove(key);
            }
        }
        if let Some(s) = self.by_end.get_mut(&end) {
            s.remove(&(key.clone(), start));
            if s.is_empty() {
                self.by_end.remove(&end);
            }
        }
    }
}

impl<K: Hash + Eq + Clone + 'static, V: 'static> StateStore for SessionStore<K, V> {
    fn name(&self) -> &str {
        &self.inner.name
    }
    fn drain_changes(&mut self, emit: &mut ChangeEmit<'_>) -> Result<(), String> {
        self.inner.drain_changes(emit)
    }
    fn apply_change(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let ((k, s, e), v) = self.inner.decode(key, value)?;
        match v {
            Some(v) => {
                self.index(&k, s, e);
                self.inner.map.insert((k, s, e), v);
            }
            None => {
                self.unindex(&k, s, e);
                self.inner.map.remove(&(k, s, e));
            }
        }
        Ok(())
    }
    fn mark_dirty_encoded(&mut self, key: &[u8]) -> Result<(), String> {
        self.inner.mark_dirty_encoded(key)
    }
    fn snapshot(&self, emit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), String> {
        self.inner.snapshot(emit)
    }
    fn len(&self) -> usize {
        self.inner.map.len()
    }
}
