//! The state of an OVER window, per partition key: its rows in window order and, over a
//! stream, the rows waiting for the watermark and what the frame keeps of the released ones.
//!
//! Changelog: one record per row, keyed by (partition key, row identity), so a change writes
//! one row, not its partition; and one per partition for its counters and the accumulator
//! states of released rows. Replaying them rebuilds the order, the identity index and the
//! watermark index ([`StateStore::apply_change`]), so a restored store is the one that wrote.
//!
//! Key: the partition key (as [`RowCodec`]), a tag byte (0: counters, 1: a row), the row's
//! identity. Row value: `[[time, pending]], row, arguments`. Counters value:
//! `[[next arrival number, rows released]], accumulator states...`.

use super::frame::{Entry, Order};
use crate::row::{Row, RowCodec};
use datafusion::common::ScalarValue;
use runnel_engine::serdes::Serde;
use runnel_engine::state::{ChangeEmit, StateStore};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

/// One partition.
#[derive(Default)]
pub(crate) struct Partition {
    /// Rows in window order (over a stream: the released rows frames still reach).
    pub rows: Vec<Entry>,
    /// The `ORDER BY` values of each row of `rows`, by identity.
    index: HashMap<Row, Row>,
    /// Over a stream: rows waiting for the watermark to pass their time.
    pending: Vec<Entry>,
    /// Over a stream: the next arrival number, and how many rows were released.
    next_id: i64,
    pub released: u64,
    /// Over a stream, for frames from the partition's start: the accumulator states of the
    /// released rows (which are not kept).
    pub states: Vec<Row>,
}

impl Partition {
    /// Whether a row of this identity is kept (released, over a stream).
    pub fn contains(&self, id: &Row) -> bool {
        self.index.contains_key(id)
    }

    fn idle(&self) -> bool {
        self.rows.is_empty() && self.pending.is_empty()
    }

    fn counters_default(&self) -> bool {
        self.next_id == 0 && self.released == 0 && self.states.is_empty()
    }

    fn remove(&mut self, order: &Order, id: &Row) -> Option<Entry> {
        if let Some(values) = self.index.remove(id) {
            let at = order.search(&self.rows, &values, id).ok()?;
            return Some(self.rows.remove(at));
        }
        let at = self.pending.iter().position(|e| &e.id == id)?;
        Some(self.pending.remove(at))
    }

    /// Inserts a row, replacing (and returning) the one of the same identity.
    fn insert(&mut self, order: &Order, e: Entry) -> Option<Entry> {
        let old = self.remove(order, &e.id);
        let at = order
            .search(&self.rows, &e.order, &e.id)
            .unwrap_or_else(|i| i);
        self.index.insert(e.id.clone(), e.order.clone());
        self.rows.insert(at, e);
        old
    }

    /// A row by identity, and whether it waits for the watermark.
    fn find(&self, order: &Order, id: &Row) -> Option<(&Entry, bool)> {
        if let Some(values) = self.index.get(id) {
            let at = order.search(&self.rows, values, id).ok()?;
            return Some((&self.rows[at], false));
        }
        self.pending.iter().find(|e| &e.id == id).map(|e| (e, true))
    }
}

/// Changelog slot: a partition's counters (`None`) or one of its rows (its identity).
type Slot = (Row, Option<Row>);

/// See the module documentation.
pub(crate) struct OverStore {
    name: String,
    order: Arc<Order>,
    parts: HashMap<Row, Partition>,
    /// Partitions with pending rows, by the time of each such row (may name a partition whose
    /// row was released since: releasing is idempotent).
    due: BTreeMap<i64, Vec<Row>>,
    dirty: HashSet<Slot>,
}

impl OverStore {
    pub fn new(name: String, order: Arc<Order>) -> Self {
        Self {
            name,
            order,
            parts: HashMap::new(),
            due: BTreeMap::new(),
            dirty: HashSet::new(),
        }
    }

    pub fn partition(&self, key: &Row) -> Option<&Partition> {
        self.parts.get(key)
    }

