//! DataFusion accumulators driven one record (or one fold of a batch) at a time, their states
//! kept as rows: what `GROUP BY` ([`crate::build`]) and `OVER` ([`crate::over`]) aggregate with.

use crate::row::Row;
use crate::why;
use datafusion::arrow::array::ArrayRef;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use runnel_engine::record::Rec;
use std::sync::Arc;

/// DataFusion accumulators driven one record at a time, their states kept as rows.
pub(crate) struct AccumulatorFns {
    pub(crate) aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Each aggregate's arguments among the argument values.
    pub(crate) arg_ranges: Vec<std::ops::Range<usize>>,
    /// Retractable ("sliding") accumulators: the input is an upsert stream's changes (see
    /// [`crate::changes`]; the states then end with a row count), or an OVER window's frame
    /// moves on.
    pub(crate) retracting: bool,
}

fn state_arrays(state: &Row) -> std::result::Result<Vec<ArrayRef>, String> {
    state
        .0
        .iter()
        .map(|v| {
            v.to_array_of_size(1)
                .map_err(why("cannot restore an aggregate state"))
        })
        .collect()
}

type Acc<T> = std::result::Result<T, String>;

impl AccumulatorFns {
    /// Folds `(record, key values ++ argument values)` rows: see [`Self::fold_columns`].
    pub(crate) fn fold(
        &self,
        rows: Vec<(Rec<Row, Option<Row>>, Row)>,
        nkeys: usize,
        pane: Option<i64>,
    ) -> Acc<Vec<Rec<Row, Vec<Row>>>> {
        let Some((_, first)) = rows.first() else {
            return Ok(Vec::new());
        };
        let columns: Vec<ArrayRef> = (0..first.0.len())
            .map(|c| {
                ScalarValue::iter_to_array(rows.iter().map(|(_, v)| v.0[c].clone()))
                    .map_err(why("bad argument"))
            })
            .collect::<Acc<_>>()?;
        let records = rows.into_iter().map(|(r, _)| r.with((), ())).collect();
        self.fold_columns(&columns, records, nkeys, pane)
    }

