//! The window store: a value per (key, window or pane start), ordered by start so that closing
//! every window that ended before a watermark is a walk from the oldest start.

use super::map::{MapStore, decode_with_times, encode_with_times};
use super::{ChangeEmit, StateStore};
use crate::serdes::SerdeRef;
use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

/// See the module documentation of [`crate::state`].
pub struct WindowStore<K, V> {
    inner: MapStore<(K, i64), V>,
    /// Start → keys with an entry at that start.
    by_start: BTreeMap<i64, HashSet<K>>,
    /// Windows starting before this were emitted; kept in the changelog under [`CLOSED_KEY`]
    /// so a restored hopping window does not emit again from its surviving later panes.
    closed_before: i64,
    closed_dirty: bool,
}

/// A changelog key no encoded (key, start) can be: too short to hold a start.
const CLOSED_KEY: &[u8] = b"\xff\xfe";

impl<K: Hash + Eq + Clone + 'static, V: 'static> WindowStore<K, V> {
    pub fn new(name: impl Into<String>, key_serde: SerdeRef<K>, value_serde: SerdeRef<V>) -> Self {
        let k2 = key_serde.clone();
        Self {
            inner: MapStore::new(
                name.into(),
                Arc::new(move |(k, s), out| encode_with_times(&key_serde, k, &[*s], out)),
                Arc::new(move |b| decode_with_times::<K, 1>(&k2, b).map(|(k, [s])| (k, s))),
                value_serde,
            ),
            by_start: BTreeMap::new(),
            closed_before: i64::MIN,
            closed_dirty: false,
        }
    }

    pub fn closed_before(&self) -> i64 {
        self.closed_before
    }

    pub fn set_closed_before(&mut self, start: i64) {
        self.closed_before = start;
        self.closed_dirty = true;
    }

    pub fn get(&self, key: &K, start: i64) -> Option<&V> {
        self.inner.map.get(&(key.clone(), start))
    }

    pub fn put(&mut self, key: K, start: i64, value: V) {
        self.by_start.entry(start).or_default().insert(key.clone());
        self.inner.put((key, start), value)
    }

    /// Replaces the value at (key, start) with `f(old or init())`, hashing the key once when
    /// the entry exists (the common case: one pane updated per record). When `f` fails, an
    /// existing entry holds `init()`: the caller stops its task.
    ///
    /// # Errors
    ///
    /// The error of `f`, unchanged. The entry then holds `init()` if it existed (and is not marked
    /// dirty), or is still absent.
    pub fn update<E>(
        &mut self,
        key: &K,
        start: i64,
        init: impl FnOnce() -> V,
        f: impl FnOnce(V) -> Result<V, E>,
    ) -> Result<(), E> {
        let slot = (key.clone(), start);
        if let Some(v) = self.inner.map.get_mut(&slot) {
            let old = std::mem::replace(v, init());
            *v = f(old)?;
            self.inner.mark_dirty(slot);
        } else {
            let v = f(init())?;
            self.by_start.entry(start).or_default().insert(key.clone());
            self.inner.put(slot, v);
        }
        Ok(())
    }

    pub fn remove(&mut self, key: &K, start: i64) -> Option<V> {
        if let Some(keys) = self.by_start.get_mut(&start) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_start.remove(&start);
            }
        }
        self.inner.remove(&(key.clone(), start))
    }

    /// The oldest start held, if any.
    pub fn first_start(&self) -> Option<i64> {
        self.by_start.keys().next().copied()
    }

    /// The next start held after `start`.
    pub fn next_start_after(&self, start: i64) -> Option<i64> {
        self.by_start
            .range(start.saturating_add(1)..)
            .next()
            .map(|(s, _)| *s)
    }

    /// Keys with an entry at `start`.
    pub fn keys_at(&self, start: i64) -> Vec<K> {
        self.by_start
            .get(&start)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every entry: key, start, value (in no order).
    pub fn iter(&self) -> impl Iterator<Item = (&K, i64, &V)> {
        self.inner.map.iter().map(|((k, s), v)| (k, *s, v))
    }

    /// Entries of `key` with start in `[from, to]`, oldest first.
    pub fn fetch(&self, key: &K, from: i64, to: i64) -> Vec<(i64, &V)> {
        self.by_start
            .range(from..=to)
            .filter(|(_, keys)| keys.contains(key))
            .filter_map(|(s, _)| self.get(key, *s).map(|v| (*s, v)))
            .collect()
    }
}

impl<K: Hash + Eq + Clone + 'static, V: 'static> StateStore for WindowStore<K, V> {
    fn name(&self) -> &str {
        &self.inner.name
    }
    fn drain_changes(&mut self, emit: &mut ChangeEmit<'_>) -> Result<(), String> {
        if std::mem::take(&mut self.closed_dirty) {
            emit(CLOSED_KEY, Some(&self.closed_before.to_be_bytes()));
        }
        self.inner.drain_changes(emit)
    }
    fn apply_change(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        if key == CLOSED_KEY {
            if let Some(v) = value.and_then(|v| <[u8; 8]>::try_from(v).ok()) {
                self.closed_before = i64::from_be_bytes(v);
            }
            return Ok(());
        }
        let ((k, s), v) = self.inner.decode(key, value)?;
        match v {
            Some(v) => {
                self.by_start.entry(s).or_default().insert(k.clone());
                self.inner.map.insert((k, s), v);
            }
            None => {
                if let Some(keys) = self.by_start.get_mut(&s) {
                    keys.remove(&k);
                    if keys.is_empty() {
                        self.by_start.remove(&s);
                    }
                }
                self.inner.map.remove(&(k, s));
            }
        }
        Ok(())
    }
    fn mark_dirty_encoded(&mut self, key: &[u8]) -> Result<(), String> {
        if key == CLOSED_KEY {
            self.closed_dirty = true;
            return Ok(());
        }
        self.inner.mark_dirty_encoded(key)
    }
    fn snapshot(&self, emit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), String> {
        emit(CLOSED_KEY, &self.closed_before.to_be_bytes());
        self.inner.snapshot(emit)
    }
    fn len(&self) -> usize {
        self.inner.map.len()
    }
}
