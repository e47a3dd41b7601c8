//! From planned [`Step`]s to the engine's topology, through the same DSL Rust jobs use.
//!
//! A stream input and the `WHERE`/`SELECT` chain over it carry [`Chunk`]s: each run of input
//! records as one Arrow batch, on which DataFusion's physical expressions run; a stateless
//! statement's output is written from it, and an aggregate evaluates its grouping values and
//! arguments on it and folds them per key and pane. Every other edge carries
//! `Rec<Row, Option<Row>>`: the key is the record key's columns (empty for unkeyed streams),
//! the value a row of the step's schema, or `None` for a deleted key of an upsert stream.
//! Aggregates keep DataFusion accumulator states per key (and window) in the engine's
//! changelogged stores.
//!
//! Failures are values: a row an expression fails on is refused (a dead letter, the rest of
//! its batch goes on); a step that fails on a whole batch or on a state (reading values back
//! from Arrow, an accumulator that cannot update, merge or evaluate) returns `Err(why)`, which
//! stops the task with an error naming the operator and the input record.

use super::changes::{Change, Changes, changes_of, flagged, unflag};
use super::chunk::{Chunk, ChunkDecoder, ChunkEncoder, FilterProject};
use super::job::{InputDecl, JobFile, OutputDecl};
use super::over::{self, Order, OverSpec, pack};
use super::plan::{
    AggregateStep, JobPlan, JoinStep, OverFunction, OverStep, PhysExpr, Step, StreamJoinStep,
    WindowSpec,
};
use super::row::{
    InputSerde, KeySerde, Row, RowCodec, RowDecoder, RowEncoder, nulls, rows_of, timestamp,
    to_batch,
};
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use runnel_engine::dsl::{
    Consumed, JoinWindows, KStream, KTable, Produced, SessionWindows, StreamsBuilder, TimeWindows,
};
use runnel_engine::error::{EngineError, Result};
use runnel_engine::operator::AggFns;
use runnel_engine::operator::OutBuf;
use runnel_engine::operator::Refused;
use runnel_engine::record::{Rec, Windowed};
use runnel_engine::serdes::Serde;
use runnel_log::RecordRun;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type Stream = KStream<Row, Option<Row>>;

/// A lowered step: its stream and the names of its key's columns.
struct Lowered {
    stream: Stream,
    key_names: Vec<String>,
    key_types: Vec<DataType>,
}

/// Builds the topology of a planned job.
pub fn build(plan: &JobPlan) -> Result<runnel_engine::Topology> {
    let b = StreamsBuilder::new();
    let mut cx = BuildCx {
        b: b.clone(),
        job: &plan.job,
        sources: HashMap::new(),
        tables: HashMap::new(),
        stores: 0,
    };
    for (i, st) in plan.statements.iter().enumerate() {
        cx.sink(&st.root, i, &st.output)?;
    }
    Ok(b.build())
}

struct BuildCx<'a> {
    b: StreamsBuilder,
    job: &'a JobFile,
    sources: HashMap<String, KStream<(), Chunk>>,
    tables: HashMap<String, KTable<Row, Option<Row>>>,
    stores: usize,
}

/// `what: error`: why a step failed (the task stops with it, naming the record).
pub(super) fn why<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Whether a step is a chain of `WHERE` and `SELECT` over a stream input, which runs on
/// [`Chunk`]s (the input's Arrow batches) instead of rows.
fn chunkable(step: &Step) -> bool {
    match step {
        Step::Scan { .. } => true,
        Step::Filter { input, .. } | Step::Project { input, .. } => chunkable(input),
        _ => false,
    }
}

/// Applies `f` to each record's chunk, dropping those it empties.
fn map_chunks(
    batch: Vec<Rec<(), Chunk>>,
    mut f: impl FnMut(Chunk) -> std::result::Result<Option<Chunk>, String>,
) -> std::result::Result<Vec<Rec<(), Chunk>>, String> {
    let mut out = Vec::with_capacity(batch.len());
    for r in batch {
        let Rec {
            value,
            timestamp,
            headers,
            offset,
            ..
        } = r;
        if let Some(value) = f(value)? {
            out.push(Rec {
                key: (),
                value,
                timestamp,
                headers,
                offset,
            });
        }
    }
    Ok(out)
}

