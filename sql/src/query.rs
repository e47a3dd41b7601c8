//! Interactive queries of a SQL job's outputs (ksqlDB's pull queries): the current rows of an
//! output whose statement ends in a `GROUP BY` (windowed or not), read by key from the state
//! store of the task that holds the key, as the output would show them now.
//!
//! Contract: an output is queryable when its statement is a `GROUP BY` followed only by
//! `WHERE`/`HAVING` filters and projections ([`QueryView`]; others have none). A query reads
//! the aggregation's store through the engine ([`runnel_engine::App::query_table`]), turns
//! each key's states into the aggregate's row as the job's stream does, then applies the
//! statement's filters and projections above it, so an answer's rows are the output's
//! columns. The key is the `GROUP BY` columns' values: one value as text, several as a JSON
//! array. Windowed outputs answer every window still open for the key (closed windows are in
//! the output topic). Each answer says what it reflects: per task the watermark and the next
//! input offset it will process (results of records before those offsets, committed or not).

use crate::build::{AggregateTable, Render};
use crate::plan::{PhysExpr, Step};
use crate::row::{Row, timestamp, to_json};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use runnel_engine::App;
use runnel_engine::error::{EngineError, Result};
use runnel_engine::operator::Refused;
use runnel_engine::record::{Rec, Window};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// A filter or projection above the aggregate, applied to the rows a query reads.
enum Above {
    Filter {
        schema: SchemaRef,
        upsert: bool,
        predicate: PhysExpr,
    },
    Project {
        schema: SchemaRef,
        exprs: Vec<PhysExpr>,
    },
}

/// A queryable output: see the module documentation.
pub struct QueryView {
    /// The output's name (`[[output]] name`).
    pub output: String,
    /// The key a query gives: the `GROUP BY` columns.
    pub key_names: Vec<String>,
    key_types: Vec<DataType>,
    store: String,
    render: Render,
    /// Whether the aggregate's result key ends with the window's start.
    window: bool,
    /// Bottom-up: the first applies to the aggregate's rows.
    above: Vec<Above>,
    columns: Vec<String>,
}

impl QueryView {
    /// The view of a statement's result, when it is queryable; `table` is the aggregate the
    /// statement's lowering built last (the one under its filters and projections).
    pub(crate) fn of(output: &str, root: &Step, table: Option<AggregateTable>) -> Option<Self> {
        let mut above = Vec::new();
        let mut step = root;
        loop {
            match step {
                Step::Filter { input, predicate } => {
                    above.push(Above::Filter {
                        schema: input.schema(),
                        upsert: input.is_upsert(),
                        predicate: predicate.clone(),
                    });
                    step = input;
                }
                Step::Project { input, exprs, .. } => {
                    above.push(Above::Project {
                        schema: input.schema(),
                        exprs: exprs.clone(),
                    });
                    step = input;
                }
                Step::Aggregate(_) => break,
                _ => return None,
            }
        }
        above.reverse();
        let table = table?;
        Some(Self {
            output: output.to_string(),
            key_names: table.key_names,
            key_types: table.key_types,
            store: table.store,
            render: table.render,
            window: table.window,
            above,
            columns: root
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        })
    }

    /// The key's values from a query's text: one column's value as text, several as a JSON
    /// array of values.
    fn parse_key(&self, text: &str) -> std::result::Result<Row, String> {
        let texts: Vec<String> = if self.key_types.len() == 1 {
            vec![text.to_string()]
        } else {
            let values: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| {
                format!(
                    "the key has {} columns ({}): give them as a JSON array ({e})",
                    self.key_types.len(),
                    self.key_names.join(", ")
                )
            })?;
            if values.len() != self.key_types.len() {
                return Err(format!(
                    "the key has {} columns ({}), the array {}",
                    self.key_types.len(),
                    self.key_names.join(", "),
                    values.len()
                ));
            }
            values
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect()
        };
        let values = texts
            .iter()
            .zip(&self.key_types)
            .zip(&self.key_names)
            .map(|((t, ty), name)| {
                ScalarValue::try_from_string(t.clone(), ty)
                    .map_err(|e| format!("key column {name} ({ty}): cannot read {t:?}: {e}"))
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(Row(values))
    }

    /// The output's rows from one task's table rows.
    fn rows(
        &self,
        table: Vec<(Row, Option<Window>, Vec<Row>)>,
    ) -> std::result::Result<Vec<serde_json::Value>, String> {
        let mut batch = Vec::new();
        for (key, window, states) in table {
            let Some(row) = (self.render)(&key, window.map(|w| (w.start, w.end)), &states)? else {
                continue;
            };
            let mut key = key;
            if let Some(w) = window.filter(|_| self.window) {
                key.0.push(timestamp(Some(w.start)));
            }
            let time = window.map_or(0, |w| w.end - 1);
            batch.push(Rec::new(key, Some(row), time));
        }
        let mut refused: Vec<Refused> = Vec::new();
        for step in &self.above {
            batch = match step {
                Above::Filter {
                    schema,
                    upsert,
                    predicate,
                } => crate::build::filter_batch(schema, *upsert, predicate, batch, &mut refused)?,
                Above::Project { schema, exprs } => {
                    crate::build::project_batch(schema, exprs, batch, &mut refused)?
                }
            };
        }
        if let Some(r) = refused.first() {
            return Err(format!(
                "a row of the output cannot be computed: {}",
                r.reason
            ));
        }
        Ok(batch
            .into_iter()
            .filter_map(|r| r.value)
            .map(|row| {
                let object = self
                    .columns
                    .iter()
                    .zip(&row.0)
                    .map(|(c, v)| (c.clone(), to_json(v)))
                    .collect();
                serde_json::Value::Object(object)
            })
            .collect())
    }
}

/// What a query answered.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// The output's rows for the key (or every key), in no particular order.
    pub rows: Vec<serde_json::Value>,
    /// Per task, what the answer reflects.
    pub tasks: Vec<TaskPosition>,
}

