//! `jdbc-sink` (`io.confluent.connect.jdbc.JdbcSinkConnector`): JSON object records into a
//! table of SQLite, PostgreSQL or MySQL/MariaDB.
//!
//! Keys: `connection.url`, `topics`, `table.name.format` (`${topic}`), `insert.mode`
//! (`insert` | `upsert` | `update`), `pk.mode` (`none` | `record_key` | `record_value`),
//! `pk.fields`, `auto.create`, `delete.enabled` (a tombstone deletes the row, with
//! `pk.mode = record_key`), `batch.size`. Each `put` is one transaction of multi-row
//! statements, so a batch is in the table entirely or not at all; with `upsert` a replay after
//! a crash rewrites the same rows (idempotent). A database that went away fails the put; the
//! worker restarts the task with backoff and shows the error in its status until it is back.

use crate::config::ConnectorConfig;
use crate::connector::Sink;
use crate::error::{ConnectError, Result};
use crate::jdbc::{self, Dialect};
use async_trait::async_trait;
use runnel_log::ConsumerRecord;
use serde_json::{Map, Value};
use sqlx::AnyPool;
use std::collections::{BTreeMap, HashSet};

pub const KEYS: &[&str] = &[
    "connection.url",
    "topics",
    "table.name.format",
    "insert.mode",
    "pk.mode",
    "pk.fields",
    "auto.create",
    "delete.enabled",
    "batch.size",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Insert,
    Upsert,
    Update,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PkMode {
    None,
    RecordKey,
    RecordValue,
}

pub struct JdbcSink {
    url: String,
    dialect: Dialect,
    pool: Option<AnyPool>,
    topics: Vec<String>,
    table_format: String,
    mode: Mode,
    pk_mode: PkMode,
    pk_fields: Vec<String>,
    auto_create: bool,
    delete_enabled: bool,
    batch_size: usize,
    created: HashSet<String>,
}

impl JdbcSink {
    pub fn new(c: &ConnectorConfig) -> Result<Self> {
        let url = c.require("connection.url")?.to_string();
        let mode = match c.get("insert.mode").unwrap_or("insert") {
            "insert" => Mode::Insert,
            "upsert" => Mode::Upsert,
            "update" => Mode::Update,
            m => return Err(c.error(format!("insert.mode = {m:?}: use insert, upsert or update"))),
        };
        let pk_mode = match c.get("pk.mode").unwrap_or("none") {
            "none" => PkMode::None,
            "record_key" => PkMode::RecordKey,
            "record_value" => PkMode::RecordValue,
            m => {
                return Err(c.error(format!(
                    "pk.mode = {m:?}: use none, record_key or record_value"
                )));
            }
        };
        let pk_fields: Vec<String> = c
            .get("pk.fields")
            .unwrap_or(if pk_mode == PkMode::RecordKey {
                "id"
            } else {
                ""
            })
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if mode != Mode::Insert && pk_fields.is_empty() {
            return Err(c.error("insert.mode upsert or update needs pk.mode and pk.fields".into()));
        }
        if pk_mode == PkMode::None && mode != Mode::Insert {
            return Err(c.error(
                "insert.mode upsert or update needs pk.mode record_key or record_value".into(),
            ));
        }
        Ok(Self {
            dialect: Dialect::of(&url)?,
            url,
            pool: None,
            topics: c
                .require("topics")?
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            table_format: c.get("table.name.format").unwrap_or("${topic}").to_string(),
            mode,
            pk_mode,
            pk_fields,
            auto_create: c.parse_or("auto.create", false)?,
            delete_enabled: c.parse_or("delete.enabled", false)?,
            batch_size: c.parse_or("batch.size", 500usize)?.max(1),
            created: HashSet::new(),
        })
    }

    async fn pool(&mut self) -> Result<AnyPool> {
        if self.pool.is_none() {
            self.pool = Some(jdbc::connect(&self.url).await?);
        }
        Ok(self.pool.clone().expect("connected above"))
    }

    /// The row of a record: its value's fields, plus the key as the first pk field when
    /// `pk.mode = record_key`.
    fn row(&self, r: &ConsumerRecord) -> Result<Option<Map<String, Value>>> {
        let origin = || format!("{}-{} offset {}", r.topic, r.partition, r.record.offset);
        let Some(v) = r.record.value.as_deref() else {
            return Ok(None);
        };
        let mut row = match serde_json::from_slice::<Value>(v) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return Err(ConnectError::Record {
                    what: origin(),
                    message: format!("expected a JSON object, found {other}"),
                });
            }
            Err(e) => {
                return Err(ConnectError::Record {
                    what: origin(),
                    message: format!("not JSON: {e}"),
                });
            }
        };
        if self.pk_mode == PkMode::RecordKey {
            let key = key_value(r).ok_or_else(|| ConnectError::Record {
                what: origin(),
                message: "pk.mode = record_key but the record has no key".into(),
            })?;
            row.insert(self.pk_fields[0].clone(), key);
        }
        Ok(Some(row))
    }

    async fn write_table(
        &mut self,
        table: &str,
        rows: Vec<Map<String, Value>>,
        deletes: Vec<Value>,
    ) -> Result<()> {
        let pool = self.pool().await?;
        let d = self.dialect;
        let mut columns: Vec<String> = Vec::new();
        for r in &rows {
            for k in r.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
        if self.auto_create && !self.created.contains(table) && !rows.is_empty() {
            let defs: Vec<String> = columns
                .iter()
                .map(|c| {
                    let sample = rows
                        .iter()
                        .find_map(|r| r.get(c).filter(|v| !v.is_null()))
                        .unwrap_or(&Value::Null);
                    let key = self.pk_fields.contains(c);
                    format!(
                        "{} {}{}",
                        d.quote(c),
                        d.column_type(sample, key),
                        if key { " NOT NULL" } else { "" }
                    )
                })
                .collect();
            let pk = if self.pk_fields.is_empty() {
                String::new()
            } else {
                let cols: Vec<String> = self.pk_fields.iter().map(|c| d.quote(c)).collect();
                format!(", PRIMARY KEY ({})", cols.join(", "))
            };
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} ({}{pk})",
                d.quote(table),
                defs.join(", ")
            );
            sqlx::query(&sql)
                .execute(&pool)
                .await
                .map_err(|e| jdbc::db_error(&self.url, e))?;
            self.created.insert(table.to_string());
        }
        // One statement may not touch a row twice (PostgreSQL refuses): per key, the last
        // record of the batch wins, as it would row by row.
        let rows = if self.mode == Mode::Upsert {
            let pk = |r: &Map<String, Value>| -> Vec<String> {
                self.pk_fields
                    .iter()
                    .map(|f| r.get(f).map(Value::to_string).unwrap_or_default())
                    .collect()
            };
            let mut last = std::collections::HashMap::new();
            for (i, r) in rows.iter().enumerate() {
                last.insert(pk(r), i);
            }
            rows.into_iter()
                .enumerate()
                .filter(|(i, r)| last.get(&pk(r)) == Some(i))
                .map(|(_, r)| r)
                .collect()
        } else {
            rows
        };
        let mut tx = pool
            .begin()
            .await
            .map_err(|e| jdbc::db_error(&self.url, e))?;
        for chunk in rows.chunks(self.batch_size) {
            let (sql, values) = match self.mode {
                Mode::Update => {
                    for r in chunk {
                        let set: Vec<&String> = columns
                            .iter()
                            .filter(|c| !self.pk_fields.contains(c))
                            .collect();
                        let mut n = 0;
                        let mut p = || {
                            n += 1;
                            d.param(n)
                        };
                        let assigns: Vec<String> = set
                            .iter()
                            .map(|c| format!("{} = {}", d.quote(c), p()))
                            .collect();
                        let wheres: Vec<String> = self
                            .pk_fields
                            .iter()
                            .map(|c| format!("{} = {}", d.quote(c), p()))
                            .collect();
                        let sql = format!(
                            "UPDATE {} SET {} WHERE {}",
                            d.quote(table),
                            assigns.join(", "),
                            wheres.join(" AND ")
                        );
                        let values: Vec<&Value> = set
                            .iter()
                            .chain(self.pk_fields.iter().collect::<Vec<_>>().iter())
                            .map(|c| r.get(*c).unwrap_or(&Value::Null))
                            .collect();
                        run(&mut tx, &sql, &values)
                            .await
                            .map_err(|e| jdbc::db_error(&self.url, e))?;
                    }
                    continue;
                }
                _ => self.insert_sql(table, &columns, chunk),
            };
            let refs: Vec<&Value> = values.iter().collect();
            run(&mut tx, &sql, &refs)
                .await
                .map_err(|e| jdbc::db_error(&self.url, e))?;
        }
        for key in deletes {
            let sql = format!(
                "DELETE FROM {} WHERE {} = {}",
                d.quote(table),
                d.quote(&self.pk_fields[0]),
                d.param(1)
            );
            run(&mut tx, &sql, &[&key])
                .await
                .map_err(|e| jdbc::db_error(&self.url, e))?;
        }
        tx.commit().await.map_err(|e| jdbc::db_error(&self.url, e))
    }

    /// One multi-row INSERT (with the dialect's upsert clause in upsert mode).
    fn insert_sql(
        &self,
        table: &str,
        columns: &[String],
        chunk: &[Map<String, Value>],
    ) -> (String, Vec<Value>) {
        let d = self.dialect;
        let cols: Vec<String> = columns.iter().map(|c| d.quote(c)).collect();
        let mut n = 0;
        let mut values = Vec::with_capacity(chunk.len() * columns.len());
        let tuples: Vec<String> = chunk
            .iter()
            .map(|r| {
                let ps: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        n += 1;
                        values.push(r.get(c).cloned().unwrap_or(Value::Null));
                        d.param(n)
                    })
                    .collect();
                format!("({})", ps.join(", "))
            })
            .collect();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            d.quote(table),
            cols.join(", "),
            tuples.join(", ")
        );
        if self.mode == Mode::Upsert {
            let rest: Vec<&String> = columns
                .iter()
                .filter(|c| !self.pk_fields.contains(c))
                .collect();
            match d {
                Dialect::MySql => {
                    let set: Vec<String> = if rest.is_empty() {
                        vec![format!("{0} = {0}", d.quote(&self.pk_fields[0]))]
                    } else {
                        rest.iter()
                            .map(|c| format!("{0} = VALUES({0})", d.quote(c)))
                            .collect()
                    };
                    sql += &format!(" ON DUPLICATE KEY UPDATE {}", set.join(", "));
                }
                _ => {
                    let pk: Vec<String> = self.pk_fields.iter().map(|c| d.quote(c)).collect();
                    if rest.is_empty() {
                        sql += &format!(" ON CONFLICT ({}) DO NOTHING", pk.join(", "));
                    } else {
                        let set: Vec<String> = rest
                            .iter()
                            .map(|c| format!("{0} = excluded.{0}", d.quote(c)))
                            .collect();
                        sql += &format!(
                            " ON CONFLICT ({}) DO UPDATE SET {}",
                            pk.join(", "),
                            set.join(", ")
                        );
                    }
                }
            }
        }
        (sql, values)
    }
}

