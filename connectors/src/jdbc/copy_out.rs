//! Rows of PostgreSQL as JSON objects through `COPY (SELECT ...) TO STDOUT`, for `jdbc-source`.
//!
//! `row_to_json` on the server costs it three times what the `COPY` of the same rows does, and
//! decoding rows one by one through sqlx's `Any` driver costs the client as much again. So
//! the columns are copied out as CSV (one stream, no per-row round trip, read by
//! [`crate::csv::Reader::postgres`]), and the client
//! writes each row's JSON object itself, as `row_to_json` renders it and as serde_json
//! serializes it: keys in name order, compact. Integers, floats and numerics are written as
//! they come (`NaN` and the infinities as strings, as `to_json` does), booleans as
//! `true`/`false`, text types as JSON strings; any other type is rendered by the server
//! (`to_json(column)::text`: timestamps in ISO 8601, arrays, JSON as it is).
//!
//! `COPY` takes no bind parameters: the caller inlines its values with [`literal`]. A
//! [`Copy`](struct@Copy) is read a batch at a time and may stay open across polls.

use crate::csv;
use crate::error::{ConnectError, Result};
use crate::jdbc::{self, Dialect};
use bytes::Bytes;
use futures_core::Stream;
use serde_json::Value;
use sqlx::{Column, Executor, Statement, TypeInfo};
use std::pin::Pin;

/// How a column's text becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Render {
    /// Digits as they are (`NaN`, `Infinity`: as strings).
    Number,
    /// `t` / `f`.
    Bool,
    /// A JSON string.
    Text,
    /// JSON text the server rendered.
    Json,
}

/// The columns of one table or query, in name order.
#[derive(Debug, Clone)]
pub struct Columns {
    names: Vec<String>,
    /// `"name":` as JSON, with the `{` or `,` before it.
    prefixes: Vec<Vec<u8>>,
    render: Vec<Render>,
}

