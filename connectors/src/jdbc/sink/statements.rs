//! The statement path of the JDBC sink, for every database: each table's rows of a put as
//! multi-row `INSERT` statements (with the dialect's upsert clause in upsert mode) or one
//! `UPDATE` per record, with bound values, then its deletes, in one transaction, with the
//! consumed offsets in the same transaction under exactly-once. A statement the database
//! refuses fails the whole transaction: nothing of it is in the table.

use super::{JdbcSink, Mode};
use crate::error::Result;
use crate::jdbc::offsets::{self as jdbc_offsets, TxnOffsets};
use crate::jdbc::{self, Dialect};
use serde_json::{Map, Value};
use sqlx::AnyPool;

impl JdbcSink {
    /// The generic path: multi-row statements with bound values, in one transaction.
    pub(super) async fn write_rows(
        &mut self,
        pool: &AnyPool,
        table: &str,
        columns: &[String],
        rows: Vec<Map<String, Value>>,
        deletes: Vec<Value>,
        offsets: TxnOffsets,
    ) -> Result<()> {
        let d = self.dialect;
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
                _ => self.insert_sql(table, columns, chunk),
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
        if let Some(connector) = &self.offsets_of {
            jdbc_offsets::write_any(&mut tx, d, connector, &offsets)
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
