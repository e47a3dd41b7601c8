//! The batch oracle: a job's statements run by DataFusion in batch mode over whole inputs, to
//! check the streaming results against an independent computation.
//!
//! Windows are computed here in SQL from each row's event time (integer arithmetic for tumbling
//! and hopping windows; `LAG` and running sums for sessions), not by the engine's window
//! operators. A window's late records are not modelled: compare with jobs whose inputs are in
//! order within the watermark. `OVER (...)` windows are DataFusion's own window functions.

use super::job::JobFile;
use super::plan::{WindowSpec, block_on, rewritten_statements};
use super::row::{Row, from_batch, to_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use runnel_engine::error::{EngineError, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// One statement's batch result.
pub struct BatchResult {
    pub output: String,
    pub schema: SchemaRef,
    pub rows: Vec<Row>,
}

fn df(e: datafusion::error::DataFusionError) -> EngineError {
    EngineError::Job(format!("oracle: {}", e.strip_backtrace()))
}

/// Runs every statement of `job` over `inputs` (rows per input name, in its schema).
///
/// # Errors
///
/// `EngineError::Job`: a statement the oracle cannot rewrite, or DataFusion's error planning or
/// running it over the inputs.
///
/// # Panics
///
/// If an input row has fewer values than its input's schema.
pub fn run(job: &JobFile, inputs: &HashMap<String, Vec<Row>>) -> Result<Vec<BatchResult>> {
    let mut results = Vec::new();
    for (output, query, window) in rewritten_statements(job)? {
        let ctx = SessionContext::new();
        for input in &job.inputs {
            let rows = inputs.get(&input.name).cloned().unwrap_or_default();
            let mut fields: Vec<Field> = input
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new("_ts_ms", DataType::Int64, true));
            let schema = Arc::new(Schema::new(fields));
            let with_ts: Vec<Row> = rows
                .into_iter()
                .map(|mut r| {
                    let ts = input.event_time.and_then(|i| super::row::millis(&r.0[i]));
                    r.0.push(ScalarValue::Int64(ts));
                    r
                })
                .collect();
            let refs: Vec<&Row> = with_ts.iter().collect();
            let batch = to_batch(&schema, &refs).map_err(EngineError::Job)?;
            let raw = format!("__raw_{}", input.name);
            ctx.register_table(
                raw.as_str(),
                Arc::new(MemTable::try_new(schema, vec![vec![batch]]).map_err(df)?),
            )
            .map_err(df)?;
            let cols: Vec<String> = input
                .schema
                .fields()
                .iter()
                .map(|f| format!("\"{}\"", f.name()))
                .collect();
            let cols = cols.join(", ");
            // The same inputs get window columns as in planning: streams cut on that time.
            let cut = window.as_ref().filter(|w| {
                input.key.is_none()
                    && input.event_time.map(|i| input.schema.field(i).name())
                        == Some(&w.time_column)
            });
            let view = match cut {
                None => format!("SELECT {cols} FROM {raw}"),
                Some(w) => window_view(&cols, &raw, w.spec, &w.partition_by),
            };
            let frame = block_on(ctx.sql(&view)).map_err(df)?;
            ctx.register_table(input.name.as_str(), frame.into_view())
                .map_err(df)?;
        }
        let plan = block_on(ctx.state().statement_to_plan(
            datafusion::sql::parser::Statement::Statement(Box::new(Statement::Query(query))),
        ))
        .map_err(df)?;
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let batches = block_on(async { ctx.execute_logical_plan(plan).await?.collect().await })
            .map_err(df)?;
        let mut rows = Vec::new();
        for b in &batches {
            rows.extend(from_batch(b).map_err(EngineError::Job)?);
        }
        results.push(BatchResult {
            output: output.name,
            schema,
            rows,
        });
    }
    Ok(results)
}

/// The input with `window_start` and `window_end` columns: one row per window it falls in.
fn window_view(cols: &str, raw: &str, spec: WindowSpec, partition_by: &[String]) -> String {
    let ts = |e: &str| format!("to_timestamp_millis({e})");
    match spec {
        WindowSpec::Tumble { size } => format!(
            "SELECT {cols}, {} AS window_start, {} AS window_end FROM {raw}",
            ts(&format!("_ts_ms - (_ts_ms % {size})")),
            ts(&format!("_ts_ms - (_ts_ms % {size}) + {size}"))
        ),
        WindowSpec::Hop { size, slide } => {
            let copies = (size + slide - 1) / slide;
            (0..copies)
                .map(|i| {
                    format!(
                        "SELECT {cols}, {} AS window_start, {} AS window_end FROM \
                         (SELECT *, _ts_ms - (_ts_ms % {slide}) - {} AS __ws FROM {raw}) WHERE _ts_ms < __ws + {size}",
                        ts("__ws"),
                        ts(&format!("__ws + {size}")),
                        i * slide
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        }
        WindowSpec::PerUpstreamWindow => {
            unreachable!("a window written in SQL is tumble, hop or session")
        }
        WindowSpec::Session { gap } => {
            let by = if partition_by.is_empty() {
                String::new()
            } else {
                format!("PARTITION BY {}", partition_by.join(", "))
            };
            let by_sid = if partition_by.is_empty() {
                "PARTITION BY __sid".to_string()
            } else {
                format!("PARTITION BY {}, __sid", partition_by.join(", "))
            };
            format!(
                "SELECT {cols}, {} AS window_start, {} AS window_end FROM \
                 (SELECT *, SUM(__new) OVER ({by} ORDER BY _ts_ms ROWS UNBOUNDED PRECEDING) AS __sid FROM \
                  (SELECT *, CASE WHEN _ts_ms - LAG(_ts_ms) OVER ({by} ORDER BY _ts_ms) <= {gap} THEN 0 ELSE 1 END AS __new FROM {raw}))",
                ts(&format!("MIN(_ts_ms) OVER ({by_sid})")),
                ts(&format!("MAX(_ts_ms) OVER ({by_sid})")),
            )
        }
    }
}

/// Rows of a whole input file, decoded as the job would (lines that do not decode are skipped:
/// the job sends them to its dead-letter topic).
pub fn decode_lines(job: &JobFile, input: &str, lines: &[Vec<u8>]) -> Vec<Row> {
    let Some((_, decl)) = job.input(input) else {
        return vec![];
    };
    let decoder = super::row::RowDecoder {
        schema: decl.schema.clone(),
        format: decl.format,
        extra_nulls: vec![],
    };
    lines
        .iter()
        .filter_map(|l| decoder.decode(l).ok())
        .collect()
}
