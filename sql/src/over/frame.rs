//! Window order, frames, and the window functions over the frames of one sorted partition.
//!
//! Contract: a partition's rows are kept in [`Order`]: the `ORDER BY` values (each column's
//! direction and null placement as written), then the row's identity (the input key of an
//! upsert stream, the arrival number over a stream), so that ties are broken the same way on
//! every replay. [`evaluate`] computes the window columns of consecutive rows by sliding one
//! set of accumulators along them: each row enters once and, when the frame's start moves
//! on, leaves once, oldest first — the first-in first-out order DataFusion's sliding
//! accumulators (`MIN`/`MAX` included) take retractions in.

use super::OverSpec;
use crate::plan::Frame;
use crate::row::{Row, millis};
use crate::why;
use datafusion::arrow::compute::SortOptions;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use std::cmp::Ordering;
use std::ops::Range;

/// One row of a partition.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The `ORDER BY` values.
    pub order: Row,
    /// The input key (upsert stream) or arrival number (stream): unique in the partition.
    pub id: Row,
    /// The record's event time.
    pub time: i64,
    pub row: Row,
    /// The window functions' arguments.
    pub args: Row,
}

/// The `ORDER BY` columns of the input and their directions.
pub(crate) struct Order(pub Vec<(usize, SortOptions)>);

fn cmp_scalar(a: &ScalarValue, b: &ScalarValue) -> Ordering {
    match (a.is_null(), b.is_null()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
    }
}

/// Rows compared value by value (identities: ascending, nulls first).
fn cmp_rows(a: &Row, b: &Row) -> Ordering {
    a.0.iter()
        .zip(&b.0)
        .map(|(x, y)| cmp_scalar(x, y))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

impl Order {
    /// The `ORDER BY` values of a row.
    pub fn values(&self, row: &Row) -> Row {
        Row(self.0.iter().map(|(c, _)| row.0[*c].clone()).collect())
    }

    /// `ORDER BY` values compared as written.
    pub fn cmp_values(&self, a: &Row, b: &Row) -> Ordering {
        for ((x, y), (_, o)) in a.0.iter().zip(&b.0).zip(&self.0) {
            let ord = match (x.is_null(), y.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) if o.nulls_first => Ordering::Less,
                (true, false) => Ordering::Greater,
                (false, true) if o.nulls_first => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) if o.descending => cmp_scalar(y, x),
                (false, false) => cmp_scalar(x, y),
            };
            if ord.is_ne() {
                return ord;
            }
        }
        Ordering::Equal
    }

    /// The window order of `(order values, identity)` pairs.
    pub fn cmp(&self, a: (&Row, &Row), b: (&Row, &Row)) -> Ordering {
        self.cmp_values(a.0, b.0).then_with(|| cmp_rows(a.1, b.1))
    }

    /// The position of `(order, id)` in rows kept in this order (`Ok`: it is there).
    pub fn search(&self, rows: &[Entry], order: &Row, id: &Row) -> Result<usize, usize> {
        rows.binary_search_by(|e| self.cmp((&e.order, &e.id), (order, id)))
    }

    /// Whether `earlier`, which sorts before or with `current`, is within `range` of it
    /// (peers always are; a null is within range of nulls only).
    fn within(&self, earlier: &Row, current: &Row, range: i64) -> bool {
        if self.cmp_values(earlier, current).is_eq() {
            return true;
        }
        let descending = self.0.first().is_some_and(|(_, o)| o.descending);
        match (millis(&earlier.0[0]), millis(&current.0[0])) {
            (Some(e), Some(c)) if descending => e.saturating_sub(c) <= range,
            (Some(e), Some(c)) => c.saturating_sub(e) <= range,
            _ => false,
        }
    }
}

/// The frame `[start, end)` of row `j`; `from` is a position the start is not before.
fn frame_of(spec: &OverSpec, rows: &[Entry], j: usize, from: usize) -> (usize, usize) {
    let order = &spec.order;
    let last_peer = || {
        let mut end = j + 1;
        while end < rows.len() && order.cmp_values(&rows[end].order, &rows[j].order).is_eq() {
            end += 1;
        }
        end
    };
    match spec.frame {
        Frame::Rows(Some(n)) => (j.saturating_sub(n), j + 1),
        Frame::Rows(None) => (0, j + 1),
        Frame::Range(None) => (0, last_peer()),
        Frame::Range(Some(range)) => {
            let mut start = from.min(j);
            while start < j && !order.within(&rows[start].order, &rows[j].order, range) {
                start += 1;
            }
            (start, last_peer())
        }
    }
}

/// What [`evaluate`] computed.
pub(crate) struct Evaluated {
    /// The window columns of each row of the run.
    pub columns: Vec<Vec<ScalarValue>>,
    /// For a frame from the partition's start: the accumulators' states after the run's last
    /// frame (the prefix and every row up to the run's end). Empty for other frames.
    pub states: Vec<Row>,
}

