//! Joins: a stream with a table on the table's key, and two streams within a time bound (the
//! engine's windowed stream–stream join).

use super::eval::{evaluate, with_results};
use super::{BuildCx, Lowered, Stream, duration};
use crate::job::InputDecl;
use crate::plan::{JoinStep, PhysExpr, Step, StreamJoinStep};
use crate::row::{InputSerde, Row, RowCodec, nulls};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use runnel_engine::dsl::{Consumed, JoinWindows, KTable};
use runnel_engine::error::{EngineError, Result};
use runnel_engine::operator::Refused;
use runnel_engine::record::Rec;
use std::sync::Arc;
use std::time::Duration;

impl BuildCx<'_> {
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
                        .filter_map(|(mut r, k)| {
                            let k = k.ok().flatten()?;
                            if k.0.iter().any(ScalarValue::is_null) {
                                return None;
                            }
                            let v = r.value.take();
                            Some(r.with(k, v))
                        })
                        .collect())
                },
            ),
            true,
        ))
    }

    pub(super) fn stream_join(&mut self, j: &StreamJoinStep, stmt: usize) -> Result<Lowered> {
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
            |l: &Option<Row>, r: &Option<Row>| joined(l.as_ref()?, r.as_ref()?),
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

    pub(super) fn join(&mut self, j: &JoinStep, stmt: usize) -> Result<Lowered> {
        if j.left.is_upsert() {
            return Err(EngineError::Job(format!(
                "{}: the left side of a join must be a stream, not the result of a GROUP BY",
                self.job.path.display()
            )));
        }
        let keyed = self
            .keyed_by(&j.left, &j.left_keys, stmt, "SQL-JOIN-KEY")?
            .with_serdes(Self::key_serde(&j.right), RowCodec);
        // The join's table store keeps rows in their binary form both ways: the input's serde
        // decodes JSON or CSV but writes binary, so a store restored (or read back from disk)
        // with it could not read what it wrote.
        let table = self
            .table(&j.right)
            .with_serdes(Self::key_serde(&j.right), RowCodec);
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
                joined(l.as_ref()?, r.as_ref()?)
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
}

/// A joined row: the left row's values then the right's, copied once into one allocation.
fn joined(l: &Row, r: &Row) -> Option<Row> {
    let mut row = Vec::with_capacity(l.0.len() + r.0.len());
    row.extend_from_slice(&l.0);
    row.extend_from_slice(&r.0);
    Some(Row(row))
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
