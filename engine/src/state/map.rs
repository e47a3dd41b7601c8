//! The map with dirty tracking and changelog encoding that every store kind is built on.

use super::ChangeEmit;
use crate::serdes::SerdeRef;
// hashbrown with foldhash (randomly seeded), as DataFusion uses: SipHash was a tenth of a
// windowed SQL job's time in its hashing of keys.
use hashbrown::hash_map::{Entry, EntryRef};
use hashbrown::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

/// Encodes a store's key type to changelog key bytes and back.
pub(crate) type KeyEncode<SK> = Arc<dyn Fn(&SK, &mut Vec<u8>) -> Result<(), String> + Send + Sync>;
pub(crate) type KeyDecode<SK> = Arc<dyn Fn(&[u8]) -> Result<SK, String> + Send + Sync>;

pub(crate) struct MapStore<SK, V> {
    pub name: String,
    pub map: HashMap<SK, V>,
    dirty: HashSet<SK>,
    encode: KeyEncode<SK>,
    decode: KeyDecode<SK>,
    value_serde: SerdeRef<V>,
}

impl<SK: Hash + Eq + Clone, V> MapStore<SK, V> {
    pub fn new(
        name: String,
        encode: KeyEncode<SK>,
        decode: KeyDecode<SK>,
        value_serde: SerdeRef<V>,
    ) -> Self {
        Self {
            name,
            map: HashMap::new(),
            dirty: HashSet::new(),
            encode,
            decode,
            value_serde,
        }
    }

    pub fn put(&mut self, key: SK, value: V) {
        self.dirty.get_or_insert_with(&key, SK::clone);
        self.map.insert(key, value);
    }

    /// Sets `key`'s value to `f` of its current one (`None` when absent) in place: one lookup,
    /// and no key cloned for a key already changed since the last drain. `f`'s error leaves
    /// `key` absent (and changed): the caller's task fails and restores from the changelog.
    pub fn update(
        &mut self,
        key: &SK,
        f: impl FnOnce(Option<V>) -> Result<V, String>,
    ) -> Result<&V, String> {
        self.dirty.get_or_insert_with(key, SK::clone);
        match self.map.entry_ref(key) {
            EntryRef::Occupied(o) => {
                let mut failed = None;
                match o.replace_entry_with(|_, old| f(Some(old)).map_err(|e| failed = Some(e)).ok())
                {
                    Entry::Occupied(o) => Ok(o.into_mut()),
                    Entry::Vacant(_) => Err(failed.unwrap_or_default()),
                }
            }
            EntryRef::Vacant(v) => {
                let value = f(None)?;
                Ok(v.insert_with_key(key.clone(), value))
            }
        }
    }

    pub fn mark_dirty(&mut self, key: SK) {
        self.dirty.insert(key);
    }

    pub fn remove(&mut self, key: &SK) -> Option<V> {
        let old = self.map.remove(key);
        if old.is_some() && !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
        old
    }

    pub fn drain_changes(&mut self, emit: &mut ChangeEmit<'_>) -> Result<(), String> {
        let mut kb = Vec::new();
        let mut vb = Vec::new();
        for k in self.dirty.drain() {
            kb.clear();
            (self.encode)(&k, &mut kb)?;
            match self.map.get(&k) {
                Some(v) => {
                    vb.clear();
                    let present = self.value_serde.serialize(v, &mut vb)?;
                    emit(&kb, present.then_some(&vb[..]));
                }
                None => emit(&kb, None),
            }
        }
        Ok(())
    }

    pub fn is_dirty(&self, key: &SK) -> bool {
        self.dirty.contains(key)
    }

    pub fn encode_key(&self, key: &SK, out: &mut Vec<u8>) -> Result<(), String> {
        (self.encode)(key, out)
    }

    /// Appends `value`'s bytes; `false` when the serde writes it as no value at all.
    pub fn encode_value(&self, value: &V, out: &mut Vec<u8>) -> Result<bool, String> {
        self.value_serde.serialize(value, out)
    }

    pub fn decode_key(&self, key: &[u8]) -> Result<SK, String> {
        (self.decode)(key)
    }

    pub fn decode_value(&self, value: &[u8]) -> Result<V, String> {
        self.value_serde.deserialize(Some(value))
    }

    /// Drops clean entries until at most `keep` entries are left (dirty ones always stay):
    /// whichever come first in the table's (seeded hash) order, a cheap stand-in for random.
    /// `evicted` learns of each (a store's indexes of the map drop them too).
    pub fn evict_clean(&mut self, keep: usize, evicted: &mut dyn FnMut(&SK)) {
        let mut excess = self.map.len().saturating_sub(keep);
        let dirty = &self.dirty;
        self.map.retain(|k, _| {
            if excess == 0 || dirty.contains(k) {
                return true;
            }
            excess -= 1;
            evicted(k);
            false
        });
        // The table's buckets do not shrink by themselves: a burst of keys would keep them.
        self.map.shrink_to(0);
    }

    /// Decodes a changelog record; the caller applies it (and its indexes).
    pub fn decode(&self, key: &[u8], value: Option<&[u8]>) -> Result<(SK, Option<V>), String> {
        let k = (self.decode)(key)?;
        let v = match value {
            Some(v) => Some(self.value_serde.deserialize(Some(v))?),
            None => None,
        };
        Ok((k, v))
    }

    pub fn mark_dirty_encoded(&mut self, key: &[u8]) -> Result<(), String> {
        let k = (self.decode)(key)?;
        self.dirty.insert(k);
        Ok(())
    }

    pub fn snapshot(&self, emit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), String> {
        let mut kb = Vec::new();
        let mut vb = Vec::new();
        for (k, v) in &self.map {
            kb.clear();
            vb.clear();
            (self.encode)(k, &mut kb)?;
            if self.value_serde.serialize(v, &mut vb)? {
                emit(&kb, &vb);
            }
        }
        Ok(())
    }
}

/// Key codec of a plain key through its serde (a null key encodes as no bytes).
pub(crate) fn serde_key<K: 'static>(serde: SerdeRef<K>) -> (KeyEncode<K>, KeyDecode<K>) {
    let s2 = serde.clone();
    (
        Arc::new(move |k, out| serde.serialize(k, out).map(|_| ())),
        Arc::new(move |b| s2.deserialize(Some(b))),
    )
}

/// Appends big-endian i64s after the key bytes: window and session keys.
pub(crate) fn encode_with_times<K>(
    serde: &SerdeRef<K>,
    key: &K,
    times: &[i64],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    serde.serialize(key, out)?;
    for t in times {
        out.extend_from_slice(&t.to_be_bytes());
    }
    Ok(())
}

pub(crate) fn decode_with_times<K, const N: usize>(
    serde: &SerdeRef<K>,
    bytes: &[u8],
) -> Result<(K, [i64; N]), String> {
    let split = bytes
        .len()
        .checked_sub(8 * N)
        .ok_or("changelog key shorter than its timestamps")?;
    let key = serde.deserialize(Some(&bytes[..split]))?;
    let mut times = [0i64; N];
    for (i, t) in times.iter_mut().enumerate() {
        let at = split + 8 * i;
        *t = i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    }
    Ok((key, times))
}