    /// Folds rows into one record per key and pane (`pane`: its length in ms, `i64::MAX` for
    /// "all time", `None` for one per row) whose value is the partial states of the
    /// aggregates, updated with DataFusion's vectorized `update_batch`. `columns` are the key
    /// columns then the argument columns; `records` each row's time, offset and headers. The
    /// folded record keeps the latest time of its rows.
    pub(crate) fn fold_columns(
        &self,
        columns: &[ArrayRef],
        records: Vec<Rec<(), ()>>,
        nkeys: usize,
        pane: Option<i64>,
    ) -> Acc<Vec<Rec<Row, Vec<Row>>>> {
        use datafusion::arrow::array::{Array, UInt32Array};
        use datafusion::arrow::row::{RowConverter, SortField};
        let (key_columns, arg_columns) = columns.split_at(nkeys);
        // Keys compared as Arrow's row format: bytes, not scalars.
        let keys = RowConverter::new(
            key_columns
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )
        .and_then(|c| c.convert_columns(key_columns))
        .map_err(why("cannot group rows"))?;
        // foldhash, not SipHash: one lookup per row.
        let mut index: datafusion::common::HashMap<(&[u8], i64), usize> = Default::default();
        let mut groups: Vec<(Rec<(), ()>, Vec<u32>)> = Vec::new();
        for (n, r) in records.into_iter().enumerate() {
            let slot = match pane {
                Some(i64::MAX) => 0,
                Some(p) => r.timestamp.div_euclid(p),
                None => n as i64,
            };
            let key: &[u8] = if nkeys == 0 { &[] } else { keys.row(n).data() };
            match index.entry((key, slot)) {
                datafusion::common::hash_map::Entry::Occupied(g) => {
                    let (rec, rows) = &mut groups[*g.get()];
                    rec.timestamp = rec.timestamp.max(r.timestamp);
                    rec.offset = r.offset;
                    rows.push(n as u32);
                }
                datafusion::common::hash_map::Entry::Vacant(v) => {
                    v.insert(groups.len());
                    groups.push((r, vec![n as u32]));
                }
            }
        }
        // In input order of each group's last row: readers of a repartition topic drop a
        // record whose origin offset is not past the last one seen from its writer.
        groups.sort_by_key(|(rec, _)| rec.offset);
        groups
            .into_iter()
            .map(|(rec, picked)| {
                let first = picked[0] as usize;
                let rows = UInt32Array::from(picked.clone());
                let whole = rows.len() == arg_columns.first().map_or(0, |c| c.len());
                let key = key_columns
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, first))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(why("cannot read a value"))?;
                let states = (0..self.aggregates.len())
                    .map(|i| {
                        let native = self.native(i).and_then(|n| {
                            n.fold(&arg_columns[self.arg_ranges[i].clone()], &picked)
                        });
                        if let Some(state) = native {
                            return Ok(state);
                        }
                        let args: Vec<ArrayRef> = self.arg_ranges[i]
                            .clone()
                            .map(|c| {
                                if whole {
                                    Ok(arg_columns[c].clone())
                                } else {
                                    datafusion::arrow::compute::take(&arg_columns[c], &rows, None)
                                }
                            })
                            .collect::<std::result::Result<_, _>>()
                            .map_err(why("cannot pick arguments"))?;
                        let mut acc = self.accumulator(i, None)?;
                        acc.update_batch(&args).map_err(why(&format!(
                            "cannot update {}",
                            self.aggregates[i].name()
                        )))?;
                        self.state(i, acc)
                    })
                    .collect::<Acc<_>>()?;
                Ok(rec.with(Row(key), states))
            })
            .collect()
    }

    /// The argument columns of aggregate `i` over rows of arguments.
    fn arguments<'a>(
        &self,
        i: usize,
        args: impl Iterator<Item = &'a Row> + Clone,
    ) -> Acc<Vec<ArrayRef>> {
        self.arg_ranges[i]
            .clone()
            .map(|c| {
                ScalarValue::iter_to_array(args.clone().map(|a| a.0[c].clone()))
                    .map_err(why("bad argument"))
            })
            .collect()
    }

    /// Adds or retracts one row of arguments; the last state is the group's row count.
    pub(crate) fn apply(&self, mut states: Vec<Row>, args: &Row, retract: bool) -> Acc<Vec<Row>> {
        let rows = self.rows(&states) + if retract { -1 } else { 1 };
        states.truncate(self.aggregates.len());
        let mut next: Vec<Row> = (0..self.aggregates.len())
            .map(|i| {
                let mut acc = self.accumulator(i, states.get(i))?;
                self.feed(i, acc.as_mut(), std::iter::once(args), retract)?;
                self.state(i, acc)
            })
            .collect::<Acc<_>>()?;
        next.push(Row(vec![ScalarValue::Int64(Some(rows))]));
        Ok(next)
    }

    /// Adds rows of arguments to aggregate `i`'s accumulator, or retracts them.
    pub(crate) fn feed<'a>(
        &self,
        i: usize,
        acc: &mut dyn Accumulator,
        args: impl Iterator<Item = &'a Row> + Clone,
        retract: bool,
    ) -> Acc<()> {
        let columns = self.arguments(i, args)?;
        let done = if retract {
            acc.retract_batch(&columns)
        } else {
            acc.update_batch(&columns)
        };
        done.map_err(why(&format!("cannot update {}", self.aggregates[i].name())))
    }

    /// How many rows a retracting group holds.
    pub(crate) fn rows(&self, states: &[Row]) -> i64 {
        match states.get(self.aggregates.len()).map(|r| &r.0[..]) {
            Some([ScalarValue::Int64(Some(n))]) => *n,
            _ => 0,
        }
    }

    /// Aggregate `i` when its state merges and evaluates without an accumulator.
    fn native(&self, i: usize) -> Option<Native> {
        let f = &self.aggregates[i];
        if self.retracting || f.is_distinct() {
            return None;
        }
        match f.fun().name() {
            "max" => Some(Native::Max),
            "min" => Some(Native::Min),
            "count" => Some(Native::Count),
            _ => None,
        }
    }

    pub(crate) fn accumulator(&self, i: usize, state: Option<&Row>) -> Acc<Box<dyn Accumulator>> {
        let f = &self.aggregates[i];
        let created = if self.retracting {
            f.create_sliding_accumulator()
        } else {
            f.create_accumulator()
        };
        let mut acc = created.map_err(why(&format!(
            "cannot create the accumulator of {}",
            f.name()
        )))?;
        if let Some(s) = state {
            acc.merge_batch(&state_arrays(s)?)
                .map_err(why(&format!("cannot merge a state of {}", f.name())))?;
        }
        Ok(acc)
    }

    pub(crate) fn state(&self, i: usize, mut acc: Box<dyn Accumulator>) -> Acc<Row> {
        let what = format!("cannot read the state of {}", self.aggregates[i].name());
        acc.state().map(Row).map_err(why(&what))
    }

    pub(crate) fn merge(&self, x: Vec<Row>, y: Vec<Row>) -> Acc<Vec<Row>> {
        if x.is_empty() {
            return Ok(y);
        }
        if y.is_empty() {
            return Ok(x);
        }
        (0..self.aggregates.len())
            .map(|i| {
                if let Some(merged) = self.native(i).and_then(|n| n.merge(&x[i], &y[i])) {
                    return Ok(merged);
                }
                let mut acc = self.accumulator(i, Some(&x[i]))?;
                acc.merge_batch(&state_arrays(&y[i])?)
                    .map_err(why(&format!("cannot merge {}", self.aggregates[i].name())))?;
                self.state(i, acc)
            })
            .collect()
    }

    pub(crate) fn evaluate(&self, states: &[Row]) -> Acc<Vec<ScalarValue>> {
        (0..self.aggregates.len())
            .map(|i| {
                if let Some(v) = self
                    .native(i)
                    .zip(states.get(i))
                    .and_then(|(n, s)| n.value(s))
                {
                    return Ok(v);
                }
                let mut acc = self.accumulator(i, states.get(i))?;
                acc.evaluate().map_err(why(&format!(
                    "cannot evaluate {}",
                    self.aggregates[i].name()
                )))
            })
            .collect()
    }
}