    /// Inserts a row of an upsert stream's partition, replacing (and returning) the one of the
    /// same identity.
    pub fn insert(&mut self, key: &Row, e: Entry) -> Option<Entry> {
        self.dirty.insert((key.clone(), Some(e.id.clone())));
        let order = self.order.clone();
        self.parts.entry(key.clone()).or_default().insert(&order, e)
    }

    /// Removes a row by identity.
    pub fn remove(&mut self, key: &Row, id: &Row) -> Option<Entry> {
        let order = self.order.clone();
        let old = self.parts.get_mut(key)?.remove(&order, id)?;
        self.dirty.insert((key.clone(), Some(id.clone())));
        Some(old)
    }

    /// Keeps a stream's row until the watermark passes `time`.
    pub fn hold(&mut self, key: &Row, time: i64, row: Row, args: Row) {
        let p = self.parts.entry(key.clone()).or_default();
        let id = Row(vec![ScalarValue::Int64(Some(p.next_id))]);
        p.next_id += 1;
        p.pending.push(Entry {
            order: self.order.values(&row),
            id: id.clone(),
            time,
            row,
            args,
        });
        self.dirty.insert((key.clone(), Some(id)));
        self.dirty.insert((key.clone(), None));
        self.due.entry(time).or_default().push(key.clone());
    }

    /// The partitions holding rows older than `watermark`, in the order of those rows' times.
    pub fn due_before(&mut self, watermark: i64) -> Vec<Row> {
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if *entry.key() >= watermark && watermark != i64::MAX {
                break;
            }
            for k in entry.remove() {
                if seen.insert(k.clone()) {
                    keys.push(k);
                }
            }
        }
        keys
    }

    /// Moves the partition's rows older than `watermark` into its rows, in window order;
    /// returns their positions (after the rows it held: a held row's time is not before the
    /// watermark that released the rows before it, or it would have been late).
    pub fn release(&mut self, key: &Row, watermark: i64) -> Range<usize> {
        let order = self.order.clone();
        let Some(p) = self.parts.get_mut(key) else {
            return 0..0;
        };
        let (mut ready, waiting): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut p.pending)
            .into_iter()
            .partition(|e| e.time < watermark || watermark == i64::MAX);
        p.pending = waiting;
        ready.sort_by(|a, b| order.cmp((&a.order, &a.id), (&b.order, &b.id)));
        let start = p.rows.len();
        for e in ready {
            self.dirty.insert((key.clone(), Some(e.id.clone())));
            p.index.insert(e.id.clone(), e.order.clone());
            p.rows.push(e);
        }
        start..p.rows.len()
    }

    /// After a release: forgets the partition's first `drop` rows, and notes its counters.
    /// A partition left with nothing that needs keeping is forgotten.
    pub fn settle(&mut self, key: &Row, drop: usize, released: u64, states: Vec<Row>, keep: bool) {
        let Some(p) = self.parts.get_mut(key) else {
            return;
        };
        for e in p.rows.drain(..drop) {
            p.index.remove(&e.id);
            self.dirty.insert((key.clone(), Some(e.id)));
        }
        p.released = released;
        p.states = states;
        self.dirty.insert((key.clone(), None));
        if !keep && p.idle() {
            self.parts.remove(key);
        }
    }

    /// Forgets an upsert stream's partition that lost its last row.
    pub fn forget_if_empty(&mut self, key: &Row) {
        if self.parts.get(key).is_some_and(Partition::idle) {
            self.parts.remove(key);
        }
    }

    fn encode_key(part: &Row, id: Option<&Row>, out: &mut Vec<u8>) -> Result<(), String> {
        RowCodec.write(part, out)?;
        out.push(u8::from(id.is_some()));
        if let Some(id) = id {
            RowCodec.write(id, out)?;
        }
        Ok(())
    }

    fn decode_key(mut data: &[u8]) -> Result<Slot, String> {
        let part = RowCodec.read(&mut data)?;
        let (&tag, mut rest) = data.split_first().ok_or("truncated OVER window key")?;
        let id = match tag {
            0 => None,
            1 => Some(RowCodec.read(&mut rest)?),
            t => return Err(format!("unknown OVER window key tag {t}")),
        };
        Ok((part, id))
    }

    fn encode_entry(e: &Entry, pending: bool, out: &mut Vec<u8>) -> Result<bool, String> {
        let head = Row(vec![
            ScalarValue::Int64(Some(e.time)),
            ScalarValue::Boolean(Some(pending)),
        ]);
        RowCodec.serialize(&vec![head, e.row.clone(), e.args.clone()], out)
    }

    fn encode_counters(p: &Partition, out: &mut Vec<u8>) -> Result<bool, String> {
        let mut rows = vec![Row(vec![
            ScalarValue::Int64(Some(p.next_id)),
            ScalarValue::Int64(Some(p.released as i64)),
        ])];
        rows.extend(p.states.iter().cloned());
        RowCodec.serialize(&rows, out)
    }

    fn apply_counters(&mut self, part: Row, value: Option<&[u8]>) -> Result<(), String> {
        let p = self.parts.entry(part).or_default();
        let Some(value) = value else {
            (p.next_id, p.released, p.states) = (0, 0, Vec::new());
            return Ok(());
        };
        let mut rows: Vec<Row> = RowCodec.deserialize(Some(value))?;
        if rows.is_empty() {
            return Err("empty OVER window counters".into());
        }
        let head = rows.remove(0);
        let int = |i: usize| match head.0.get(i) {
            Some(ScalarValue::Int64(Some(n))) => Ok(*n),
            _ => Err("bad OVER window counters".to_string()),
        };
        (p.next_id, p.released, p.states) = (int(0)?, int(1)? as u64, rows);
        Ok(())
    }

    fn apply_entry(&mut self, part: Row, id: Row, value: Option<&[u8]>) -> Result<(), String> {
        let order = self.order.clone();
        let p = self.parts.entry(part.clone()).or_default();
        p.remove(&order, &id);
        let Some(value) = value else {
            return Ok(());
        };
        let parts: Vec<Row> = RowCodec.deserialize(Some(value))?;
        let [head, row, args]: [Row; 3] = parts
            .try_into()
            .map_err(|_| "bad OVER window row".to_string())?;
        let (time, pending) = match head.0.as_slice() {
            [ScalarValue::Int64(Some(t)), ScalarValue::Boolean(Some(p))] => (*t, *p),
            _ => return Err("bad OVER window row header".into()),
        };
        let e = Entry {
            order: order.values(&row),
            id,
            time,
            row,
            args,
        };
        if pending {
            p.pending.push(e);
            self.due.entry(time).or_default().push(part);
        } else {
            p.insert(&order, e);
        }
        Ok(())
    }
}

