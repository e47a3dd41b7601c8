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
//! Here: the lowering of each step and the sinks; `chunks` reads stream inputs as Arrow
//! batches, `eval` evaluates expressions over rows, `aggregate` and `join` build those steps
//! (with [`crate::accumulator`]'s DataFusion accumulators), `over` runs in [`crate::over`].
//!
//! Failures are values: a row an expression fails on is refused (a dead letter, the rest of
//! its batch goes on); a step that fails on a whole batch or on a state (reading values back
//! from Arrow, an accumulator that cannot update, merge or evaluate) returns `Err(why)`, which
//! stops the task with an error naming the operator and the input record.

use super::accumulator::AccumulatorFns;
use super::changes::{Changes, changes_of};
use super::chunk::{Chunk, ChunkEncoder};
use super::job::{InputDecl, JobFile, OutputDecl};
use super::over::{self, Order, OverSpec, pack};
use super::plan::{JobPlan, OverFunction, OverStep, PhysExpr, Step};
use super::row::{KeySerde, Row, RowCodec, RowDecoder, RowEncoder};
use super::why;
use crate::query::QueryView;
pub(crate) use aggregate::{AggregateTable, Render};
use chunks::chunkable;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::physical_expr::expressions::Column;
pub(crate) use eval::{filter_batch, project_batch};
use eval::{filter_project_batch, split_evaluated};
use runnel_engine::dsl::{KStream, KTable, Produced, StreamsBuilder};
use runnel_engine::error::{EngineError, Result};
use runnel_engine::operator::{OutBuf, Refused};
use runnel_engine::record::Rec;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

mod aggregate;
mod chunks;
mod eval;
mod join;

type Stream = KStream<Row, Option<Row>>;

/// A lowered step: its stream and the names of its key's columns.
struct Lowered {
    stream: Stream,
    key_names: Vec<String>,
    key_types: Vec<DataType>,
}

/// Builds the topology of a planned job, and the views of its queryable outputs.
///
/// # Errors
///
/// `EngineError::Job` naming the job file: an output key column that is not in the statement's
/// SELECT list, a join whose left side is a GROUP BY result, or an expression whose type
/// DataFusion cannot derive.
pub fn build(plan: &JobPlan) -> Result<(runnel_engine::Topology, Vec<QueryView>)> {
    let b = StreamsBuilder::new();
    b.weigh::<Chunk>(|c| c.batch.num_rows() as u64);
    let mut cx = BuildCx {
        b: b.clone(),
        job: &plan.job,
        sources: HashMap::new(),
        tables: HashMap::new(),
        stores: 0,
        last_table: None,
        views: Vec::new(),
    };
    for (i, st) in plan.statements.iter().enumerate() {
        cx.sink(&st.root, i, &st.output)?;
    }
    Ok((b.build(), cx.views))
}

struct BuildCx<'a> {
    b: StreamsBuilder,
    job: &'a JobFile,
    sources: HashMap<String, KStream<(), Chunk>>,
    tables: HashMap<String, KTable<Row, Option<Row>>>,
    stores: usize,
    /// The aggregate built last, for the view of the statement it ends.
    last_table: Option<AggregateTable>,
    views: Vec<QueryView>,
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
        self.last_table = None;
        let lowered = self.lower(root, stmt)?;
        if let Some(view) = QueryView::of(&output.name, root, self.last_table.take()) {
            self.views.push(view);
        }
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