/// Evaluates expressions over the `Some` rows of a batch, in order: one Arrow batch, or, if
/// that fails, row by row, so that only the rows an expression fails on are refused (sent to
/// the dead-letter topic with the reason) and get `None`.
fn evaluate(
    schema: &SchemaRef,
    batch: &[Rec<Row, Option<Row>>],
    exprs: &[PhysExpr],
    refused: &mut Vec<Refused>,
) -> std::result::Result<Vec<Option<Row>>, String> {
    let recs: Vec<&Rec<Row, Option<Row>>> = batch.iter().filter(|r| r.value.is_some()).collect();
    let rows: Vec<&Row> = recs.iter().filter_map(|r| r.value.as_ref()).collect();
    if let Ok(columns) = evaluate_batch(schema, &rows, exprs) {
        let rows = rows_of(&columns, rows.len()).map_err(why("cannot read a value"))?;
        return Ok(rows.into_iter().map(Some).collect());
    }
    recs.iter()
        .zip(&rows)
        .map(
            |(rec, row)| match evaluate_batch(schema, std::slice::from_ref(row), exprs) {
                Ok(columns) => Ok(rows_of(&columns, 1)
                    .map_err(why("cannot read a value"))?
                    .pop()),
                Err(reason) => {
                    refused.push(Refused {
                        offset: rec.offset,
                        timestamp: rec.timestamp,
                        value: row_json(schema, row),
                        reason,
                    });
                    Ok(None)
                }
            },
        )
        .collect()
}

fn evaluate_batch(
    schema: &SchemaRef,
    rows: &[&Row],
    exprs: &[PhysExpr],
) -> std::result::Result<Vec<ArrayRef>, String> {
    let batch = to_batch(schema, rows)?;
    exprs
        .iter()
        .map(|e| {
            e.evaluate(&batch)
                .and_then(|v| v.into_array(rows.len()))
                .map_err(|err| format!("cannot evaluate {e}: {}", err.strip_backtrace()))
        })
        .collect()
}

/// A row as a JSON object (what a refused record's dead letter holds).
fn row_json(schema: &SchemaRef, row: &Row) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = RowEncoder {
        schema: schema.clone(),
        format: super::row::Format::Json,
    }
    .serialize(&Some(row.clone()), &mut out);
    out
}

/// Pairs each record with its evaluated row: records without a value (deletes of an upsert
/// stream) get `Err(())`, refused records `Ok(None)`.
fn with_results(
    batch: Vec<Rec<Row, Option<Row>>>,
    results: Vec<Option<Row>>,
) -> impl Iterator<Item = (Rec<Row, Option<Row>>, std::result::Result<Option<Row>, ()>)> {
    let mut results = results.into_iter();
    batch.into_iter().map(move |r| {
        let res = if r.value.is_some() {
            Ok(results.next().expect("a result per row"))
        } else {
            Err(())
        };
        (r, res)
    })
}

/// `exprs` over each record's row, split after the first `n` values, in order: `None` for a
/// delete and for a row an expression failed on (refused).
fn split_evaluated(
    schema: &SchemaRef,
    batch: Vec<Rec<Row, Option<Row>>>,
    exprs: &[PhysExpr],
    n: usize,
    refused: &mut Vec<Refused>,
) -> std::result::Result<impl Iterator<Item = Option<(Rec<Row, Option<Row>>, Row, Row)>>, String> {
    let computed = evaluate(schema, &batch, exprs, refused)?;
    Ok(with_results(batch, computed).map(move |(r, v)| {
        let mut front = v.ok().flatten()?;
        let rest = Row(front.0.split_off(n));
        Some((r, front, rest))
    }))
}

/// `WHERE`: keeps the rows the predicate is true for; on an upsert stream a row that fails it
/// becomes a delete of its key. Deletes pass through; rows the predicate fails on are refused.
fn filter_batch(
    schema: &SchemaRef,
    upsert: bool,
    predicate: &PhysExpr,
    batch: Vec<Rec<Row, Option<Row>>>,
    refused: &mut Vec<Refused>,
) -> std::result::Result<Vec<Rec<Row, Option<Row>>>, String> {
    let keep = evaluate(schema, &batch, std::slice::from_ref(predicate), refused)?;
    Ok(with_results(batch, keep)
        .filter_map(|(mut r, keep)| {
            let ok = match keep {
                Err(()) => return Some(r), // a delete passes through
                Ok(None) => return None,   // refused
                Ok(Some(v)) => v.0[0] == ScalarValue::Boolean(Some(true)),
            };
            match (ok, upsert) {
                (true, _) => Some(r),
                // A row of a table that no longer passes is deleted.
                (false, true) => {
                    r.value = None;
                    Some(r)
                }
                (false, false) => None,
            }
        })
        .collect())
}

/// `SELECT` expressions over each row; deletes pass through, refused rows are dropped.
fn project_batch(
    schema: &SchemaRef,
    exprs: &[PhysExpr],
    batch: Vec<Rec<Row, Option<Row>>>,
    refused: &mut Vec<Refused>,
) -> std::result::Result<Vec<Rec<Row, Option<Row>>>, String> {
    let rows = evaluate(schema, &batch, exprs, refused)?;
    Ok(with_results(batch, rows)
        .filter_map(|(r, row)| {
            let key = r.key.clone();
            match row {
                Err(()) => Some(r),
                Ok(None) => None,
                Ok(Some(row)) => Some(r.with(key, Some(row))),
            }
        })
        .collect())
}