/// The window columns of `rows[run]`. `prefix`: states of the rows before `rows[0]` that the
/// partition no longer keeps (a frame from the partition's start over a stream);
/// `first_number`: the `ROW_NUMBER` of `rows[0]`. `Err` when an accumulator fails (why).
pub(crate) fn evaluate(
    spec: &OverSpec,
    rows: &[Entry],
    run: Range<usize>,
    prefix: &[Row],
    first_number: u64,
) -> Result<Evaluated, String> {
    let fns = &spec.fns;
    let aggregates = fns.aggregates.len();
    let mut accs: Vec<Box<dyn Accumulator>> = (0..aggregates)
        .map(|i| fns.accumulator(i, prefix.get(i)))
        .collect::<Result<_, _>>()?;
    let apply = |accs: &mut [Box<dyn Accumulator>], part: &[Entry], retract: bool| {
        if part.is_empty() {
            return Ok(());
        }
        for (i, acc) in accs.iter_mut().enumerate() {
            fns.feed(i, acc.as_mut(), part.iter().map(|e| &e.args), retract)?;
        }
        Ok::<_, String>(())
    };
    let mut columns = Vec::with_capacity(run.len());
    let (mut start, mut end) = match run.clone().next() {
        Some(j) => {
            let s = frame_of(spec, rows, j, 0).0;
            (s, s)
        }
        None => (0, 0),
    };
    for j in run {
        // Frames only move forward: the start never passes the previous end (it is at most
        // `j`, which the previous frame reached), so the accumulators gain `[end, e)` and
        // lose `[start, s)`.
        let (s, e) = frame_of(spec, rows, j, start);
        apply(&mut accs, &rows[end..e], false)?;
        apply(&mut accs, &rows[start..s], true)?;
        (start, end) = (s, e);
        columns.push(
            spec.columns
                .iter()
                .map(|c| match c {
                    Some(i) => accs[*i].evaluate().map_err(why(&format!(
                        "cannot evaluate {}",
                        fns.aggregates[*i].name()
                    ))),
                    None => Ok(ScalarValue::UInt64(Some(first_number + j as u64))),
                })
                .collect::<Result<_, _>>()?,
        );
    }
    let states = if spec.frame.bounded() {
        Vec::new()
    } else {
        accs.into_iter()
            .enumerate()
            .map(|(i, acc)| fns.state(i, acc))
            .collect::<Result<_, _>>()?
    };
    Ok(Evaluated { columns, states })
}

