//! A fixed-size map from record keys to the offset of their latest record, for compaction
//! (Kafka's `SkimpyOffsetMap`).
//!
//! Contract: it holds a 128-bit hash of each key, never the key, in an open-addressed table
//! of 24-byte slots allocated once from a byte budget; it fills to 90 % and then refuses new
//! keys (an existing key still takes a newer offset), so the caller cleans up to where it
//! stopped and continues in another pass. Two distinct keys share a hash with a probability
//! near 2^-128 per pair, the same kind of risk Kafka takes with MD5.

use std::hash::BuildHasher;

/// Bytes per slot: two hash halves and an offset.
const SLOT_BYTES: usize = 24;

/// The load at which the map refuses new keys; probes stay short below it.
const MAX_LOAD: f64 = 0.9;

#[derive(Clone, Copy, Default)]
struct Slot {
    hash: [u64; 2],
    /// The offset plus one; zero marks an empty slot.
    offset_plus_one: u64,
}

pub(crate) struct KeyOffsetMap {
    slots: Vec<Slot>,
    len: usize,
    limit: usize,
    hashers: [std::hash::RandomState; 2],
}

impl KeyOffsetMap {
    /// A map within `budget_bytes` that needs room for at most `max_keys` keys (the records of
    /// the range it will cover): small logs get small tables. Holds at least one key.
    pub fn new(budget_bytes: usize, max_keys: u64) -> Self {
        let wanted = (max_keys as f64 / MAX_LOAD).ceil() as usize + 1;
        let slots = wanted.min(budget_bytes / SLOT_BYTES).max(2);
        Self {
            slots: vec![Slot::default(); slots],
            len: 0,
            limit: ((slots as f64 * MAX_LOAD) as usize).clamp(1, slots - 1),
            hashers: [std::hash::RandomState::new(), std::hash::RandomState::new()],
        }
    }

    /// Records `offset` as `key`'s latest; `false` (and nothing recorded) when the key is new
    /// and the map is full.
    pub fn insert(&mut self, key: &[u8], offset: u64) -> bool {
        let hash = self.hash(key);
        let i = self.find(hash);
        let slot = &mut self.slots[i];
        if slot.offset_plus_one == 0 {
            if self.len == self.limit {
                return false;
            }
            self.len += 1;
            slot.hash = hash;
        }
        slot.offset_plus_one = offset + 1;
        true
    }

    /// The latest offset recorded for `key`.
    pub fn get(&self, key: &[u8]) -> Option<u64> {
        let slot = self.slots[self.find(self.hash(key))];
        slot.offset_plus_one.checked_sub(1)
    }

    fn hash(&self, key: &[u8]) -> [u64; 2] {
        [self.hashers[0].hash_one(key), self.hashers[1].hash_one(key)]
    }

    /// The slot holding `hash`, or the empty one where it would go (one always exists: the
    /// map never fills past `limit` < its slots).
    fn find(&self, hash: [u64; 2]) -> usize {
        let n = self.slots.len();
        // Multiply-shift maps the hash onto any table size, not only powers of two.
        let mut i = ((u128::from(hash[0]) * n as u128) >> 64) as usize;
        loop {
            let s = &self.slots[i];
            if s.offset_plus_one == 0 || s.hash == hash {
                return i;
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_offset_and_refuses_new_keys_when_full() {
        let mut m = KeyOffsetMap::new(24 * 10, 1_000);
        assert_eq!(m.limit, 9);
        for k in 0..9u8 {
            assert!(m.insert(&[k], u64::from(k)));
        }
        assert!(!m.insert(b"new", 100), "full: a new key is refused");
        assert_eq!(m.get(b"new"), None);
        assert!(m.insert(&[3], 50), "an existing key still moves on");
        assert_eq!(m.get(&[3]), Some(50));
        assert_eq!(m.get(&[4]), Some(4));
        assert_eq!(m.get(&[]), None);
    }

    #[test]
    fn sizes_itself_to_the_keys_it_may_hold() {
        let m = KeyOffsetMap::new(128 << 20, 100);
        assert!(m.slots.len() <= 113, "{}", m.slots.len());
        assert!(m.limit >= 100);
        let tiny = KeyOffsetMap::new(0, 0);
        assert_eq!((tiny.slots.len(), tiny.limit), (2, 1));
    }
}