/// A stream's `WHERE` and the `SELECT` above it on one Arrow batch: the kept rows are projected
/// without going back to rows in between. When anything fails (so that only the rows an
/// expression fails on are refused) or a record has no value, the two steps run one by one.
fn filter_project_batch(
    schema: &SchemaRef,
    predicate: &PhysExpr,
    exprs: &[PhysExpr],
    batch: Vec<Rec<Row, Option<Row>>>,
    refused: &mut Vec<Refused>,
) -> std::result::Result<Vec<Rec<Row, Option<Row>>>, String> {
    let rows: Option<Vec<&Row>> = batch.iter().map(|r| r.value.as_ref()).collect();
    if let Some((keep, columns)) =
        rows.and_then(|rows| filter_project(schema, predicate, exprs, &rows).ok())
    {
        let kept = keep.iter().filter(|k| **k).count();
        let mut projected = rows_of(&columns, kept)
            .map_err(why("cannot read a value"))?
            .into_iter();
        return Ok(batch
            .into_iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(r, _)| {
                let key = r.key.clone();
                r.with(key, projected.next())
            })
            .collect());
    }
    let filtered = filter_batch(schema, false, predicate, batch, refused)?;
    project_batch(schema, exprs, filtered, refused)
}

/// Which rows pass `predicate`, and `exprs` over those rows, as columns.
fn filter_project(
    schema: &SchemaRef,
    predicate: &PhysExpr,
    exprs: &[PhysExpr],
    rows: &[&Row],
) -> std::result::Result<(Vec<bool>, Vec<ArrayRef>), String> {
    use datafusion::arrow::array::{Array, AsArray};
    let batch = to_batch(schema, rows)?;
    let mask = predicate
        .evaluate(&batch)
        .and_then(|v| v.into_array(rows.len()))
        .map_err(|e| e.to_string())?;
    let mask = mask
        .as_boolean_opt()
        .ok_or("the predicate is not a boolean")?;
    let kept =
        datafusion::arrow::compute::filter_record_batch(&batch, mask).map_err(|e| e.to_string())?;
    let columns = exprs
        .iter()
        .map(|e| {
            e.evaluate(&kept)
                .and_then(|v| v.into_array(kept.num_rows()))
                .map_err(|err| err.to_string())
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let keep = (0..mask.len())
        .map(|i| mask.is_valid(i) && mask.value(i))
        .collect();
    Ok((keep, columns))
}

fn duration(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

impl BuildCx<'_> {
    fn lower(&mut self, step: &Step, stmt: usize) -> Result<Lowered> {
        if chunkable(step) {
            let stream = self.chunks(step).map_batch(
                "SQL-ROWS",
                Arc::new(|batch: Vec<Rec<(), Chunk>>, _: &mut Vec<Refused>| {
                    let mut rows = Vec::new();
                    for r in batch {
                        rows.extend(r.value.into_rows().map_err(why("cannot read a value"))?);
                    }
                    Ok(rows)
                }),
                false,
            );
            return Ok(Lowered {
                stream,
                key_names: vec![],
                key_types: vec![],
            });
        }
        Ok(match step {
            Step::Scan { .. } => unreachable!("a scan is read as chunks"),
            Step::Filter { input, predicate } => {
                let schema = input.schema();
                let upsert = input.is_upsert();
                let lowered = self.lower(input, stmt)?;
                let predicate = predicate.clone();
                let stream = lowered.stream.map_batch(
                    "SQL-FILTER",
                    Arc::new(
                        move |batch: Vec<Rec<Row, Option<Row>>>, refused: &mut Vec<Refused>| {
                            filter_batch(&schema, upsert, &predicate, batch, refused)
                        },
                    ),
                    false,
                );
                Lowered { stream, ..lowered }
            }
            Step::Project { input, exprs, .. } => {
                let schema = input.schema();
                let columns: Option<Vec<usize>> = exprs
                    .iter()
                    .map(|e| e.downcast_ref::<Column>().map(Column::index))
                    .collect();
                if let Some(columns) = columns {
                    // Only columns: picked from the rows, without a round trip through Arrow.
                    let lowered = self.lower(input, stmt)?;
                    let stream = lowered.stream.map_values(move |v: Option<Row>| {
                        v.map(|r| Row(columns.iter().map(|&c| r.0[c].clone()).collect()))
                    });
                    return Ok(Lowered { stream, ..lowered });
                }
                let exprs = exprs.clone();
                if let Step::Filter {
                    input: inner,
                    predicate,
                } = &**input
                    && !inner.is_upsert()
                {
                    let lowered = self.lower(inner, stmt)?;
                    let predicate = predicate.clone();
                    let stream = lowered.stream.map_batch(
                        "SQL-FILTER-PROJECT",
                        Arc::new(
                            move |batch: Vec<Rec<Row, Option<Row>>>, refused: &mut Vec<Refused>| {
                                filter_project_batch(&schema, &predicate, &exprs, batch, refused)
                            },
                        ),
                        false,
                    );
                    return Ok(Lowered { stream, ..lowered });
                }
                let lowered = self.lower(input, stmt)?;
                let stream = lowered.stream.map_batch(
                    "SQL-PROJECT",
                    Arc::new(
                        move |batch: Vec<Rec<Row, Option<Row>>>, refused: &mut Vec<Refused>| {
                            project_batch(&schema, &exprs, batch, refused)
                        },
                    ),
                    false,
                );
                Lowered { stream, ..lowered }
            }
            Step::Aggregate(a) => self.aggregate(a, stmt)?,
            Step::Union { inputs, .. } => {
                let mut lowered = inputs
                    .iter()
                    .map(|i| self.lower(i, stmt))
                    .collect::<Result<Vec<_>>>()?;
                let first = lowered.remove(0);
                let stream = lowered
                    .iter()
                    .fold(first.stream.clone(), |acc, l| acc.merge(&l.stream));
                Lowered { stream, ..first }
            }
            Step::Join(j) => self.join(j, stmt)?,
            Step::StreamJoin(j) => self.stream_join(j, stmt)?,
            Step::Over(o) => self.over(o, stmt)?,
        })
    }

    /// Re-keys a stream by expressions over its rows (rows with a null key are dropped: SQL's
    /// NULL = NULL is not true).
    fn keyed_by(
        &mut self,
        step: &Step,
        keys: &[PhysExpr],
        stmt: usize,
        prefix: &str,
    ) -> Result<Stream> {
        let schema = step.schema();
        let lowered = self.lower(step, stmt)?;
        let key_exprs = keys.to_vec();
        Ok(lowered.stream.map_batch(
            prefix,
            Arc::new(
                move |batch: Vec<Rec<Row, Option<Row>>>, refused: &mut Vec<Refused>| {
                    let keys = evaluate(&schema, &batch, &key_exprs, refused)?;
                    Ok(with_results(batch, keys)
                        .filter_map(|(r, k)| {
                            let k = k.ok().flatten()?;
                            if k.0.iter().any(ScalarValue::is_null) {
                                return None;
                            }
                            let v = r.value.clone();
                            Some(r.with(k, v))
                        })
                        .collect())
                },
            ),
            true,
        ))
    }

    fn stream_join(&mut self, j: &StreamJoinStep, stmt: usize) -> Result<Lowered> {
        let left = self
            .keyed_by(&j.left, &j.left_keys, stmt, "SQL-JOIN-LEFT-KEY")?
            .with_serdes(RowCodec, RowCodec);
        let right = self
            .keyed_by(&j.right, &j.right_keys, stmt, "SQL-JOIN-RIGHT-KEY")?
            .with_serdes(RowCodec, RowCodec);
        let windows = JoinWindows::of(Duration::ZERO)
            .before(duration(j.before))
            .after(duration(j.after))
            .grace(duration(j.grace));
        let joined = left.join_stream(
            &right,
            |l: &Option<Row>, r: &Option<Row>| {
                let mut row = l.clone()?;
                row.0.extend(r.clone()?.0);
                Some(row)
            },
            windows,
        );
        let joined = match &j.filter {
            None => joined,
            Some(filter) => join_condition(joined, &j.schema, filter, None),
        };
        Ok(Lowered {
            stream: joined.with_serdes(RowCodec, RowCodec),
            key_names: vec![],
            key_types: vec![],
        })
    }

    fn decoder(input: &InputDecl) -> RowDecoder {
        RowDecoder {
            schema: input.schema.clone(),
            format: input.format,
            extra_nulls: vec![],
        }
    }

    fn key_serde(input: &InputDecl) -> KeySerde {
        let key = input.key.clone().unwrap_or_default();
        KeySerde {
            names: key
                .iter()
                .map(|k| input.schema.field(*k).name().clone())
                .collect(),
            types: key
                .iter()
                .map(|k| input.schema.field(*k).data_type().clone())
                .collect(),
        }
    }

    /// The input's chunks (one source per input, shared by the statements).
    fn chunk_source(&mut self, input: &InputDecl) -> KStream<(), Chunk> {
        if let Some(s) = self.sources.get(&input.name) {
            return s.clone();
        }
        let decoder = Arc::new(ChunkDecoder {
            rows: Self::decoder(input),
            event_time: input.event_time,
        });
        let s = self.b.stream_runs(
            &input.topic,
            duration(input.watermark_ms),
            Arc::new(move |run: &RecordRun| decoder.decode(run)),
        );
        self.sources.insert(input.name.clone(), s.clone());
        s
    }

    /// The chunks of a stateless chain over a stream input (where [`chunkable`]): `WHERE`
    /// and `SELECT` evaluated on the Arrow batch of each run of input records.
    fn chunks(&mut self, step: &Step) -> KStream<(), Chunk> {
        let (inner, predicate, project, name) = match step {
            Step::Scan {
                input,
                schema,
                extra,
            } => {
                let source = self.chunk_source(input);
                if extra.is_empty() {
                    return source;
                }
                let (extra, schema) = (extra.clone(), schema.clone());
                return source.map_batch(
                    "SQL-WINDOW-COLUMNS",
                    Arc::new(move |batch: Vec<Rec<(), Chunk>>, _: &mut Vec<Refused>| {
                        map_chunks(batch, |c| {
                            let c = c.with_nulls(&extra, &schema);
                            c.map(Some).map_err(why("cannot add window columns"))
                        })
                    }),
                    false,
                );
            }
            Step::Filter { input, predicate } => {
                (input, Some(predicate.clone()), None, "SQL-FILTER")
            }
            Step::Project {
                input,
                exprs,
                schema,
            } => {
                let names = schema.fields().iter().map(|f| f.name().clone()).collect();
                let project = Some((exprs.clone(), names));
                match &**input {
                    Step::Filter { input, predicate } => (
                        input,
                        Some(predicate.clone()),
                        project,
                        "SQL-FILTER-PROJECT",
                    ),
                    _ => (input, None, project, "SQL-PROJECT"),
                }
            }
            _ => unreachable!("only scans, filters and projections are read as chunks"),
        };
        let op = FilterProject { predicate, project };
        self.chunks(inner).map_batch(
            name,
            Arc::new(
                move |batch: Vec<Rec<(), Chunk>>, refused: &mut Vec<Refused>| {
                    map_chunks(batch, |c| op.apply(c, refused))
                },
            ),
            false,
        )
    }

    fn table(&mut self, input: &InputDecl) -> KTable<Row, Option<Row>> {
        if let Some(t) = self.tables.get(&input.name) {
            return t.clone();
        }
        let t = self.b.table(
            &input.topic,
            Consumed::with(Self::key_serde(input), InputSerde(Self::decoder(input))),
        );
        self.tables.insert(input.name.clone(), t.clone());
        t
    }

    fn aggregate(&mut self, a: &AggregateStep, stmt: usize) -> Result<Lowered> {
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
        let out_row = Arc::new(
            move |key: &Row,
                  window: Option<(i64, i64)>,
                  states: &[Row]|
                  -> std::result::Result<Row, String> {
                let mut values: Vec<ScalarValue> = group_columns
                    .iter()
                    .map(|c| match c {
                        Ok(i) => key.0[*i].clone(),
                        Err(true) => timestamp(window.map(|w| w.0)),
                        Err(false) => timestamp(window.map(|w| w.1)),
                    })
                    .collect();
                values.extend(f3.evaluate(states)?);
                Ok(Row(values))
            },
        );
        let (out_row2, out_row3) = (out_row.clone(), out_row.clone());
        let key_types: Vec<DataType> = a
            .group_columns
            .iter()
            .zip(a.schema.fields())
            .filter(|(c, _)| c.is_ok())
            .map(|(_, f)| f.data_type().clone())
            .collect();
        let to_rows = move |w: &Windowed<Row>, states: Option<Vec<Row>>| {
            let mut key = w.key.clone();
            let window = Some((w.window.start, w.window.end));
            let row = states.map(|s| out_row(&w.key, window, &s)).transpose()?;
            key.0.push(timestamp(Some(w.window.start)));
            Ok((key, row))
        };
        let store_serde = Arc::new(RowCodec);
        let mut key_names = a.key_names.clone();
        let (stream, key_types) = match a.window {
            Some(WindowSpec::PerUpstreamWindow) => {
                // Panes of 1 ms at the upstream results' time: the group key (which holds the
                // upstream window) already names the window, so it is the output key as is.
                let t = grouped
                    .windowed_by(TimeWindows::of(duration(1)))
                    .aggregate_into(&store, agg_fns, store_serde);
                let stream = t.to_stream().try_map(move |w, s| {
                    let row = s.map(|s| out_row2(&w.key, None, &s)).transpose()?;
                    Ok((w.key, row))
                });
                (stream, key_types)
            }
            Some(WindowSpec::Tumble { size }) | Some(WindowSpec::Hop { size, .. }) => {
                let mut windows = TimeWindows::of(duration(size));
                if let Some(WindowSpec::Hop { slide, .. }) = a.window {
                    windows = windows.advance_by(duration(slide));
                }
                let t = grouped
                    .windowed_by(windows)
                    .aggregate_into(&store, agg_fns, store_serde);
                key_names.push("window_start".into());
                (
                    t.to_stream().try_map(move |w, s| to_rows(&w, s)),
                    with_ts(key_types),
                )
            }
            Some(WindowSpec::Session { gap }) => {
                let t = grouped
                    .windowed_by_session(SessionWindows::with_inactivity_gap(duration(gap)))
                    .aggregate_into(&store, agg_fns, store_serde);
                key_names.push("window_start".into());
                (
                    t.to_stream().try_map(move |w, s| to_rows(&w, s)),
                    with_ts(key_types),
                )
            }
            None => {
                let fns = AggFns {
                    merge: None,
                    ..agg_fns
                };
                let t = grouped.aggregate_into(&store, fns, store_serde);
                let stream = t.to_stream().try_map(move |k, s: Option<Vec<Row>>| {
                    let row = s.map(|s| out_row3(&k, None, &s)).transpose()?;
                    Ok((k, row))
                });
                (stream, key_types)
            }
        };
        Ok(Lowered {
            stream: stream.with_serdes(RowCodec, RowCodec),
            key_names,
            key_types,
        })
    }

    /// An upsert stream as retractions and additions, its last rows in a store named after
    /// `self.stores` (see [`super::changes`]).
    fn changes(&mut self, stream: Stream, stmt: usize) -> Stream {
        self.stores += 1;
        let last = format!("sql-{stmt}-last-rows-{}", self.stores);
        self.b.add_kv_store::<Row, Row>(&last, RowCodec, RowCodec);
        let store = last.clone();
        stream.with_serdes(RowCodec, RowCodec).process(
            move || Changes {
                store: store.clone(),
            },
            &[&last],
        )
    }

    /// `OVER (...)`: the rows keyed by their partition, with the window functions' arguments
    /// (over an upsert stream, as changes), into the window operator ([`super::over`]).
    fn over(&mut self, o: &OverStep, stmt: usize) -> Result<Lowered> {
        let upsert = o.input.is_upsert();
        let in_schema = o.input.schema();
        let lowered = self.lower(&o.input, stmt)?;
        let mut pre: Vec<PhysExpr> = o.partition_by.clone();
        let mut aggregates = Vec::new();
        let mut arg_ranges = Vec::new();
        let mut columns = Vec::new();
        for f in &o.functions {
            columns.push(match f {
                OverFunction::Aggregate(a) => {
                    let args = a.expressions();
                    let at = pre.len() - o.partition_by.len();
                    arg_ranges.push(at..at + args.len());
                    pre.extend(args);
                    aggregates.push(a.clone());
                    Some(aggregates.len() - 1)
                }
                OverFunction::RowNumber => None,
            });
        }
        let nparts = o.partition_by.len();
        let spec = Arc::new(OverSpec {
            order: Arc::new(Order(o.order_by.clone())),
            frame: o.frame,
            columns,
            fns: AccumulatorFns {
                aggregates,
                arg_ranges,
                retracting: o.frame.bounded(),
            },
            row_len: in_schema.fields().len(),
            args_len: pre.len() - nparts,
            upsert,
        });
        let (key_names, key_types) = if upsert {
            (lowered.key_names.clone(), lowered.key_types.clone())
        } else {
            let types = o
                .partition_by
                .iter()
                .map(|e| e.data_type(&in_schema))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| EngineError::Job(e.strip_backtrace()))?;
            (o.partition_names.clone(), types)
        };
        let input = if upsert {
            self.changes(lowered.stream, stmt)
        } else {
            lowered.stream
        };
        let keyed = input.map_batch(
            "SQL-OVER-PARTITION",
            Arc::new(
                move |batch: Vec<Rec<Row, Option<Row>>>, refused: &mut Vec<Refused>| {
                    let (batch, changes) = if upsert {
                        let (batch, changes) = changes_of(batch);
                        (batch, changes.into_iter().map(Some).collect())
                    } else {
                        let n = batch.len();
                        (batch, vec![None; n])
                    };
                    Ok(split_evaluated(&in_schema, batch, &pre, nparts, refused)?
                        .zip(changes)
                        .filter_map(|(v, change)| {
                            let (r, part, args) = v?;
                            let (key, row) = (r.key.clone(), r.value.clone()?);
                            Some(r.with(part, pack(row, args, change.map(|c| (key, c)))))
                        })
                        .collect())
                },
            ),
            true,
        );
        self.stores += 1;
        let store = format!("sql-{stmt}-over-{}", self.stores);
        let stream = over::operator(keyed.with_serdes(RowCodec, RowCodec), spec, &store);
        Ok(Lowered {
            stream: stream.with_serdes(RowCodec, RowCodec),
            key_names,
            key_types,
        })
    }

    /// `GROUP BY` over an upsert stream: see [`super::changes`].
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
        let stream = table
            .to_stream()
            .try_map(move |key: Row, states: Option<Vec<Row>>| {
                let row = states.filter(|s| f2.rows(s) > 0).map(|s| {
                    let mut values: Vec<ScalarValue> = group_columns
                        .iter()
                        .map(|c| {
                            key.0[*c.as_ref().expect("no window over an upsert stream")].clone()
                        })
                        .collect();
                    values.extend(f2.evaluate(&s)?);
                    Ok::<_, String>(Row(values))
                });
                Ok((key, row.transpose()?))
            });
        Lowered {
            stream: stream.with_serdes(RowCodec, RowCodec),
            key_names: a.key_names.clone(),
            key_types: a.schema.fields()[..a.keys.len()]
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
        }
    }

    fn join(&mut self, j: &JoinStep, stmt: usize) -> Result<Lowered> {
        if j.left.is_upsert() {
            return Err(EngineError::Job(format!(
                "{}: the left side of a join must be a stream, not the result of a GROUP BY",
                self.job.path.display()
            )));
        }
        let keyed = self
            .keyed_by(&j.left, &j.left_keys, stmt, "SQL-JOIN-KEY")?
            .with_serdes(Self::key_serde(&j.right), RowCodec);
        let table = self.table(&j.right);
        let right_nulls = nulls(&j.right_schema);
        let joined = if j.left_outer {
            keyed.left_join(&table, move |l: &Option<Row>, r: Option<&Option<Row>>| {
                let mut row = l.clone()?;
                row.0.extend(
                    r.and_then(|r| r.clone())
                        .unwrap_or_else(|| right_nulls.clone())
                        .0,
                );
                Some(row)
            })
        } else {
            keyed.join(&table, |l: &Option<Row>, r: &Option<Row>| {
                let mut row = l.clone()?;
                row.0.extend(r.clone()?.0);
                Some(row)
            })
        };
        let joined = match &j.filter {
            None => joined,
            Some(filter) => {
                // A left join keeps a row whose match fails the condition, without the match.
                let unmatched = j
                    .left_outer
                    .then(|| (j.left.schema().fields().len(), nulls(&j.right_schema)));
                join_condition(joined, &j.schema, filter, unmatched)
            }
        };
        let key = Self::key_serde(&j.right);
        Ok(Lowered {
            stream: joined.with_serdes(Self::key_serde(&j.right), RowCodec),
            key_names: key.names,
            key_types: key.types,
        })
    }

    /// Writes a statement's result to its output: from chunks where the statement is
    /// stateless over a stream input, else from rows.
    fn sink(&mut self, root: &Step, stmt: usize, output: &OutputDecl) -> Result<()> {
        let schema = root.schema();
        let values = RowEncoder {
            schema: schema.clone(),
            format: output.format,
        };
        if chunkable(root) {
            let key = self.key_columns(&schema, output)?.map(|(idx, types)| {
                let names = output.key.clone().unwrap_or_default();
                (idx, KeySerde { names, types })
            });
            let encoder = Arc::new(ChunkEncoder::new(values, key));
            self.chunks(root).to_rows(
                &output.topic,
                Arc::new(
                    move |r: Rec<(), Chunk>, topic: &Arc<str>, out: &mut OutBuf| {
                        encoder.write(r.value, topic, out)
                    },
                ),
            );
            return Ok(());
        }
        let lowered = self.lower(root, stmt)?;
        let (stream, names, types) = match self.key_columns(&schema, output)? {
            None => (lowered.stream, lowered.key_names, lowered.key_types),
            Some((idx, types)) => {
                let stream = lowered.stream.map(move |k, v: Option<Row>| {
                    let key = match &v {
                        Some(r) => Row(idx.iter().map(|i| r.0[*i].clone()).collect()),
                        None => k,
                    };
                    (key, v)
                });
                (stream, output.key.clone().unwrap_or_default(), types)
            }
        };
        stream.to(
            &output.topic,
            Produced::with(KeySerde { names, types }, values),
        );
        Ok(())
    }

    /// The positions and types of the output's declared key columns in the statement's result.
    fn key_columns(
        &self,
        schema: &SchemaRef,
        output: &OutputDecl,
    ) -> Result<Option<(Vec<usize>, Vec<DataType>)>> {
        let Some(cols) = &output.key else {
            return Ok(None);
        };
        let idx = cols
            .iter()
            .map(|c| {
                schema.index_of(c).map_err(|_| {
                    EngineError::Job(format!(
                        "{}: output {}: key column {c:?} is not in the statement's SELECT list ({})",
                        self.job.path.display(),
                        output.name,
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let types = idx
            .iter()
            .map(|i| schema.field(*i).data_type().clone())
            .collect();
        Ok(Some((idx, types)))
    }
}

/// Applies a join's extra condition to the joined rows: a pair that fails it is dropped, or,
/// with `unmatched = (left columns, right nulls)`, kept with its right side nulled.
fn join_condition(
    joined: Stream,
    schema: &SchemaRef,
    filter: &PhysExpr,
    unmatched: Option<(usize, Row)>,
) -> Stream {
    let (schema, filter) = (schema.clone(), filter.clone());
    joined.map_batch(
        "SQL-JOIN-FILTER",
        Arc::new(
            move |batch: Vec<Rec<Row, Option<Row>>>, refused: &mut Vec<Refused>| {
                let keep: Vec<bool> =
                    evaluate(&schema, &batch, std::slice::from_ref(&filter), refused)?
                        .into_iter()
                        .map(|v| v.is_some_and(|v| v.0[0] == ScalarValue::Boolean(Some(true))))
                        .collect();
                Ok(batch
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, mut r)| match (&unmatched, keep[i]) {
                        (_, true) => Some(r),
                        (Some((left_len, right_nulls)), false) => {
                            if let Some(v) = r.value.as_mut() {
                                v.0.truncate(*left_len);
                                v.0.extend(right_nulls.0.iter().cloned());
                            }
                            Some(r)
                        }
                        (None, false) => None,
                    })
                    .collect())
            },
        ),
        false,
    )
}

fn with_ts(mut types: Vec<DataType>) -> Vec<DataType> {
    types.push(DataType::Timestamp(
        datafusion::arrow::datatypes::TimeUnit::Millisecond,
        None,
    ));
    types
}

/// DataFusion accumulators driven one record at a time, their states kept as rows.
pub(super) struct AccumulatorFns {
    pub(super) aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Each aggregate's arguments among the argument values.
    pub(super) arg_ranges: Vec<std::ops::Range<usize>>,
    /// Retractable ("sliding") accumulators: the input is an upsert stream's changes (see
    /// [`super::changes`]; the states then end with a row count), or an OVER window's frame
    /// moves on.
    pub(super) retracting: bool,
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

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// What an accumulator call returns: its value, or why it failed.
type Acc<T> = std::result::Result<T, String>;

impl AccumulatorFns {
    /// Folds `(record, key values ++ argument values)` rows: see [`Self::fold_columns`].
    fn fold(
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
    fn fold_columns(
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
            .map(|(rec, rows)| {
                let first = rows[0] as usize;
                let rows = UInt32Array::from(rows);
                let whole = rows.len() == arg_columns.first().map_or(0, |c| c.len());
                let key = key_columns
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, first))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(why("cannot read a value"))?;
                let states = (0..self.aggregates.len())
                    .map(|i| {
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
    fn apply(&self, mut states: Vec<Row>, args: &Row, retract: bool) -> Acc<Vec<Row>> {
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
    pub(super) fn feed<'a>(
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
    fn rows(&self, states: &[Row]) -> i64 {
        match states.get(self.aggregates.len()).map(|r| &r.0[..]) {
            Some([ScalarValue::Int64(Some(n))]) => *n,
            _ => 0,
        }
    }

    pub(super) fn accumulator(&self, i: usize, state: Option<&Row>) -> Acc<Box<dyn Accumulator>> {
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

    pub(super) fn state(&self, i: usize, mut acc: Box<dyn Accumulator>) -> Acc<Row> {
        let what = format!("cannot read the state of {}", self.aggregates[i].name());
        acc.state().map(Row).map_err(why(&what))
    }

    fn merge(&self, x: Vec<Row>, y: Vec<Row>) -> Acc<Vec<Row>> {
        if x.is_empty() {
            return Ok(y);
        }
        if y.is_empty() {
            return Ok(x);
        }
        (0..self.aggregates.len())
            .map(|i| {
                let mut acc = self.accumulator(i, Some(&x[i]))?;
                acc.merge_batch(&state_arrays(&y[i])?)
                    .map_err(why(&format!("cannot merge {}", self.aggregates[i].name())))?;
                self.state(i, acc)
            })
            .collect()
    }

    fn evaluate(&self, states: &[Row]) -> Acc<Vec<ScalarValue>> {
        (0..self.aggregates.len())
            .map(|i| {
                let mut acc = self.accumulator(i, states.get(i))?;
                acc.evaluate().map_err(why(&format!(
                    "cannot evaluate {}",
                    self.aggregates[i].name()
                )))
            })
            .collect()
    }
}