/// The record key as a JSON value: a number if it parses as one, else text.
fn key_value(r: &ConsumerRecord) -> Option<Value> {
    let k = std::str::from_utf8(r.record.key.as_deref()?).ok()?;
    Some(
        k.parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(k)),
    )
}

async fn run(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sql: &str,
    values: &[&Value],
) -> std::result::Result<(), sqlx::Error> {
    let mut q = sqlx::query(sql);
    for v in values {
        q = match v {
            Value::Null => q.bind(None::<String>),
            Value::Bool(b) => q.bind(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => q.bind(i),
                None => q.bind(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => q.bind(s.clone()),
            other => q.bind(other.to_string()),
        };
    }
    q.execute(&mut **tx).await.map(|_| ())
}

#[async_trait]
impl Sink for JdbcSink {
    fn topics(&self) -> Vec<String> {
        self.topics.clone()
    }

    async fn put(&mut self, records: &[ConsumerRecord]) -> Result<()> {
        let mut tables: BTreeMap<String, (Vec<Map<String, Value>>, Vec<Value>)> = BTreeMap::new();
        for r in records {
            let table = self.table_format.replace("${topic}", &r.topic);
            let entry = tables.entry(table).or_default();
            match self.row(r)? {
                Some(row) => entry.0.push(row),
                None if self.delete_enabled => {
                    if let Some(k) = key_value(r) {
                        entry.1.push(k);
                    }
                }
                None => {}
            }
        }
        for (table, (rows, deletes)) in tables {
            self.write_table(&table, rows, deletes).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        // Every put committed its own transaction.
        Ok(())
    }
}