impl Columns {
    /// The columns of `sql_from` (a quoted table or a parenthesized query), from the statement
    /// PostgreSQL prepares for it.
    pub async fn learn(pool: &sqlx::PgPool, url: &str, sql_from: &str) -> Result<Self> {
        let sql = format!("SELECT * FROM {sql_from} q");
        let statement = pool
            .prepare(&sql)
            .await
            .map_err(|e| jdbc::db_error(url, e))?;
        let mut columns: Vec<(String, Render)> = statement
            .columns()
            .iter()
            .map(|c| {
                let render = match c.type_info().name() {
                    "INT2" | "INT4" | "INT8" | "OID" | "FLOAT4" | "FLOAT8" | "NUMERIC" => {
                        Render::Number
                    }
                    "BOOL" => Render::Bool,
                    "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Render::Text,
                    _ => Render::Json,
                };
                (c.name().to_string(), render)
            })
            .collect();
        columns.sort_by(|a, b| a.0.cmp(&b.0));
        let prefixes = columns
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let mut p = vec![if i == 0 { b'{' } else { b',' }];
                serde_json::to_writer(&mut p, name).expect("a string serializes");
                p.push(b':');
                p
            })
            .collect();
        Ok(Self {
            names: columns.iter().map(|(n, _)| n.clone()).collect(),
            render: columns.iter().map(|(_, r)| *r).collect(),
            prefixes,
        })
    }

    /// The index of the column `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The select list over the alias `q`.
    pub fn select_list(&self) -> String {
        let d = Dialect::Postgres;
        self.names
            .iter()
            .zip(&self.render)
            .map(|(n, r)| match r {
                Render::Json => format!("to_json(q.{})::text", d.quote(n)),
                _ => format!("q.{}", d.quote(n)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Writes one record of `COPY`'s CSV as a JSON object into `out`, and the text of column
    /// `key_column` into `key` (`None`: NULL).
    fn row(
        &self,
        record: &csv::Record,
        out: &mut Vec<u8>,
        key_column: Option<usize>,
        key: &mut Option<Vec<u8>>,
    ) -> std::result::Result<(), String> {
        *key = None;
        if record.len() != self.names.len() {
            return Err(format!(
                "a row of {} fields where the query has {} columns",
                record.len(),
                self.names.len()
            ));
        }
        for (i, render) in self.render.iter().enumerate() {
            out.extend_from_slice(&self.prefixes[i]);
            let Some(Some(text)) = record.get(i) else {
                out.extend_from_slice(b"null");
                continue;
            };
            match render {
                Render::Number if matches!(text, b"NaN" | b"Infinity" | b"-Infinity") => {
                    out.push(b'"');
                    out.extend_from_slice(text);
                    out.push(b'"');
                }
                Render::Number | Render::Json => out.extend_from_slice(text),
                Render::Bool => {
                    out.extend_from_slice(if text == b"t" { &b"true"[..] } else { b"false" })
                }
                Render::Text => {
                    let s = std::str::from_utf8(text)
                        .map_err(|e| format!("column {:?}: {e}", self.names[i]))?;
                    serde_json::to_writer(&mut *out, s).expect("a string serializes");
                }
            }
            if key_column == Some(i) {
                *key = Some(text.to_vec());
            }
        }
        out.push(b'}');
        Ok(())
    }
}

/// A value inlined into SQL: numbers as they are, anything else as a quoted string.
pub fn literal(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_i64() => format!("'{n}'::bigint"),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => format!("'{}'", other.to_string().replace('\'', "''")),
    }
}

/// A `COPY ({select}) TO STDOUT` being read, a batch of rows at a time: the source keeps it
/// open across polls, so the server streams the next rows (into the socket's buffers) while
/// the worker writes the last batch, and the query is planned and its index scan started once
/// per stream instead of once per batch.
pub struct Copy {
    stream: Pin<Box<dyn Stream<Item = sqlx::Result<Bytes>> + Send>>,
    reader: csv::Reader,
    select: String,
}

impl Copy {
    /// Starts the `COPY` (on a connection of `pool`, held until the copy ends or is dropped).
    pub async fn start(pool: &sqlx::PgPool, url: &str, select: String) -> Result<Self> {
        use sqlx::postgres::PgPoolCopyExt;
        let stream = pool
            .copy_out_raw(&format!(
                "COPY ({select}) TO STDOUT {}",
                csv::POSTGRES_COPY_OPTIONS
            ))
            .await
            .map_err(|e| jdbc::db_error(url, e))?;
        Ok(Self {
            stream,
            reader: csv::Reader::postgres(),
            select,
        })
    }

    /// Hands rows to `each`, each as its JSON object (see [`Columns`]) and the text of its
    /// column `key_column` unless NULL, until at least `max` rows were handed (stopping at the
    /// end of a message of the stream: PostgreSQL sends a row per message) or the copy ended.
    /// Returns how many rows, and whether the copy ended.
    ///
    /// Cancel safety: not cancel safe (a message read and not yet handed on is lost).
    pub async fn take(
        &mut self,
        url: &str,
        columns: &Columns,
        key_column: Option<usize>,
        max: usize,
        mut each: impl FnMut(&[u8], Option<&[u8]>),
    ) -> Result<(usize, bool)> {
        let (mut json, mut key, mut rows) = (Vec::new(), None, 0);
        let select = &self.select;
        // Hands on the rows `chunk` completes (the rest of the copy's rows when it is empty);
        // returns how many.
        let mut feed = |reader: &mut csv::Reader, chunk: &[u8]| {
            let mut fed = 0;
            reader.feed(chunk, |record: &csv::Record| {
                json.clear();
                columns
                    .row(record, &mut json, key_column, &mut key)
                    .map_err(|message| ConnectError::Record {
                        what: format!("{select} (COPY TO STDOUT)"),
                        message,
                    })?;
                each(&json, key.as_deref());
                fed += 1;
                Ok::<(), ConnectError>(())
            })?;
            Ok::<usize, ConnectError>(fed)
        };
        while rows < max {
            match next(&mut self.stream).await {
                Some(chunk) => {
                    let chunk = chunk.map_err(|e| jdbc::db_error(url, e))?;
                    // The reader completes a row split across messages.
                    if !chunk.is_empty() {
                        rows += feed(&mut self.reader, &chunk)?;
                    }
                }
                None => {
                    rows += feed(&mut self.reader, &[])?;
                    return Ok((rows, true));
                }
            }
        }
        Ok((rows, false))
    }
}

async fn next<T>(stream: &mut Pin<Box<dyn Stream<Item = T> + Send>>) -> Option<T> {
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_csv_rows_become_json_objects_as_row_to_json_renders_them() {
        let columns = Columns {
            names: vec!["a".into(), "b".into(), "c".into(), "d".into(), "e".into()],
            prefixes: ["a", "b", "c", "d", "e"]
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{}\"{n}\":", if i == 0 { '{' } else { ',' }).into_bytes())
                .collect(),
            render: vec![
                Render::Number,
                Render::Text,
                Render::Bool,
                Render::Json,
                Render::Number,
            ],
        };
        // Each line of COPY's CSV as a JSON object, with the key column's text.
        let rows = |text: &[u8]| {
            let (mut rows, mut reader) = (Vec::new(), csv::Reader::postgres());
            let mut row = |r: &csv::Record| {
                let (mut out, mut key) = (Vec::new(), None);
                columns.row(r, &mut out, Some(0), &mut key)?;
                rows.push((String::from_utf8(out).unwrap(), key));
                Ok::<_, String>(())
            };
            reader.feed(text, &mut row).unwrap();
            reader.feed(&[], &mut row).unwrap();
            rows
        };
        let got = rows(b"7,\"say \"\"hi\"\"\\\tthere\",t,\"{\"\"x\"\": [1]}\",\\N\n\\N,x,f,1,2\n");
        assert_eq!(
            got[0],
            (
                r#"{"a":7,"b":"say \"hi\"\\\tthere","c":true,"d":{"x": [1]},"e":null}"#.to_string(),
                Some(b"7".to_vec())
            )
        );
        assert_eq!(got[1].1, None);
        assert_eq!(literal(&Value::from("it's")), "'it''s'");
        assert_eq!(literal(&Value::from(-3)), "'-3'::bigint");
    }
}