/// `MAX`, `MIN` and `COUNT` states merged and read as DataFusion's accumulators do, without
/// creating one per record (creating it and restoring its state from Arrow arrays was most of
/// the cost of a windowed or plain aggregation's merge). The states are DataFusion's own (the
/// extreme value; the count), so stores, changelogs and queries see the same rows.
#[derive(Debug, Clone, Copy)]
enum Native {
    Max,
    Min,
    Count,
}

impl Native {
    /// Two states merged; `None` when the values are not of a kind merged here (`REAL` and
    /// half floats; values of different types).
    fn merge(self, x: &Row, y: &Row) -> Option<Row> {
        let ([a], [b]) = (&x.0[..], &y.0[..]) else {
            return None;
        };
        let merged = match self {
            Native::Count => match (a, b) {
                (ScalarValue::Int64(Some(a)), ScalarValue::Int64(Some(b))) => {
                    ScalarValue::Int64(Some(a.wrapping_add(*b)))
                }
                _ => return None,
            },
            Native::Max | Native::Min => {
                if let (ScalarValue::Float64(a), ScalarValue::Float64(b)) = (a, b) {
                    return Some(Row(vec![ScalarValue::Float64(self.pick_f64(*a, *b))]));
                }
                if matches!(
                    a,
                    ScalarValue::Float16(_) | ScalarValue::Float32(_) | ScalarValue::Float64(_)
                ) {
                    return None;
                }
                if b.is_null() {
                    a.clone()
                } else if a.is_null() {
                    b.clone()
                } else {
                    let order = a.partial_cmp(b)?;
                    let take_b = match self {
                        Native::Max => order.is_lt(),
                        _ => order.is_gt(),
                    };
                    if take_b { b.clone() } else { a.clone() }
                }
            }
        };
        Some(Row(vec![merged]))
    }

    /// `MAX`/`MIN` of two `DOUBLE`s as DataFusion orders them (`f64::total_cmp`: a `NaN`
    /// above every number, `-0.0` below `0.0`), a null giving way to a value.
    fn pick_f64(self, a: Option<f64>, b: Option<f64>) -> Option<f64> {
        match (a, b) {
            (Some(a), Some(b)) => {
                let take_b = match self {
                    Native::Max => a.total_cmp(&b).is_lt(),
                    _ => a.total_cmp(&b).is_gt(),
                };
                Some(if take_b { b } else { a })
            }
            (a, b) => a.or(b),
        }
    }

