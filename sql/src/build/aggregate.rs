//! `GROUP BY`: group values and arguments computed in batches and folded per key and pane,
//! then DataFusion accumulator states kept per key (and window) in the engine's stores; over
//! an upsert stream, as retractions and additions ([`crate::changes`]).

use super::chunks::chunkable;
use super::eval::{evaluate, split_evaluated, with_results};
use super::{BuildCx, Lowered, duration};
use crate::accumulator::AccumulatorFns;
use crate::changes::{Change, changes_of, flagged, unflag};
use crate::chunk::{Chunk, FilterProject};
use crate::plan::{AggregateStep, GroupColumn, PhysExpr, WindowSpec};
use crate::row::{Row, RowCodec, timestamp};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use runnel_engine::dsl::{SessionWindows, TimeWindows};
use runnel_engine::error::Result;
use runnel_engine::operator::{AggFns, Refused};
use runnel_engine::record::{Rec, Windowed};
use std::sync::Arc;

impl BuildCx<'_> {
    pub(super) fn aggregate(&mut self, a: &AggregateStep, stmt: usize) -> Result<Lowered> {
        let retracting = a.input.is_upsert();
        let in_schema = a.input.schema();
        // Group values and aggregate arguments, computed in batches before grouping.
        let mut pre: Vec<PhysExpr> = a.keys.clone();
        let mut arg_ranges = Vec::new();
        for f in &a.aggregates {
            let args = f.expressions();
            arg_ranges.push(pre.len() - a.keys.len()..pre.len() - a.keys.len() + args.len());
            pre.extend(args);
        }
        let nkeys = a.keys.len();
        let fns = Arc::new(AccumulatorFns {
            aggregates: a.aggregates.clone(),
            arg_ranges,
            retracting,
        });
        if retracting {
            let lowered = self.lower(&a.input, stmt)?;
            return Ok(self.aggregate_changes(a, stmt, lowered, pre, fns));
        }
        // Rows of one key that fall in the same windows are folded into one partial state per
        // batch, with DataFusion's vectorized `update_batch`: the windowed (or plain)
        // aggregation then merges a few partials per batch instead of updating per row.
        let pane = match a.window {
            Some(WindowSpec::Tumble { size }) => Some(size),
            Some(WindowSpec::Hop { size, slide }) => Some(gcd(size, slide)),
            Some(WindowSpec::Session { .. }) => None, // a row can bridge sessions: no folding
            // Results of one upstream window share its time (its end − 1).
            Some(WindowSpec::PerUpstreamWindow) => Some(1),
            None => Some(i64::MAX),
        };
        let combiner = fns.clone();
        let pre_agg = if chunkable(&a.input) {
            // The group values and arguments evaluated on the input's Arrow batches.
            let names = (0..pre.len()).map(|i| format!("pre{i}")).collect();
            let op = FilterProject {
                predicate: None,
                project: Some((pre, names)),
            };
            self.chunks(&a.input).map_batch(
                "SQL-GROUP-BY",
                Arc::new(
                    move |batch: Vec<Rec<(), Chunk>>, refused: &mut Vec<Refused>| {
                        let mut folded = Vec::new();
                        for r in batch {
                            if let Some(c) = op.apply(r.value, refused)? {
                                let records = c.records();
                                let columns = c.batch.columns();
                                folded
                                    .extend(combiner.fold_columns(columns, records, nkeys, pane)?);
                            }
                        }
                        Ok(folded)
                    },
                ),
                true,
            )
        } else {
            self.lower(&a.input, stmt)?.stream.map_batch(
                "SQL-GROUP-BY",
                Arc::new(
                    move |batch: Vec<Rec<Row, Option<Row>>>, refused: &mut Vec<Refused>| {
                        let computed = evaluate(&in_schema, &batch, &pre, refused)?;
                        let rows: Vec<(Rec<Row, Option<Row>>, Row)> = with_results(batch, computed)
                            .filter_map(|(r, v)| Some((r, v.ok().flatten()?)))
                            .collect();
                        combiner.fold(rows, nkeys, pane)
                    },
                ),
                true,
            )
        }
        .with_serdes(RowCodec, RowCodec);
        let grouped = pre_agg.group_by_key(None);
        self.stores += 1;
        let store = format!("sql-{stmt}-aggregate-{}", self.stores);
        let (f1, f2, f3) = (fns.clone(), fns.clone(), fns.clone());
        let agg_fns = AggFns {
            init: Arc::new(Vec::<Row>::new),
            add: Arc::new(move |_: &Row, partial: &Vec<Row>, states: Vec<Row>| {
                f1.merge(states, partial.clone())
            }),
            merge: Some(Arc::new(move |_: &Row, x: Vec<Row>, y: Vec<Row>| {
                f2.merge(x, y)
            })),
        };
        let group_columns = a.group_columns.clone();
        let out_row: Render = Arc::new(
            move |key: &Row,
                  window: Option<(i64, i64)>,
                  states: &[Row]|
                  -> std::result::Result<Option<Row>, String> {
                let mut values: Vec<ScalarValue> = group_columns
                    .iter()
                    .map(|c| match c {
                        GroupColumn::Key(i) => key.0[*i].clone(),
                        GroupColumn::WindowStart => timestamp(window.map(|w| w.0)),
                        GroupColumn::WindowEnd => timestamp(window.map(|w| w.1)),
                    })
                    .collect();
                values.extend(f3.evaluate(states)?);
                Ok(Some(Row(values)))
            },
        );
        let key_types: Vec<DataType> = a
            .group_columns
            .iter()
            .zip(a.schema.fields())
            .filter(|(c, _)| matches!(c, GroupColumn::Key(_)))
            .map(|(_, f)| f.data_type().clone())
            .collect();
        let store_serde = Arc::new(RowCodec);
        let mut key_names = a.key_names.clone();
        let table = |window: bool| AggregateTable {
            store: store.clone(),
            render: out_row.clone(),
            key_types: key_types.clone(),
            key_names: a.key_names.clone(),
            window,
        };
        let (stream, key_types, table) = match a.window {
            Some(WindowSpec::PerUpstreamWindow) => {
                // Panes of 1 ms at the upstream results' time: the group key (which holds the
                // upstream window) already names the window, so it is the output key as is.
                let t = grouped
                    .windowed_by(TimeWindows::of(duration(1)))
                    .aggregate_into(&store, agg_fns, store_serde);
                let per_row = out_row.clone();
                let table = AggregateTable {
                    render: Arc::new(move |k, _, s| per_row(k, None, s)),
                    ..table(false)
                };
                let render = table.render.clone();
                let stream = t.to_stream().try_map(move |w, s| {
                    let row = s.map(|s| render(&w.key, None, &s)).transpose()?;
                    Ok((w.key, row.flatten()))
                });
                (stream, key_types, table)
            }
            Some(
                WindowSpec::Tumble { .. } | WindowSpec::Hop { .. } | WindowSpec::Session { .. },
            ) => {
                let t = match a.window {
                    Some(WindowSpec::Session { gap }) => grouped
                        .windowed_by_session(SessionWindows::with_inactivity_gap(duration(gap)))
                        .aggregate_into(&store, agg_fns, store_serde),
                    Some(WindowSpec::Hop { size, slide }) => grouped
                        .windowed_by(TimeWindows::of(duration(size)).advance_by(duration(slide)))
                        .aggregate_into(&store, agg_fns, store_serde),
                    Some(WindowSpec::Tumble { size }) => grouped
                        .windowed_by(TimeWindows::of(duration(size)))
                        .aggregate_into(&store, agg_fns, store_serde),
                    _ => unreachable!("matched above"),
                };
                key_names.push("window_start".into());
                let table = table(true);
                let render = table.render.clone();
                let stream = t
                    .to_stream()
                    .try_map(move |w, s| windowed_row(&render, &w, s));
                (stream, with_ts(key_types), table)
            }
            None => {
                let fns = AggFns {
                    merge: None,
                    ..agg_fns
                };
                let t = grouped.aggregate_into(&store, fns, store_serde);
                let table = table(false);
                let render = table.render.clone();
                let stream = t.to_stream().try_map(move |k, s: Option<Vec<Row>>| {
                    let row = s.map(|s| render(&k, None, &s)).transpose()?;
                    Ok((k, row.flatten()))
                });
                (stream, key_types, table)
            }
        };
        self.last_table = Some(table);
        Ok(Lowered {
            stream: stream.with_serdes(RowCodec, RowCodec),
            key_names,
            key_types,
        })
    }

    /// `GROUP BY` over an upsert stream: see [`crate::changes`].
    fn aggregate_changes(
        &mut self,
        a: &AggregateStep,
        stmt: usize,
        lowered: Lowered,
        pre: Vec<PhysExpr>,
        fns: Arc<AccumulatorFns>,
    ) -> Lowered {
        let changes = self.changes(lowered.stream, stmt);
        let aggregate = format!("sql-{stmt}-aggregate-{}", self.stores);
        let in_schema = a.input.schema();
        let nkeys = a.keys.len();
        let keyed = changes.map_batch(
            "SQL-GROUP-BY",
            Arc::new(
                move |batch: Vec<Rec<Row, Option<Row>>>, refused: &mut Vec<Refused>| {
                    let (batch, changes) = changes_of(batch);
                    Ok(split_evaluated(&in_schema, batch, &pre, nkeys, refused)?
                        .zip(changes)
                        .filter_map(|(v, change)| {
                            let (r, keys, args) = v?;
                            Some(r.with(keys, flagged(args, change != Change::Add)))
                        })
                        .collect())
                },
            ),
            true,
        );
        let (f1, f2) = (fns.clone(), fns);
        let agg_fns = AggFns {
            init: Arc::new(Vec::<Row>::new),
            add: Arc::new(move |_: &Row, change: &Row, states: Vec<Row>| {
                let (args, retract) = unflag(change.clone());
                f1.apply(states, &args, retract)
            }),
            merge: None,
        };
        let table = keyed
            .with_serdes(RowCodec, RowCodec)
            .group_by_key(None)
            .aggregate_into(&aggregate, agg_fns, Arc::new(RowCodec));
        let group_columns = a.group_columns.clone();
        // No row when every row of the group was retracted: the key is deleted.
        let render: Render = Arc::new(move |key: &Row, _, states: &[Row]| {
            if f2.rows(states) == 0 {
                return Ok(None);
            }
            let mut values: Vec<ScalarValue> = group_columns
                .iter()
                .map(|c| match c {
                    GroupColumn::Key(i) => key.0[*i].clone(),
                    _ => unreachable!("no window over an upsert stream"),
                })
                .collect();
            values.extend(f2.evaluate(states)?);
            Ok(Some(Row(values)))
        });
        let key_types: Vec<DataType> = a.schema.fields()[..a.keys.len()]
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        self.last_table = Some(AggregateTable {
            store: aggregate,
            render: render.clone(),
            key_types: key_types.clone(),
            key_names: a.key_names.clone(),
            window: false,
        });
        let stream = table
            .to_stream()
            .try_map(move |key: Row, states: Option<Vec<Row>>| {
                let row = states.map(|s| render(&key, None, &s)).transpose()?;
                Ok((key, row.flatten()))
            });
        Lowered {
            stream: stream.with_serdes(RowCodec, RowCodec),
            key_names: a.key_names.clone(),
            key_types,
        }
    }
}