impl StateStore for OverStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn drain_changes(&mut self, emit: &mut ChangeEmit<'_>) -> Result<(), String> {
        let (mut kb, mut vb) = (Vec::new(), Vec::new());
        for (part, id) in std::mem::take(&mut self.dirty) {
            kb.clear();
            vb.clear();
            Self::encode_key(&part, id.as_ref(), &mut kb)?;
            let p = self.parts.get(&part);
            let present = match (&id, p) {
                (Some(id), Some(p)) => match p.find(&self.order, id) {
                    Some((e, pending)) => Self::encode_entry(e, pending, &mut vb)?,
                    None => false,
                },
                (None, Some(p)) if !p.counters_default() => Self::encode_counters(p, &mut vb)?,
                _ => false,
            };
            emit(&kb, present.then_some(&vb[..]));
        }
        Ok(())
    }

    fn apply_change(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        match Self::decode_key(key)? {
            (part, None) => self.apply_counters(part, value)?,
            (part, Some(id)) => self.apply_entry(part, id, value)?,
        }
        Ok(())
    }

    fn mark_dirty_encoded(&mut self, key: &[u8]) -> Result<(), String> {
        self.dirty.insert(Self::decode_key(key)?);
        Ok(())
    }

    fn snapshot(&self, emit: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), String> {
        let (mut kb, mut vb) = (Vec::new(), Vec::new());
        for (part, p) in &self.parts {
            let entries = p.rows.iter().map(|e| (e, false));
            let pending = p.pending.iter().map(|e| (e, true));
            for (e, pending) in entries.chain(pending) {
                kb.clear();
                vb.clear();
                Self::encode_key(part, Some(&e.id), &mut kb)?;
                Self::encode_entry(e, pending, &mut vb)?;
                emit(&kb, &vb);
            }
            if !p.counters_default() {
                kb.clear();
                vb.clear();
                Self::encode_key(part, None, &mut kb)?;
                Self::encode_counters(p, &mut vb)?;
                emit(&kb, &vb);
            }
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.parts
            .values()
            .map(|p| p.rows.len() + p.pending.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::compute::SortOptions;

    fn int(v: i64) -> ScalarValue {
        ScalarValue::Int64(Some(v))
    }

    fn store() -> OverStore {
        OverStore::new(
            "s".into(),
            Arc::new(Order(vec![(0, SortOptions::default())])),
        )
    }

    /// Every entry of a store, encoded, sorted.
    fn entries(s: &OverStore) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        s.snapshot(&mut |k, v| out.push((k.to_vec(), v.to_vec())))
            .unwrap();
        out.sort();
        out
    }

    /// Replays `from`'s changelog records (since the last drain) into `into`.
    fn replay(from: &mut OverStore, into: &mut OverStore) {
        let mut records = Vec::new();
        from.drain_changes(&mut |k, v| records.push((k.to_vec(), v.map(<[u8]>::to_vec))))
            .unwrap();
        for (k, v) in records {
            into.apply_change(&k, v.as_deref()).unwrap();
        }
    }

    /// A store rebuilt from its changelog holds what the original holds — held, released and
    /// dropped rows of a stream's partitions, counters, states, and an upsert stream's rows
    /// replaced and removed — and releases the same rows at the next watermark.
    #[test]
    fn changelog_replay_rebuilds_the_store() {
        let (mut s, mut restored) = (store(), store());
        let (a, b) = (Row(vec![ScalarValue::Utf8(Some("a".into()))]), Row(vec![]));
        for t in [5, 1, 9, 3] {
            s.hold(
                &a,
                t,
                Row(vec![int(t), int(t * 10)]),
                Row(vec![int(t * 10)]),
            );
        }
        replay(&mut s, &mut restored);
        assert_eq!(s.due_before(6), vec![a.clone()]);
        assert_eq!(s.release(&a, 6), 0..3);
        s.settle(&a, 1, 3, vec![Row(vec![int(40)])], true);
        for (id, v) in [(1, 7), (2, 3), (3, 5)] {
            let e = Entry {
                order: Row(vec![int(v)]),
                id: Row(vec![int(id)]),
                time: 0,
                row: Row(vec![int(v)]),
                args: Row(vec![]),
            };
            s.insert(&b, e);
        }
        let moved = Entry {
            order: Row(vec![int(1)]),
            id: Row(vec![int(1)]),
            time: 0,
            row: Row(vec![int(1)]),
            args: Row(vec![]),
        };
        assert_eq!(
            s.insert(&b, moved).map(|e| e.order),
            Some(Row(vec![int(7)]))
        );
        assert!(s.remove(&b, &Row(vec![int(2)])).is_some());
        replay(&mut s, &mut restored);
        assert_eq!(entries(&restored), entries(&s));
        let ids = |s: &OverStore, k: &Row| -> Vec<Row> {
            s.partition(k)
                .unwrap()
                .rows
                .iter()
                .map(|e| e.id.clone())
                .collect()
        };
        assert_eq!(ids(&restored, &b), ids(&s, &b));
        assert_eq!(restored.partition(&a).unwrap().released, 3);
        assert_eq!(restored.due_before(i64::MAX), vec![a.clone()]);
        assert_eq!(restored.release(&a, i64::MAX), 2..3);
        assert_eq!(restored.partition(&a).unwrap().rows[2].time, 9);
    }

    #[test]
    fn malformed_changelog_records_are_errors() {
        let mut s = store();
        assert!(s.apply_change(b"\x01", Some(b"x")).is_err());
        let mut key = Vec::new();
        OverStore::encode_key(&Row(vec![]), Some(&Row(vec![int(1)])), &mut key).unwrap();
        assert!(s.apply_change(&key, Some(b"\x00\x00")).is_err());
        key.clear();
        OverStore::encode_key(&Row(vec![]), None, &mut key).unwrap();
        assert!(s.apply_change(&key, Some(b"")).is_err());
    }
}