    /// The state of the `rows` of one argument column; `None` when the argument is not one
    /// column folded here (`MAX`/`MIN` fold BIGINT and DOUBLE columns only).
    fn fold(self, args: &[ArrayRef], rows: &[u32]) -> Option<Row> {
        use datafusion::arrow::array::{Array, AsArray};
        use datafusion::arrow::datatypes::{Float64Type, Int64Type};
        let [arg] = args else {
            return None;
        };
        let state = match self {
            Native::Count => {
                let valid = rows.iter().filter(|&&r| arg.is_valid(r as usize)).count();
                ScalarValue::Int64(Some(valid as i64))
            }
            Native::Max | Native::Min => {
                if let Some(a) = arg.as_primitive_opt::<Float64Type>() {
                    let picked = rows
                        .iter()
                        .map(|&r| r as usize)
                        .filter(|&r| a.is_valid(r))
                        .map(|r| a.value(r))
                        .fold(None, |m, v| self.pick_f64(m, Some(v)));
                    ScalarValue::Float64(picked)
                } else {
                    let a = arg.as_primitive_opt::<Int64Type>()?;
                    let valid = rows
                        .iter()
                        .map(|&r| r as usize)
                        .filter(|&r| a.is_valid(r))
                        .map(|r| a.value(r));
                    ScalarValue::Int64(match self {
                        Native::Max => valid.max(),
                        _ => valid.min(),
                    })
                }
            }
        };
        Some(Row(vec![state]))
    }

    /// The aggregate's value of a state: the state's one value.
    fn value(self, state: &Row) -> Option<ScalarValue> {
        match (self, &state.0[..]) {
            (Native::Count, [v @ ScalarValue::Int64(Some(_))]) => Some(v.clone()),
            (Native::Max | Native::Min, [v]) => Some(v.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use datafusion::arrow::array::Float64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
    use datafusion::logical_expr::AggregateUDF;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;
    use proptest::prelude::*;

    /// Each of `functions` of one column `a` of type `data_type` (aliased `x`).
    pub(crate) fn aggregates_of_a(
        functions: impl IntoIterator<Item = Arc<AggregateUDF>>,
        data_type: DataType,
    ) -> Vec<Arc<AggregateFunctionExpr>> {
        let schema = Schema::new(vec![Field::new("a", data_type, true)]);
        functions
            .into_iter()
            .map(|f| {
                AggregateExprBuilder::new(f, vec![col("a", &schema).unwrap()])
                    .schema(Arc::new(schema.clone()))
                    .alias("x")
                    .build()
                    .map(Arc::new)
                    .unwrap()
            })
            .collect()
    }

    /// `MAX(a), MIN(a)` over a `DOUBLE` column `a`.
    fn max_min() -> AccumulatorFns {
        AccumulatorFns {
            aggregates: aggregates_of_a([max_udaf(), min_udaf()], DataType::Float64),
            arg_ranges: vec![0..1, 0..1],
            retracting: false,
        }
    }

    fn double() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            Just(Some(f64::NAN)),
            Just(Some(-f64::NAN)),
            Just(Some(f64::INFINITY)),
            Just(Some(f64::NEG_INFINITY)),
            Just(Some(0.0)),
            Just(Some(-0.0)),
            (-1e3f64..1e3).prop_map(Some),
        ]
    }

    /// A state's value as bits: `NaN`s and signed zeros compared exactly.
    fn bits(state: &Row) -> Option<u64> {
        match &state.0[..] {
            [ScalarValue::Float64(v)] => v.map(f64::to_bits),
            other => panic!("not a DOUBLE state: {other:?}"),
        }
    }

    proptest! {
        /// `MAX`/`MIN` of DOUBLEs folded and merged natively give DataFusion's accumulator's
        /// states, bit for bit.
        #[test]
        fn native_max_min_of_doubles_are_datafusions(
            x in proptest::collection::vec(double(), 1..12),
            y in proptest::collection::vec(double(), 1..12),
        ) {
            let fns = max_min();
            let column = |v: &[Option<f64>]| -> ArrayRef { Arc::new(Float64Array::from(v.to_vec())) };
            for i in 0..2 {
                let native = fns.native(i).unwrap();
                let datafusion = |v: &[Option<f64>]| {
                    let mut acc = fns.accumulator(i, None).unwrap();
                    acc.update_batch(&[column(v)]).unwrap();
                    fns.state(i, acc).unwrap()
                };
                let all: Vec<u32> = (0..x.len() as u32).collect();
                let nx = native.fold(&[column(&x)], &all).unwrap();
                let (dx, dy) = (datafusion(&x), datafusion(&y));
                prop_assert_eq!(bits(&nx), bits(&dx));
                let merged = native.merge(&dx, &dy).unwrap();
                let mut acc = fns.accumulator(i, Some(&dx)).unwrap();
                acc.merge_batch(&state_arrays(&dy).unwrap()).unwrap();
                prop_assert_eq!(bits(&merged), bits(&fns.state(i, acc).unwrap()));
            }
        }
    }
}