/// How an aggregation's states for a key (and window) become the aggregate step's result
/// row; `None` when the key has no result (every row retracted). Shared by the step's stream
/// and interactive queries of its store.
pub(crate) type Render = Arc<
    dyn Fn(&Row, Option<(i64, i64)>, &[Row]) -> std::result::Result<Option<Row>, String>
        + Send
        + Sync,
>;

/// An aggregation's store as a table queries read: see [`crate::query`].
pub(crate) struct AggregateTable {
    pub store: String,
    pub render: Render,
    /// The group key's columns: what a query's key gives.
    pub key_names: Vec<String>,
    pub key_types: Vec<DataType>,
    /// Whether the step's key ends with the window's start (windowed results).
    pub window: bool,
}

/// A windowed result's record: the group key and the window's start, and its row.
fn windowed_row(
    render: &Render,
    w: &Windowed<Row>,
    states: Option<Vec<Row>>,
) -> std::result::Result<(Row, Option<Row>), String> {
    let window = Some((w.window.start, w.window.end));
    let row = states.map(|s| render(&w.key, window, &s)).transpose()?;
    let mut key = w.key.clone();
    key.0.push(timestamp(Some(w.window.start)));
    Ok((key, row.flatten()))
}

fn with_ts(mut types: Vec<DataType>) -> Vec<DataType> {
    types.push(DataType::Timestamp(
        datafusion::arrow::datatypes::TimeUnit::Millisecond,
        None,
    ));
    types
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}
