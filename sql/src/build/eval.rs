//! Expressions over rows (every edge but the chunked ones): evaluated on one Arrow batch per
//! record batch, or row by row when that fails, so that only the rows an expression fails on
//! are refused.

use crate::plan::PhysExpr;
use crate::row::{Format, Row, RowEncoder, rows_of, to_batch, to_batch_of};
use crate::why;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use runnel_engine::operator::Refused;
use runnel_engine::record::Rec;
use runnel_engine::serdes::Serde;
use std::collections::HashSet;

/// Evaluates expressions over the `Some` rows of a batch, in order: one Arrow batch, or, if
/// that fails, row by row, so that only the rows an expression fails on are refused (sent to
/// the dead-letter topic with the reason) and get `None`.
pub(super) fn evaluate(
    schema: &SchemaRef,
    batch: &[Rec<Row, Option<Row>>],
    exprs: &[PhysExpr],
    refused: &mut Vec<Refused>,
) -> std::result::Result<Vec<Option<Row>>, String> {
    let recs: Vec<&Rec<Row, Option<Row>>> = batch.iter().filter(|r| r.value.is_some()).collect();
    let rows: Vec<&Row> = recs.iter().filter_map(|r| r.value.as_ref()).collect();
    if let Some(picked) = pick_columns(schema, &rows, exprs) {
        return Ok(picked.into_iter().map(Some).collect());
    }
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

/// Expressions that are all plain columns, picked from the rows without a round trip through
/// Arrow (keys of joins and groups, aggregate arguments); a null is typed as its column, as
/// the round trip would. `None` when an expression is not a column.
fn pick_columns(schema: &SchemaRef, rows: &[&Row], exprs: &[PhysExpr]) -> Option<Vec<Row>> {
    let columns: Vec<usize> = exprs
        .iter()
        .map(|e| e.downcast_ref::<Column>().map(Column::index))
        .collect::<Option<_>>()?;
    let pick = |r: &Row, c: usize| {
        let v = &r.0[c];
        let ty = schema.field(c).data_type();
        if v.is_null() && v.data_type() != *ty {
            ScalarValue::try_from(ty).unwrap_or(ScalarValue::Null)
        } else {
            v.clone()
        }
    };
    Some(
        rows.iter()
            .map(|r| Row(columns.iter().map(|&c| pick(r, c)).collect()))
            .collect(),
    )
}

/// The expressions over one Arrow batch of the rows, built with only the columns they read.
fn evaluate_batch(
    schema: &SchemaRef,
    rows: &[&Row],
    exprs: &[PhysExpr],
) -> std::result::Result<Vec<ArrayRef>, String> {
    let used: HashSet<usize> = exprs
        .iter()
        .flat_map(collect_columns)
        .map(|c| c.index())
        .collect();
    let batch = to_batch_of(schema, rows, |i| used.contains(&i))?;
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
        format: Format::Json,
    }
    .serialize(&Some(row.clone()), &mut out);
    out
}

/// Pairs each record with its evaluated row: records without a value (deletes of an upsert
/// stream) get `Err(())`, refused records `Ok(None)`.
pub(super) fn with_results(
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
pub(super) fn split_evaluated(
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
pub(crate) fn filter_batch(
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
pub(crate) fn project_batch(
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
pub(super) fn filter_project_batch(
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
