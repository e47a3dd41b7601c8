//! Stream inputs and the stateless `WHERE`/`SELECT` chains over them as [`Chunk`]s: each run
//! of input records as one Arrow batch, on which the expressions run.

use super::{BuildCx, duration};
use crate::chunk::{Chunk, ChunkDecoder, FilterProject};
use crate::job::InputDecl;
use crate::plan::Step;
use crate::why;
use runnel_engine::dsl::KStream;
use runnel_engine::operator::Refused;
use runnel_engine::record::Rec;
use runnel_log::RecordRun;
use std::sync::Arc;

/// Whether a step is a chain of `WHERE` and `SELECT` over a stream input, which runs on
/// [`Chunk`]s (the input's Arrow batches) instead of rows.
pub(super) fn chunkable(step: &Step) -> bool {
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

impl BuildCx<'_> {
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
    pub(super) fn chunks(&mut self, step: &Step) -> KStream<(), Chunk> {
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
}
