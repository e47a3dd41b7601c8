//! The window store: a value per (key, window or pane start), ordered by start so that closing
//! every window that ended before a watermark is a walk from the oldest start.
//!
//! In memory, or on disk ([`crate::state::Storage::Disk`]): then the map is a cache and write
//! buffer in front of a file ([`Cached`]) keyed by start, then key bytes (the start big-endian
//! with its sign bit flipped, so that byte order is start order). A read that misses the cache
//! loads the entry from the file; the walks by start ([`WindowStore::first_start`],
//! [`WindowStore::next_start_after`], [`WindowStore::keys_at`]) merge the cache's index with a
//! range of the file. A removal is written to the file at once as well as kept dirty for the
//! changelog, so that the file's walks no longer see it (between checkpoints the file need not
//! equal the changelog, see `state::disk`). The starts that may be in the file are kept in
//! memory (a few per window), so that the entries of a new window are not looked for there.

use super::cache::Cached;
use super::map::{MapStore, decode_with_times, encode_with_times};
use super::{ChangeEmit, StateStore};
use crate::serdes::SerdeRef;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;

/// See the module documentation of [`crate::state`].
pub struct WindowStore<K, V> {
    inner: MapStore<(K, i64), V>,
    key_serde: SerdeRef<K>,
    /// Start → keys with an entry at that start (on disk: of the cached entries).
    by_start: BTreeMap<i64, HashSet<K>>,
    /// Windows starting before this were emitted; kept in the changelog under [`CLOSED_KEY`]
    /// so a restored hopping window does not emit again from its surviving later panes.
    closed_before: i64,
    closed_dirty: bool,
    disk: Option<Disk>,
}

struct Disk {
    cached: Cached,
    /// Starts that may have entries in the file: every start written there, less those the
    /// walk from the oldest start found empty.
    starts: BTreeSet<i64>,
}

/// A changelog key no encoded (key, start) can be: too short to hold a start.
const CLOSED_KEY: &[u8] = b"\xff\xfe";
/// [`CLOSED_KEY`] in the file: before every (start, key), and too short to hold a start.
const CLOSED_FILE_KEY: &[u8] = b"";

/// A start as the first 8 bytes of a file key: byte order is start order.
fn start_bytes(start: i64) -> [u8; 8] {
    ((start as u64) ^ (1 << 63)).to_be_bytes()
}

