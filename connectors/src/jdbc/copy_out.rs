//! Rows of PostgreSQL as JSON objects through `COPY (SELECT ...) TO STDOUT`, for `jdbc-source`.
//!
//! `row_to_json` on the server costs it three times what the `COPY` of the same rows does, and
//! decoding rows one by one through sqlx's `Any` driver costs the client as much again. So
//! the columns are copied out as text (one stream, no per-row round trip), and the client
//! writes each row's JSON object itself, as `row_to_json` renders it and as serde_json
//! serializes it: keys in name order, compact. Integers, floats and numerics are written as
//! they come (`NaN` and the infinities as strings, as `to_json` does), booleans as
//! `true`/`false`, text types as JSON strings; any other type is rendered by the server
//! (`to_json(column)::text`: timestamps in ISO 8601, arrays, JSON as it is).
//!
//! `COPY` takes no bind parameters: the caller inlines its values with [`literal`].

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

    /// Writes one line of `COPY`'s text format (without its newline) as a JSON object into
    /// `out`, and the text of column `key_column` into `key` (`None`: NULL).
    fn row(
        &self,
        line: &[u8],
        out: &mut Vec<u8>,
        key_column: Option<usize>,
        key: &mut Option<Vec<u8>>,
    ) -> std::result::Result<(), String> {
        *key = None;
        let mut rest = line;
        for (i, render) in self.render.iter().enumerate() {
            let (field, next) = match memchr::memchr(b'\t', rest) {
                Some(t) => (&rest[..t], &rest[t + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            out.extend_from_slice(&self.prefixes[i]);
            if field == b"\\N" {
                out.extend_from_slice(b"null");
                continue;
            }
            let text = unescape(field);
            match render {
                Render::Number if matches!(&text[..], b"NaN" | b"Infinity" | b"-Infinity") => {
                    out.push(b'"');
                    out.extend_from_slice(&text);
                    out.push(b'"');
                }
                Render::Number | Render::Json => out.extend_from_slice(&text),
                Render::Bool => out.extend_from_slice(if &text[..] == b"t" {
                    &b"true"[..]
                } else {
                    b"false"
                }),
                Render::Text => {
                    let s = std::str::from_utf8(&text)
                        .map_err(|e| format!("column {:?}: {e}", self.names[i]))?;
                    serde_json::to_writer(&mut *out, s).expect("a string serializes");
                }
            }
            if key_column == Some(i) {
                *key = Some(text.into_owned());
            }
        }
        out.push(b'}');
        Ok(())
    }
}

/// A field of `COPY`'s text format without its backslash escapes.
fn unescape(field: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if memchr::memchr(b'\\', field).is_none() {
        return field.into();
    }
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter().copied();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'b') => out.push(8),
            Some(b'f') => out.push(12),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'v') => out.push(11),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out.into()
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

/// Runs `COPY ({select}) TO STDOUT` and hands each row to `each`: its JSON object (see
/// [`Columns`]) and the text of its column `key_column`, unless NULL.
pub async fn copy_rows(
    pool: &sqlx::PgPool,
    url: &str,
    columns: &Columns,
    select: &str,
    key_column: Option<usize>,
    mut each: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<()> {
    use sqlx::postgres::PgPoolCopyExt;
    let err = |e| jdbc::db_error(url, e);
    let mut stream = pool
        .copy_out_raw(&format!("COPY ({select}) TO STDOUT"))
        .await
        .map_err(err)?;
    let (mut json, mut key, mut partial) = (Vec::new(), None, Vec::<u8>::new());
    while let Some(chunk) = next(&mut stream).await {
        let chunk: Bytes = chunk.map_err(err)?;
        // PostgreSQL sends a row per message; a row split across messages is joined first.
        let mut data: &[u8] = &chunk;
        let joined;
        if !partial.is_empty() {
            partial.extend_from_slice(data);
            joined = std::mem::take(&mut partial);
            data = &joined;
        }
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', data) {
            json.clear();
            columns
                .row(&data[start..nl], &mut json, key_column, &mut key)
                .map_err(|message| ConnectError::Record {
                    what: format!("{} (COPY TO STDOUT)", select),
                    message,
                })?;
            each(&json, key.as_deref());
            start = nl + 1;
        }
        partial.extend_from_slice(&data[start..]);
    }
    Ok(())
}

async fn next<T>(stream: &mut Pin<Box<dyn Stream<Item = T> + Send + '_>>) -> Option<T> {
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_lines_become_json_objects_as_row_to_json_renders_them() {
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
        let (mut out, mut key) = (Vec::new(), None);
        columns
            .row(
                b"7\tsay \"hi\"\\\\\\tthere\tt\t{\"x\": [1]}\t\\N",
                &mut out,
                Some(0),
                &mut key,
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(std::mem::take(&mut out)).unwrap(),
            r#"{"a":7,"b":"say \"hi\"\\\tthere","c":true,"d":{"x": [1]},"e":null}"#
        );
        assert_eq!(key.as_deref(), Some(&b"7"[..]));
        columns
            .row(b"\\N\tx\tf\t1\t2", &mut out, Some(0), &mut key)
            .unwrap();
        assert_eq!(key, None);
        assert_eq!(literal(&Value::from("it's")), "'it''s'");
        assert_eq!(literal(&Value::from(-3)), "'-3'::bigint");
    }
}