/// The rows whose frame (or row number) changed when rows with these `(order, id)` keys were
/// inserted or deleted, as sorted, disjoint position ranges of `rows` (after the change).
pub(crate) fn affected(
    spec: &OverSpec,
    rows: &[Entry],
    changed: &[(Row, Row)],
) -> Vec<Range<usize>> {
    let order = &spec.order;
    // Row numbers shift up to the partition's end, and so do frames from its start.
    let numbered = spec.columns.contains(&None);
    let mut ranges: Vec<Range<usize>> = changed
        .iter()
        .map(|(values, id)| {
            // From the first peer: a RANGE frame reaches the current row's last peer.
            let first = rows.partition_point(|e| order.cmp_values(&e.order, values).is_lt());
            let end = match spec.frame {
                Frame::Rows(Some(n)) if !numbered => {
                    let at = order.search(rows, values, id).unwrap_or_else(|i| i);
                    (at + n + 1).min(rows.len())
                }
                Frame::Range(Some(range)) if !numbered => {
                    let mut end = first;
                    while end < rows.len() && order.within(values, &rows[end].order, range) {
                        end += 1;
                    }
                    end
                }
                _ => rows.len(),
            };
            first..end
        })
        .filter(|r| !r.is_empty())
        .collect();
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accumulator::AccumulatorFns;
    use crate::accumulator::tests::aggregates_of_a;
    use datafusion::arrow::datatypes::DataType;
    use datafusion::functions_aggregate::{count::count_udaf, min_max::max_udaf, sum::sum_udaf};
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// `SUM(a), MAX(a), COUNT(a)` and, if `numbered`, `ROW_NUMBER()` over rows `(v, a)`
    /// ordered by `v`.
    fn spec(frame: Frame, numbered: bool) -> OverSpec {
        let aggregates = aggregates_of_a([sum_udaf(), max_udaf(), count_udaf()], DataType::Int64);
        OverSpec {
            order: Arc::new(Order(vec![(0, SortOptions::default())])),
            frame,
            columns: [Some(0), Some(1), Some(2)]
                .into_iter()
                .chain(numbered.then_some(None))
                .collect(),
            fns: AccumulatorFns {
                aggregates,
                arg_ranges: vec![0..1, 0..1, 0..1],
                retracting: frame.bounded(),
            },
            row_len: 2,
            args_len: 1,
            upsert: true,
        }
    }

    fn int(v: i64) -> ScalarValue {
        ScalarValue::Int64(Some(v))
    }

    fn entry(id: i64, v: i64, a: i64) -> Entry {
        Entry {
            order: Row(vec![int(v)]),
            id: Row(vec![int(id)]),
            time: v,
            row: Row(vec![int(v), int(a)]),
            args: Row(vec![int(a)]),
        }
    }

    /// The window columns of every row, by the definition of the frame.
    fn by_definition(
        frame: Frame,
        numbered: bool,
        rows: &[(i64, i64, i64)],
    ) -> HashMap<i64, Vec<ScalarValue>> {
        let mut sorted = rows.to_vec();
        sorted.sort_by_key(|&(id, v, _)| (v, id));
        (0..sorted.len())
            .map(|j| {
                let (id, v, _) = sorted[j];
                let in_frame: Vec<i64> = (0..sorted.len())
                    .filter(|&i| {
                        let u = sorted[i].1;
                        match frame {
                            Frame::Rows(n) => i <= j && n.is_none_or(|n| j - i <= n),
                            Frame::Range(r) => u <= v && r.is_none_or(|r| v - u <= r),
                        }
                    })
                    .map(|i| sorted[i].2)
                    .collect();
                let mut columns = vec![
                    int(in_frame.iter().sum()),
                    int(*in_frame.iter().max().unwrap()),
                    int(in_frame.len() as i64),
                ];
                if numbered {
                    columns.push(ScalarValue::UInt64(Some(j as u64 + 1)));
                }
                (id, columns)
            })
            .collect()
    }

    fn frames() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (0usize..4).prop_map(|n| Frame::Rows(Some(n))),
            Just(Frame::Rows(None)),
            (0i64..4).prop_map(|r| Frame::Range(Some(r))),
            Just(Frame::Range(None)),
        ]
    }

    proptest! {
        /// Upserts and deletes, applied one at a time: re-evaluating only the rows
        /// [`affected`] names keeps every row's window columns equal to their definition
        /// (ties in the ORDER BY value, broken by identity, included).
        #[test]
        fn affected_rows_keep_every_frame_up_to_date(
            frame in frames(),
            numbered in any::<bool>(),
            ops in proptest::collection::vec((0i64..12, proptest::option::of((0i64..8, -5i64..6))), 1..60),
        ) {
            let spec = spec(frame, numbered);
            let mut rows: Vec<Entry> = Vec::new();
            let mut live: HashMap<i64, (i64, i64)> = HashMap::new();
            let mut table: HashMap<i64, Vec<ScalarValue>> = HashMap::new();
            for (id, op) in ops {
                let mut changed = Vec::new();
                if let Some((v, _)) = live.remove(&id) {
                    let at = spec.order.search(&rows, &Row(vec![int(v)]), &Row(vec![int(id)])).unwrap();
                    let old = rows.remove(at);
                    changed.push((old.order, old.id));
                }
                match op {
                    Some((v, a)) => {
                        let e = entry(id, v, a);
                        let at = spec.order.search(&rows, &e.order, &e.id).unwrap_err();
                        changed.push((e.order.clone(), e.id.clone()));
                        rows.insert(at, e);
                        live.insert(id, (v, a));
                    }
                    None => {
                        table.remove(&id);
                    }
                }
                for run in affected(&spec, &rows, &changed) {
                    let done = evaluate(&spec, &rows, run.clone(), &[], 1).unwrap();
                    for (j, columns) in run.zip(done.columns) {
                        let ScalarValue::Int64(Some(id)) = rows[j].id.0[0] else { unreachable!() };
                        table.insert(id, columns);
                    }
                }
                let all: Vec<(i64, i64, i64)> = live.iter().map(|(id, (v, a))| (*id, *v, *a)).collect();
                prop_assert_eq!(&table, &by_definition(frame, numbered, &all));
            }
        }

        /// Over a stream: rows released in runs, the partition keeping what the frame needs
        /// (the last rows, or the accumulator states), give the columns of one evaluation
        /// over all of them.
        #[test]
        fn released_runs_match_one_evaluation(
            n in 0usize..4,
            unbounded in any::<bool>(),
            runs in proptest::collection::vec(proptest::collection::vec(-5i64..6, 1..5), 1..6),
        ) {
            let frame = if unbounded { Frame::Rows(None) } else { Frame::Rows(Some(n)) };
            let spec = spec(frame, true);
            let all: Vec<Entry> = runs
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, a)| entry(i as i64, i as i64, *a))
                .collect();
            let whole = evaluate(&spec, &all, 0..all.len(), &[], 1).unwrap().columns;
            let (mut kept, mut states, mut released, mut got) = (Vec::new(), Vec::new(), 0u64, Vec::new());
            for run in runs {
                let start = kept.len();
                kept.extend(all[released as usize..released as usize + run.len()].iter().cloned());
                let done = evaluate(&spec, &kept, start..kept.len(), &states, released + 1 - start as u64).unwrap();
                got.extend(done.columns);
                released += run.len() as u64;
                let drop = if unbounded { kept.len() } else { kept.len().saturating_sub(n) };
                kept.drain(..drop);
                states = done.states;
            }
            prop_assert_eq!(got, whole);
        }
    }
}