/// The start of a file key of an entry (at least 8 bytes).
fn start_of(file_key: &[u8]) -> i64 {
    (u64::from_be_bytes(file_key[..8].try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

/// A changelog key (key bytes, then start) as the file's key (start, then key bytes).
fn file_key(changelog_key: &[u8]) -> Cow<'_, [u8]> {
    let Some(split) = changelog_key.len().checked_sub(8) else {
        return Cow::Borrowed(CLOSED_FILE_KEY);
    };
    let start = i64::from_be_bytes(changelog_key[split..].try_into().expect("8 bytes"));
    let mut out = Vec::with_capacity(changelog_key.len());
    out.extend_from_slice(&start_bytes(start));
    out.extend_from_slice(&changelog_key[..split]);
    Cow::Owned(out)
}

/// Forgets `key` at `start` in a start index.
fn unindex<K: Hash + Eq>(by_start: &mut BTreeMap<i64, HashSet<K>>, key: &K, start: i64) {
    if let Some(keys) = by_start.get_mut(&start) {
        keys.remove(key);
        if keys.is_empty() {
            by_start.remove(&start);
        }
    }
}

impl Disk {
    /// The oldest start in the file at or after `from`; forgets the starts before it, which
    /// the file no longer holds.
    fn first_from(&mut self, from: i64) -> Result<Option<i64>, String> {
        // The file holds no start that `starts` does not: the walk begins at the first of them,
        // past the removed entries of the starts walked before (in an LSM tree a removal is a
        // tombstone that every walk over it steps through until compaction drops it).
        let Some(&seek) = self.starts.range(from..).next() else {
            return Ok(None);
        };
        let first = self.scan_first(seek)?;
        let mut held = self.starts.split_off(&from);
        if let Some(f) = first {
            self.starts.append(&mut held.split_off(&f));
            self.starts.insert(f);
        }
        Ok(first)
    }

    /// The oldest start of an entry in the file at or after `from` (staged writes committed
    /// first), by walking it.
    fn scan_first(&mut self, from: i64) -> Result<Option<i64>, String> {
        self.cached.table.commit_staged()?;
        let mut first = None;
        self.cached
            .table
            .scan_from(&start_bytes(from), &mut |k, _| {
                first = Some(start_of(k));
                Ok(false)
            })?;
        Ok(first)
    }
}

impl<K: Hash + Eq + Clone + 'static, V: 'static> WindowStore<K, V> {
    pub fn new(name: impl Into<String>, key_serde: SerdeRef<K>, value_serde: SerdeRef<V>) -> Self {
        let (k1, k2) = (key_serde.clone(), key_serde.clone());
        Self {
            inner: MapStore::new(
                name.into(),
                Arc::new(move |(k, s), out| encode_with_times(&k1, k, &[*s], out)),
                Arc::new(move |b| decode_with_times::<K, 1>(&k2, b).map(|(k, [s])| (k, s))),
                value_serde,
            ),
            key_serde,
            by_start: BTreeMap::new(),
            closed_before: i64::MIN,
            closed_dirty: false,
            disk: None,
        }
    }

    pub fn closed_before(&self) -> i64 {
        self.closed_before
    }

    pub fn set_closed_before(&mut self, start: i64) {
        self.closed_before = start;
        self.closed_dirty = true;
    }

    /// The value at (key, start); on disk, a miss of the cache reads the file.
    pub fn get(&mut self, key: &K, start: i64) -> Option<&V> {
        let slot = (key.clone(), start);
        self.load(&slot);
        self.inner.map.get(&slot)
    }

    pub fn put(&mut self, key: K, start: i64, value: V) {
        self.by_start.entry(start).or_default().insert(key.clone());
        self.inner.put((key, start), value)
    }

    /// Replaces the value at (key, start) with `f(old or init())`, hashing the key once when
    /// the entry is in memory (the common case: one pane updated per record). When `f` fails,
    /// an existing entry holds `init()`: the caller stops its task.
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
        if self.disk.is_some() && !self.inner.map.contains_key(&slot) {
            self.load(&slot);
        }
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
        let slot = (key.clone(), start);
        self.load(&slot);
        unindex(&mut self.by_start, key, start);
        let old = self.inner.remove(&slot);
        if let Some(d) = &mut self.disk
            && d.starts.contains(&start)
        {
            let mut kb = start_bytes(start).to_vec();
            let staged = (self.key_serde.serialize(key, &mut kb))
                .and_then(|_| d.cached.table.stage(&kb, None));
            if let Err(e) = staged {
                d.cached.failed(&self.inner.name, e);
            }
        }
        old
    }

    /// The oldest start held, if any.
    pub fn first_start(&mut self) -> Option<i64> {
        self.next_start_from(i64::MIN)
    }

    /// The next start held after `start`.
    pub fn next_start_after(&mut self, start: i64) -> Option<i64> {
        self.next_start_from(start.checked_add(1)?)
    }

    fn next_start_from(&mut self, from: i64) -> Option<i64> {
        let cached = self.by_start.range(from..).next().map(|(s, _)| *s);
        let Some(d) = &mut self.disk else {
            return cached;
        };
        match d.first_from(from) {
            Ok(file) => cached.into_iter().chain(file).min(),
            Err(e) => {
                d.cached.failed(&self.inner.name, e);
                cached
            }
        }
    }

    /// Keys with an entry at `start`.
    pub fn keys_at(&mut self, start: i64) -> Vec<K> {
        let cached = self.by_start.get(&start);
        let mut keys: Vec<K> = cached
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let Some(d) = &mut self.disk else {
            return keys;
        };
        if !d.starts.contains(&start) {
            return keys;
        }
        let mut corrupt = Vec::new();
        let scanned = d.cached.table.commit_staged().and_then(|()| {
            d.cached.table.scan_from(&start_bytes(start), &mut |kb, _| {
                if start_of(kb) != start {
                    return Ok(false);
                }
                match self.key_serde.deserialize(Some(&kb[8..])) {
                    Ok(k) if !cached.is_some_and(|c| c.contains(&k)) => keys.push(k),
                    Ok(_) => {}
                    Err(e) => corrupt.push((kb.to_vec(), e)),
                }
                Ok(true)
            })
        });
        if let Err(e) = scanned {
            d.cached.failed(&self.inner.name, e);
        }
        // An entry whose key does not decode fails the next commit; dropped from the file, it
        // does not stop the walks from the oldest start from moving on meanwhile.
        for (kb, e) in corrupt {
            d.cached.failed(&self.inner.name, e);
            if let Err(e) = d.cached.table.stage(&kb, None) {
                d.cached.failed(&self.inner.name, e);
            }
        }
        keys
    }

    /// Every entry, or `only` one key's: key, start, value (in no order), without caching those
    /// read from the file (interactive queries; one key's entries on disk are a walk of the
    /// whole file, laid out by start). `f`'s or the file's error stops the walk.
    ///
    /// # Errors
    ///
    /// A message when the file cannot be read or an entry decoded, or `f`'s.
    pub fn for_each(
        &self,
        only: Option<&K>,
        f: &mut dyn FnMut(&K, i64, &V) -> Result<(), String>,
    ) -> Result<(), String> {
        match only {
            Some(k) => {
                for (s, keys) in &self.by_start {
                    if keys.contains(k)
                        && let Some(v) = self.inner.map.get(&(k.clone(), *s))
                    {
                        f(k, *s, v)?;
                    }
                }
            }
            None => {
                for ((k, s), v) in &self.inner.map {
                    f(k, *s, v)?;
                }
            }
        }
        let Some(d) = &self.disk else {
            return Ok(());
        };
        d.cached
            .table
            .scan_from(&start_bytes(i64::MIN), &mut |kb, vb| {
                let slot = (self.key_serde.deserialize(Some(&kb[8..]))?, start_of(kb));
                // Cached entries were walked above; a dirty absent one was removed.
                if only.is_none_or(|k| *k == slot.0)
                    && !self.inner.map.contains_key(&slot)
                    && !self.inner.is_dirty(&slot)
                {
                    f(&slot.0, slot.1, &self.inner.decode_value(vb)?)?;
                }
                Ok(true)
            })
    }

    /// Entries of `key` with start in `[from, to]`, oldest first (on disk, read into the cache).
    pub fn fetch(&mut self, key: &K, from: i64, to: i64) -> Vec<(i64, &V)> {
        if let Some(d) = &self.disk {
            let held: Vec<i64> = d.starts.range(from..=to).copied().collect();
            for s in held {
                self.load(&(key.clone(), s));
            }
        }
        self.by_start
            .range(from..=to)
            .filter(|(_, keys)| keys.contains(key))
            .filter_map(|(s, _)| self.inner.map.get(&(key.clone(), *s)).map(|v| (*s, v)))
            .collect()
    }

    /// Brings the entry at `slot` from the file into the cache, when there is a file that may
    /// hold it and the cache neither holds it nor knows it removed.
    fn load(&mut self, slot: &(K, i64)) {
        let Some(d) = &mut self.disk else {
            return;
        };
        if !d.starts.contains(&slot.1)
            || self.inner.map.contains_key(slot)
            || self.inner.is_dirty(slot)
        {
            return;
        }
        let mut kb = start_bytes(slot.1).to_vec();
        let read = (self.key_serde.serialize(&slot.0, &mut kb))
            .and_then(|_| d.cached.table.get(&kb))
            .and_then(|v| v.map(|b| self.inner.decode_value(&b)).transpose());
        match read {
            Ok(Some(v)) => {
                let keys = self.by_start.entry(slot.1).or_default();
                keys.insert(slot.0.clone());
                self.inner.map.insert(slot.clone(), v);
            }
            Ok(None) => {}
            Err(e) => d.cached.failed(&self.inner.name, e),
        }
    }
}

impl<K: Hash + Eq + Clone + 'static, V: 'static> StateStore for WindowStore<K, V> {
    fn name(&self) -> &str {
        &self.inner.name
    }
    fn drain_changes(&mut self, emit: &mut ChangeEmit<'_>) -> Result<(), String> {
        if std::mem::take(&mut self.closed_dirty) {
            let closed = self.closed_before.to_be_bytes();
            emit(CLOSED_KEY, Some(&closed));
            if let Some(d) = &mut self.disk {
                d.cached.table.stage(CLOSED_FILE_KEY, Some(&closed))?;
            }
        }
        let Some(d) = &mut self.disk else {
            return self.inner.drain_changes(emit);
        };
        // Every entry in memory may be written to the file now.
        d.starts.extend(self.by_start.keys());
        let by_start = &mut self.by_start;
        d.cached
            .drain(&mut self.inner, emit, &file_key, &mut |(k, s)| {
                unindex(by_start, k, *s)
            })
    }
    fn apply_change(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        if key == CLOSED_KEY {
            if let Some(v) = value.and_then(|v| <[u8; 8]>::try_from(v).ok()) {
                self.closed_before = i64::from_be_bytes(v);
            }
            if let Some(d) = &mut self.disk {
                d.cached.table.stage(CLOSED_FILE_KEY, value)?;
            }
            return Ok(());
        }
        if let Some(d) = &mut self.disk {
            if key.len() < 8 {
                return Err("changelog key shorter than its timestamps".into());
            }
            if !self.inner.map.is_empty() {
                let (k, s) = self.inner.decode_key(key)?;
                unindex(&mut self.by_start, &k, s);
                self.inner.map.remove(&(k, s));
            }
            let fk = file_key(key);
            d.starts.insert(start_of(&fk));
            return d.cached.table.stage(&fk, value);
        }
        let ((k, s), v) = self.inner.decode(key, value)?;
        match v {
            Some(v) => {
                self.by_start.entry(s).or_default().insert(k.clone());
                self.inner.map.insert((k, s), v);
            }
            None => {
                unindex(&mut self.by_start, &k, s);
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
        if self.disk.is_some() {
            self.load(&self.inner.decode_key(key)?);
        }
        self.inner.mark_dirty_encoded(key)
    }
    fn snapshot(&self, emit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), String> {
        emit(CLOSED_KEY, &self.closed_before.to_be_bytes());
        if self.disk.is_none() {
            return self.inner.snapshot(emit);
        }
        let (mut kb, mut vb) = (Vec::new(), Vec::new());
        self.for_each(None, &mut |k, s, v| {
            kb.clear();
            vb.clear();
            encode_with_times(&self.key_serde, k, &[s], &mut kb)?;
            if self.inner.encode_value(v, &mut vb)? {
                emit(&kb, &vb);
            }
            Ok(())
        })
    }
    /// On disk: the entries in the file as of the last commit.
    fn len(&self) -> usize {
        match &self.disk {
            Some(d) => d.cached.table.len() as usize,
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
            Cached::open(path, cache_bytes, committed, scratch).and_then(|(cached, offset)| {
                // Restoring starts from an empty store: what memory held is in the changelog.
                self.inner.map.clear();
                self.by_start.clear();
                self.closed_dirty = false;
                let mut d = Disk {
                    cached,
                    starts: BTreeSet::new(),
                };
                let closed = d.cached.table.get(CLOSED_FILE_KEY)?;
                self.closed_before = closed
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map_or(i64::MIN, i64::from_be_bytes);
                // The file's starts, one seek each.
                let mut from = Some(i64::MIN);
                while let Some(f) = from {
                    let first = d.scan_first(f)?;
                    d.starts.extend(first);
                    from = first.and_then(|s| s.checked_add(1));
                }
                self.disk = Some(d);
                Ok(offset)
            }),
        )
    }
    fn wants_commit(&self) -> bool {
        (self.disk.as_ref()).is_some_and(|d| d.cached.over_budget(self.inner.map.len()))
    }
    fn persist(&mut self, offset: u64) -> Result<bool, String> {
        match &mut self.disk {
            Some(d) => d.cached.table.commit(Some(offset)).map(|()| true),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serdes::{I64Serde, StringSerde};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, i64, i64),
        Remove(u8, i64),
        /// Closes the oldest start as the window operators do: every key at it removed.
        CloseOldest,
        /// A task commit: the changes drained into a changelog.
        Commit,
        /// A checkpoint at the changelog's end, then a restart from it and the changelog.
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Starts either side of zero: the file orders them by their sign-flipped bytes.
        let start = (-4i64..6).prop_map(|s| s * 1000);
        prop_oneof![
            6 => (0u8..12, start.clone(), -5i64..5).prop_map(|(k, s, v)| Op::Add(k, s, v)),
            2 => (0u8..12, start).prop_map(|(k, s)| Op::Remove(k, s)),
            1 => Just(Op::CloseOldest),
            1 => Just(Op::Commit),
            1 => Just(Op::Restart),
        ]
    }

    fn store() -> WindowStore<String, i64> {
        WindowStore::new("w", Arc::new(StringSerde), Arc::new(I64Serde))
    }

    type Model = BTreeMap<(i64, String), i64>;

    /// What the window operators see: the walk by start, each start's keys and values.
    fn walk(s: &mut WindowStore<String, i64>) -> Model {
        let mut out = Model::new();
        let mut start = s.first_start();
        while let Some(p) = start {
            for k in s.keys_at(p) {
                let v = *s.get(&k, p).expect("a key at a start has a value there");
                assert_eq!(s.fetch(&k, p, p), vec![(p, &v)]);
                out.insert((p, k), v);
            }
            start = s.next_start_after(p);
        }
        out
    }

    fn entries(s: &WindowStore<String, i64>, only: Option<&String>) -> Model {
        let mut out = Model::new();
        s.for_each(only, &mut |k, p, v| {
            assert!(out.insert((p, k.clone()), *v).is_none(), "{k}@{p} twice");
            Ok(())
        })
        .unwrap();
        out
    }

    proptest! {
        // Each restart syncs a file: few cases, each with many operations.
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// A window store on disk with a cache of a few entries walks by start as a sorted map;
        /// its closing marker and entries survive restarts from its file and changelog.
        #[test]
        fn a_disk_window_store_with_a_tiny_cache_is_a_sorted_map(ops in proptest::collection::vec(op(), 1..200)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("w.lsm");
            let open = |committed| {
                let mut s = store();
                let from = s.open_disk(&path, 256, committed, false).unwrap().unwrap().unwrap_or(0);
                (s, from)
            };
            let (mut s, _) = open(0);
            let mut model = Model::new();
            let mut changelog: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
            let mut closed = i64::MIN;
            for op in ops {
                match op {
                    Op::Add(k, p, v) => {
                        s.update(&k.to_string(), p, || 0, |a| Ok::<_, ()>(a + v)).unwrap();
                        *model.entry((p, k.to_string())).or_default() += v;
                    }
                    Op::Remove(k, p) => {
                        prop_assert_eq!(s.remove(&k.to_string(), p), model.remove(&(p, k.to_string())));
                    }
                    Op::CloseOldest => {
                        let first = model.keys().next().map(|(p, _)| *p);
                        prop_assert_eq!(s.first_start(), first);
                        if let Some(p) = first {
                            for k in s.keys_at(p) {
                                s.remove(&k, p);
                            }
                            model.retain(|(q, _), _| *q != p);
                            closed = p + 1;
                            s.set_closed_before(closed);
                        }
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
                        prop_assert_eq!(s.closed_before(), closed);
                    }
                }
                prop_assert_eq!(&entries(&s, None), &model);
                let one = "3".to_string();
                let of_one: Model = model.iter().filter(|((_, k), _)| *k == one).map(|(k, v)| (k.clone(), *v)).collect();
                prop_assert_eq!(entries(&s, Some(&one)), of_one);
                prop_assert_eq!(&walk(&mut s), &model);
            }
            // Replaying the whole changelog into a fresh store in memory gives the same.
            s.drain_changes(&mut |k, v| changelog.push((k.to_vec(), v.map(<[u8]>::to_vec)))).unwrap();
            let mut fresh = store();
            for (k, v) in &changelog {
                fresh.apply_change(k, v.as_deref()).unwrap();
            }
            prop_assert_eq!(&walk(&mut fresh), &model);
            prop_assert_eq!(fresh.closed_before(), closed);
        }
    }
}
