//! The key-value store: latest value per key (tables, non-windowed aggregates, user state).

use super::map::{MapStore, serde_key};
use super::{ChangeEmit, StateStore};
use crate::serdes::SerdeRef;
use std::hash::Hash;

/// See the module documentation of [`crate::state`].
pub struct KeyValueStore<K, V> {
    inner: MapStore<K, V>,
}

impl<K: Hash + Eq + Clone + 'static, V: 'static> KeyValueStore<K, V> {
    pub fn new(name: impl Into<String>, key_serde: SerdeRef<K>, value_serde: SerdeRef<V>) -> Self {
        let (enc, dec) = serde_key(key_serde);
        Self {
            inner: MapStore::new(name.into(), enc, dec, value_serde),
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.inner.map.get(key)
    }

    pub fn put(&mut self, key: K, value: V) {
        self.inner.put(key, value)
    }

    pub fn delete(&mut self, key: &K) -> Option<V> {
        self.inner.remove(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.inner.map.iter()
    }
}

impl<K: Hash + Eq + Clone + 'static, V: 'static> StateStore for KeyValueStore<K, V> {
    fn name(&self) -> &str {
        &self.inner.name
    }
    fn drain_changes(&mut self, emit: &mut ChangeEmit<'_>) -> Result<(), String> {
        self.inner.drain_changes(emit)
    }
    fn apply_change(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        match self.inner.decode(key, value)? {
            (k, Some(v)) => {
                self.inner.map.insert(k, v);
            }
            (k, None) => {
                self.inner.map.remove(&k);
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