/// Where one task was when it answered.
#[derive(Debug, Serialize)]
pub struct TaskPosition {
    pub task: String,
    /// Event time (ms) of the task's watermark, if it has one.
    pub watermark: Option<i64>,
    /// Per input partition, the next offset the task will process.
    pub positions: Vec<InputPosition>,
}

#[derive(Debug, Serialize)]
pub struct InputPosition {
    pub topic: String,
    pub partition: u32,
    pub offset: Option<u64>,
}

/// Reads `view`'s rows for `key` (or every key) from `app`'s tasks.
///
/// # Errors
///
/// - `EngineError::Job` for a key that does not parse as the key columns' values (naming the
///   column and the way to give it), or when a task cannot compute its rows;
/// - `EngineError::Query` when the job is not running or a worker does not answer in `timeout`.
pub fn query(
    app: &App,
    view: &Arc<QueryView>,
    key: Option<&str>,
    timeout: Duration,
) -> Result<Answer> {
    let key = key
        .map(|k| view.parse_key(k))
        .transpose()
        .map_err(EngineError::Job)?;
    let v = view.clone();
    let answers =
        app.query_table::<Row, Vec<Row>, _>(&view.store, key, timeout, move |t| v.rows(t))?;
    let mut answer = Answer {
        rows: Vec::new(),
        tasks: Vec::new(),
    };
    for a in answers {
        answer.rows.extend(a.value.map_err(|e| {
            EngineError::Job(format!("output {}: task {}: {e}", view.output, a.task))
        })?);
        answer.tasks.push(TaskPosition {
            task: a.task,
            watermark: a.watermark,
            positions: a
                .positions
                .into_iter()
                .map(|(topic, partition, offset)| InputPosition {
                    topic,
                    partition,
                    offset,
                })
                .collect(),
        });
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(key_types: Vec<DataType>) -> QueryView {
        QueryView {
            output: "out".into(),
            key_names: (0..key_types.len()).map(|i| format!("k{i}")).collect(),
            key_types,
            store: "s".into(),
            render: Arc::new(|_, _, _| Ok(None)),
            window: false,
            above: Vec::new(),
            columns: Vec::new(),
        }
    }

    #[test]
    fn keys_parse_as_their_columns_values() {
        let one = view(vec![DataType::Int64]);
        assert_eq!(
            one.parse_key("42").unwrap(),
            Row(vec![ScalarValue::Int64(Some(42))])
        );
        let e = one.parse_key("north").unwrap_err();
        assert!(
            e.starts_with("key column k0 (Int64): cannot read \"north\""),
            "{e}"
        );
        let two = view(vec![DataType::Utf8, DataType::Int64]);
        assert_eq!(
            two.parse_key(r#"["north", 7]"#).unwrap(),
            Row(vec![
                ScalarValue::Utf8(Some("north".into())),
                ScalarValue::Int64(Some(7))
            ])
        );
        let e = two.parse_key("north").unwrap_err();
        assert!(e.contains("give them as a JSON array"), "{e}");
        let e = two.parse_key(r#"["north"]"#).unwrap_err();
        assert!(
            e.contains("the key has 2 columns (k0, k1), the array 1"),
            "{e}"
        );
    }
}
