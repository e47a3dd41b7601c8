//! The key-value store: latest value per key (tables, non-windowed aggregates, user state).
//!
//! In memory, or on disk ([`crate::state::Storage::Disk`]): then the map is a cache in front of
//! a [`DiskTable`] ordered by the changelog's key bytes ([`Cached`]). A read that misses the
//! cache loads the entry from the file (clean); writes stay in the cache until the commit.

use super::cache::Cached;
use super::disk::DiskTable;
use super::map::{MapStore, serde_key};
use super::{ChangeEmit, StateStore};
use crate::serdes::SerdeRef;
use std::borrow::Cow;
use std::hash::Hash;
use std::path::Path;

/// See the module documentation of [`crate::state`].
pub struct KeyValueStore<K, V> {
    inner: MapStore<K, V>,
    disk: Option<Cached>,
}

impl<K: Hash + Eq + Clone + 'static, V: 'static> KeyValueStore<K, V> {
    pub fn new(name: impl Into<String>, key_serde: SerdeRef<K>, value_serde: SerdeRef<V>) -> Self {
        let (enc, dec) = serde_key(key_serde);
        Self {
            inner: MapStore::new(name.into(), enc, dec, value_serde),
            disk: None,
        }
    }

    /// The value of `key`; on disk, a miss of the cache reads the file and caches the entry.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.load(key);
        self.inner.map.get(key)
    }

    /// Runs `f` on the value of `key` without caching it (interactive queries' reads).
    pub fn with_value<R>(&self, key: &K, f: impl FnOnce(&V) -> R) -> Option<R> {
        if let Some(v) = self.inner.map.get(key) {
            return Some(f(v));
        }
        let disk = self.disk.as_ref().filter(|_| !self.inner.is_dirty(key))?;
        let mut kb = Vec::new();
        let v = self.read_disk(&disk.table, key, &mut kb).ok()??;
        Some(f(&v))
    }

    pub fn put(&mut self, key: K, value: V) {
        self.inner.put(key, value)
    }

    /// Sets `key`'s value to `f` of its current one (`None` when absent), in place; on disk, a
    /// miss of the cache reads the file first. `f`'s error leaves `key` deleted (the caller's
    /// task fails and restores).
    ///
    /// # Errors
    ///
    /// `f`'s, unchanged.
    pub fn update(
        &mut self,
        key: &K,
        f: impl FnOnce(Option<V>) -> Result<V, String>,
    ) -> Result<&V, String> {
        self.load(key);
        self.inner.update(key, f)
    }

    pub fn delete(&mut self, key: &K) -> Option<V> {
        self.load(key);
        self.inner.remove(key)
    }

    /// Every entry, in no order; `f`'s or the file's error stops the walk.
    ///
    /// # Errors
    ///
    /// A message when the file cannot be read or an entry decoded, or `f`'s.
    pub fn for_each(&self, f: &mut dyn FnMut(&K, &V) -> Result<(), String>) -> Result<(), String> {
        for (k, v) in &self.inner.map {
            f(k, v)?;
        }
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        disk.table.for_each(&mut |kb, vb| {
            let k = self.inner.decode_key(kb)?;
            // Cached entries were walked above; a dirty absent one was deleted.
            if self.inner.map.contains_key(&k) || self.inner.is_dirty(&k) {
                return Ok(());
            }
            f(&k, &self.inner.decode_value(vb)?)
        })
    }

    fn read_disk(&self, table: &DiskTable, key: &K, kb: &mut Vec<u8>) -> Result<Option<V>, String> {
        self.inner.encode_key(key, kb)?;
        let Some(bytes) = table.get_committed(kb)? else {
            return Ok(None);
        };
        self.inner.decode_value(&bytes).map(Some)
    }

    /// Brings `key`'s entry from the file into the cache, when there is a file and the cache
    /// neither holds it nor knows it deleted.
    fn load(&mut self, key: &K) {
        let Some(disk) = &mut self.disk else {
            return;
        };
        if self.inner.map.contains_key(key) || self.inner.is_dirty(key) {
            return;
        }
        let mut kb = Vec::new();
        let read = self
            .inner
            .encode_key(key, &mut kb)
            .and_then(|()| disk.table.get(&kb))
            .and_then(|v| v.map(|b| self.inner.decode_value(&b)).transpose());
        match read {
            Ok(Some(v)) => {
                self.inner.map.insert(key.clone(), v);
            }
            Ok(None) => {}
            Err(e) => disk.failed(&self.inner.name, e),
        }
    }
}

impl<K: Hash + Eq + Clone + 'static, V: 'static> StateStore for KeyValueStore<K, V> {
    fn name(&self) -> &str {
        &self.inner.name
    }
    fn drain_changes(&mut self, emit: &mut ChangeEmit<'_>) -> Result<(), String> {
        match &mut self.disk {
            Some(disk) => disk.drain(&mut self.inner, emit, &|k| Cow::Borrowed(k), &mut |_| {}),
            None => self.inner.drain_changes(emit),
        }
    }
    fn apply_change(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        if let Some(disk) = &mut self.disk {
            if !self.inner.map.is_empty() {
                let k = self.inner.decode_key(key)?;
                self.inner.map.remove(&k);
            }
            return disk.table.stage(key, value);
        }
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
        if self.disk.is_some() {
            let k = self.inner.decode_key(key)?;
            self.load(&k);
        }
        self.inner.mark_dirty_encoded(key)
    }
    fn snapshot(&self, emit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), String> {
        if self.disk.is_none() {
            return self.inner.snapshot(emit);
        }
        let (mut kb, mut vb) = (Vec::new(), Vec::new());
        self.for_each(&mut |k, v| {
            kb.clear();
            vb.clear();
            self.inner.encode_key(k, &mut kb)?;
            if self.inner.encode_value(v, &mut vb)? {
                emit(&kb, &vb);
            }
            Ok(())
        })
    }
    /// On disk: the entries in the file as of the last commit.
    fn len(&self) -> usize {
        match &self.disk {
            Some(d) => d.table.len() as usize,
            None => self.inner.map.len(),
        }
    }
    fn open_disk(
        &mut self,
        path: &Path,
        cache_bytes: usize,
        committed: u64,
        scratch: bool,
    ) -> Option<Result<Option<u64>, String>> {
        Some(
            Cached::open(path, cache_bytes, committed, scratch).map(|(disk, offset)| {
                // Restoring starts from an empty store: what the map held is in the changelog.
                self.inner.map.clear();
                self.disk = Some(disk);
                offset
            }),
        )
    }
    fn wants_commit(&self) -> bool {
        (self.disk.as_ref()).is_some_and(|d| d.over_budget(self.inner.map.len()))
    }
    fn persist(&mut self, offset: u64) -> Result<bool, String> {
        match &mut self.disk {
            Some(d) => d.table.commit(Some(offset)).map(|()| true),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serdes::{I64Serde, StringSerde};
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, i64),
        /// `update`: adds to the value, or starts it, in place.
        Add(u8, i64),
        Delete(u8),
        Get(u8),
        /// A task commit: the changes drained into a changelog.
        Commit,
        /// A checkpoint at the changelog's end, then a restart from it and the changelog.
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40, any::<i64>()).prop_map(|(k, v)| Op::Put(k, v)),
            3 => (0u8..40, -100i64..100).prop_map(|(k, v)| Op::Add(k, v)),
            2 => (0u8..40).prop_map(Op::Delete),
            3 => (0u8..40).prop_map(Op::Get),
            1 => Just(Op::Commit),
            1 => Just(Op::Restart),
        ]
    }

    fn store() -> KeyValueStore<String, i64> {
        KeyValueStore::new("s", Arc::new(StringSerde), Arc::new(I64Serde))
    }

    fn entries(s: &KeyValueStore<String, i64>) -> HashMap<String, i64> {
        let mut out = HashMap::new();
        s.for_each(&mut |k, v| {
            out.insert(k.clone(), *v);
            Ok(())
        })
        .unwrap();
        out
    }

    /// An update that fails returns its error and leaves the key deleted, in the changelog too.
    #[test]
    fn a_failed_update_leaves_the_key_deleted() {
        let mut s = store();
        s.put("a".into(), 1);
        let err = s
            .update(&"a".to_string(), |_| Err("no".into()))
            .unwrap_err();
        assert_eq!(err, "no");
        assert_eq!(s.get(&"a".to_string()), None);
        let mut changes = Vec::new();
        s.drain_changes(&mut |k, v| changes.push((k.to_vec(), v.is_some())))
            .unwrap();
        assert_eq!(changes, vec![(b"a".to_vec(), false)]);
    }

    proptest! {
        // Each restart syncs a file: few cases, each with many operations.
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// A disk store with a cache of a few entries behaves as a map; its changelog replayed
        /// after its last checkpoint rebuilds it.
        #[test]
        fn a_disk_store_with_a_tiny_cache_is_a_map(ops in proptest::collection::vec(op(), 1..200)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.lsm");
            // A cache of 256 bytes: every commit evicts nearly everything.
            let open = |committed| {
                let mut s = store();
                let from = s.open_disk(&path, 256, committed, false).unwrap().unwrap().unwrap_or(0);
                (s, from)
            };
            let (mut s, _) = open(0);
            let mut model: HashMap<String, i64> = HashMap::new();
            let mut changelog: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        s.put(k.to_string(), v);
                        model.insert(k.to_string(), v);
                    }
                    Op::Add(k, d) => {
                        let got = *s.update(&k.to_string(), |v| Ok(v.unwrap_or(0).wrapping_add(d))).unwrap();
                        let want = model.entry(k.to_string()).or_insert(0);
                        *want = want.wrapping_add(d);
                        prop_assert_eq!(got, *want);
                    }
                    Op::Delete(k) => {
                        prop_assert_eq!(s.delete(&k.to_string()), model.remove(&k.to_string()));
                    }
                    Op::Get(k) => {
                        prop_assert_eq!(s.get(&k.to_string()).copied(), model.get(&k.to_string()).copied());
                    }
                    Op::Commit => {
                        s.drain_changes(&mut |k, v| changelog.push((k.to_vec(), v.map(<[u8]>::to_vec)))).unwrap();
                    }
                    Op::Restart => {
                        s.drain_changes(&mut |k, v| changelog.push((k.to_vec(), v.map(<[u8]>::to_vec)))).unwrap();
                        let end = changelog.len() as u64;
                        prop_assert!(s.persist(end).unwrap());
                        drop(s);
                        let (mut t, from) = open(end);
                        prop_assert_eq!(from, end);
                        for (k, v) in &changelog[from as usize..] {
                            t.apply_change(k, v.as_deref()).unwrap();
                        }
                        s = t;
                    }
                }
                prop_assert_eq!(entries(&s), model.clone());
            }
            // Replaying the whole changelog into a fresh store gives the same entries.
            s.drain_changes(&mut |k, v| changelog.push((k.to_vec(), v.map(<[u8]>::to_vec)))).unwrap();
            let mut fresh = store();
            for (k, v) in &changelog {
                fresh.apply_change(k, v.as_deref()).unwrap();
            }
            prop_assert_eq!(entries(&fresh), model);
        }
    }
}
