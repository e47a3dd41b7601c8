//! `jdbc-source` (`io.confluent.connect.jdbc.JdbcSourceConnector`): rows of SQLite,
//! PostgreSQL or MySQL/MariaDB tables, or of a custom query, as JSON object records.
//!
//! Keys: `connection.url`, `mode` (`bulk` | `incrementing` | `timestamp` |
//! `timestamp+incrementing`), `incrementing.column.name`, `timestamp.column.name`,
//! `timestamp.delay.interval.ms`, `table.whitelist` or `query`, `topic.prefix`,
//! `poll.interval.ms`, `batch.max.rows`. One topic per table (`topic.prefix` + table); a
//! `query` writes to the topic `topic.prefix`, and is wrapped as a subquery
//! (`SELECT * FROM (query) q WHERE ...`), so it may have its own WHERE clause.
//!
//! Confluent's semantics: `incrementing` reads rows whose column is greater than the largest
//! read; `timestamp` rows whose timestamp is greater than the last read (rows added later with
//! that same timestamp are missed, as in Confluent's); `timestamp+incrementing` rows after the
//! `(timestamp, id)` tuple read last, strictly; with `timestamp.delay.interval.ms` rows younger
//! than the delay (by the database's clock) wait, so transactions committing late are not
//! skipped. The source offset per table holds `incrementing` and/or `timestamp` (the value as
//! the database renders it), so a restart resumes after the last row stored. `bulk` reads
//! everything every `poll.interval.ms`.
//!
//! PostgreSQL rows are read through `COPY (SELECT ...) TO STDOUT` and written as JSON by the
//! client ([`copy_out`]), rendered as `row_to_json` renders them (timestamps as ISO 8601 text,
//! numerics as numbers). In the modes that order rows, one `COPY` of every row after the
//! offset is read `batch.max.rows` at a time and stays open between polls (a connection per
//! table), so the server streams the next rows while the last are written; the offset stored
//! after each batch is its last row's, as with a query per batch. Rows inserted while a
//! `COPY` is open come with the next one (they are not in its snapshot); a paused connector
//! keeps its `COPY`, and the server the snapshot, until it is resumed, restarted or deleted,
//! as a paused Kafka Connect task keeps its open result set. SQLite and MySQL rows
//! through sqlx's `Any` driver, where MySQL table columns of types it cannot read are cast to
//! text. A MySQL `query` must select readable types only (integers, floats, text:
//! `CAST(ts AS CHAR)`); timestamps compare as text then.

use crate::api::{Source, SourceBatch, SourceRun};
use crate::config::{ConnectorConfig, List};
use crate::error::{ConnectError, Result};
use crate::jdbc::copy_out;
use crate::jdbc::{self, Dialect};
use async_trait::async_trait;
use serde_json::{Map, Value, json};
use sqlx::AnyPool;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The keys of a `jdbc-source`.
#[derive(Debug, serde::Deserialize)]
struct Config {
    #[serde(rename = "connection.url")]
    url: String,
    mode: Mode,
    #[serde(rename = "incrementing.column.name")]
    incrementing: Option<String>,
    #[serde(rename = "timestamp.column.name")]
    timestamp: Option<String>,
    #[serde(rename = "timestamp.delay.interval.ms", default)]
    delay_ms: u64,
    #[serde(rename = "table.whitelist")]
    tables: Option<List>,
    query: Option<String>,
    #[serde(rename = "topic.prefix", default)]
    prefix: String,
    #[serde(rename = "poll.interval.ms", default = "default_poll_interval_ms")]
    poll_interval_ms: u64,
    #[serde(rename = "batch.max.rows", default = "default_max_rows")]
    max_rows: i64,
}

/// `mode`: which rows a poll reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Bulk,
    Incrementing,
    Timestamp,
    #[serde(rename = "timestamp+incrementing")]
    TimestampIncrementing,
}

fn default_poll_interval_ms() -> u64 {
    5_000
}

fn default_max_rows() -> i64 {
    10_000
}

/// Where rows come from: a table or the custom query.
#[derive(Debug, Clone, PartialEq)]
enum From {
    Table(String),
    Query(String),
}

/// The last row read of one table: `(timestamp, incrementing)`.
#[derive(Debug, Clone, Default, PartialEq)]
struct Position {
    timestamp: Option<Value>,
    incrementing: Option<i64>,
}

pub struct JdbcSource {
    url: String,
    dialect: Dialect,
    pool: Option<AnyPool>,
    /// PostgreSQL's own driver, for `COPY` (the `Any` driver has none).
    pg: Option<sqlx::PgPool>,
    /// PostgreSQL: per table, its columns as `COPY` reads them.
    pg_columns: BTreeMap<String, copy_out::Columns>,
    /// PostgreSQL: per table, the `COPY` of its rows after `last` not read to its end yet.
    pg_copies: BTreeMap<String, copy_out::Copy>,
    incrementing: Option<String>,
    timestamp: Option<String>,
    delay_ms: u64,
    sources: Vec<From>,
    prefix: String,
    interval: Duration,
    max_rows: i64,
    last: BTreeMap<String, Position>,
    /// Per table: its select list (MySQL) or the timestamp column's type (PostgreSQL).
    shape: BTreeMap<String, String>,
    next_poll: Instant,
}

impl JdbcSource {
    /// Splits `c`'s tables over at most `n` tasks, in contiguous groups whose sizes differ by
    /// one at most (as Confluent's connector groups them): each task's configuration names its
    /// tables in `table.whitelist`. A query runs as one task. The tables' offsets are keyed by
    /// table, so tasks never share one.
    ///
    /// # Errors
    /// [`ConnectError::Config`] for a configuration [`ConnectorConfig::parse`] refuses.
    pub fn split(c: &ConnectorConfig, n: usize) -> Result<Vec<ConnectorConfig>> {
        let config: Config = c.parse()?;
        let tables = match (config.query, config.tables) {
            (None, Some(t)) if t.0.len() > 1 => t.0,
            _ => return Ok(vec![c.clone()]),
        };
        let groups = n.clamp(1, tables.len());
        let (size, bigger) = (tables.len() / groups, tables.len() % groups);
        let mut rest = tables.as_slice();
        Ok((0..groups)
            .map(|g| {
                let (share, after) = rest.split_at(size + usize::from(g < bigger));
                rest = after;
                let mut task = c.clone();
                task.props.insert("table.whitelist".into(), share.join(","));
                task
            })
            .collect())
    }

    /// A source of `c`'s tables or query; the database is connected at the first poll.
    ///
    /// # Errors
    /// [`ConnectError::Config`] for a key or value [`ConnectorConfig::parse`] refuses, a
    /// `mode` without its column names, both or neither of `query` and `table.whitelist`, or
    /// a `query` without `topic.prefix`; [`ConnectError::Record`] for a `connection.url` of no
    /// supported database.
    pub fn new(c: &ConnectorConfig) -> Result<Self> {
        let config: Config = c.parse()?;
        let column = |name: &Option<String>, key: &str| name.clone().ok_or_else(|| c.missing(key));
        let incrementing = || column(&config.incrementing, "incrementing.column.name");
        let timestamp = || column(&config.timestamp, "timestamp.column.name");
        let (incrementing, timestamp) = match config.mode {
            Mode::Bulk => (None, None),
            Mode::Incrementing => (Some(incrementing()?), None),
            Mode::Timestamp => (None, Some(timestamp()?)),
            Mode::TimestampIncrementing => (Some(incrementing()?), Some(timestamp()?)),
        };
        let sources = match (config.query, config.tables) {
            (Some(_), Some(_)) => {
                return Err(c.error("set either query or table.whitelist, not both".into()));
            }
            (Some(q), None) => {
                if config.prefix.is_empty() {
                    return Err(c.error("with query, topic.prefix is the topic: set it".into()));
                }
                vec![From::Query(q.trim().trim_end_matches(';').to_string())]
            }
            (None, Some(t)) => t.0.into_iter().map(From::Table).collect(),
            (None, None) => {
                return Err(c.error("missing \"table.whitelist\" (or \"query\")".into()));
            }
        };
        let url = config.url;
        Ok(Self {
            dialect: Dialect::of(&url)?,
            url,
            pool: None,
            pg: None,
            pg_columns: BTreeMap::new(),
            pg_copies: BTreeMap::new(),
            incrementing,
            timestamp,
            delay_ms: config.delay_ms,
            sources,
            prefix: config.prefix,
            interval: Duration::from_millis(config.poll_interval_ms),
            max_rows: config.max_rows,
            last: BTreeMap::new(),
            shape: BTreeMap::new(),
            next_poll: Instant::now(),
        })
    }

    /// The source partition's name: the table, or `query` as Confluent's.
    fn name(from: &From) -> String {
        match from {
            From::Table(t) => t.clone(),
            From::Query(_) => "query".into(),
        }
    }

    fn partition(from: &From) -> Value {
        match from {
            From::Table(t) => json!({ "table": t }),
            From::Query(_) => json!({ "query": "query" }),
        }
    }

    fn topic(&self, from: &From) -> String {
        match from {
            From::Table(t) => format!("{}{t}", self.prefix),
            From::Query(_) => self.prefix.clone(),
        }
    }

    /// What the dialect needs to know of a table before selecting from it, learned once.
    async fn learn(&mut self, pool: &AnyPool, from: &From, sql_from: &str) -> Result<String> {
        let name = Self::name(from);
        if let Some(s) = self.shape.get(&name) {
            return Ok(s.clone());
        }
        let d = self.dialect;
        let err = |e| jdbc::db_error(&self.url, e);
        let shape = match (d, from) {
            (Dialect::Postgres, _) => match &self.timestamp {
                // The timestamp column's type, to cast the stored offset back to it.
                Some(ts) => {
                    let sql = format!(
                        "SELECT pg_typeof(q.{})::text FROM {sql_from} q LIMIT 1",
                        d.quote(ts)
                    );
                    match sqlx::query_scalar::<_, String>(&sql)
                        .fetch_optional(pool)
                        .await
                        .map_err(err)?
                    {
                        Some(t) => t,
                        // No rows yet: nothing to compare with either; learn it next time.
                        None => return Ok(String::new()),
                    }
                }
                None => String::new(),
            },
            (Dialect::MySql, From::Table(t)) => {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR) FROM information_schema.columns \
                     WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
                )
                .bind(t.clone())
                .fetch_all(pool)
                .await
                .map_err(err)?;
                if rows.is_empty() {
                    return Err(ConnectError::Config {
                        connector: "jdbc-source".into(),
                        message: format!("table {t:?} does not exist (table.whitelist)"),
                    });
                }
                const READABLE: &[&str] = &[
                    "tinyint",
                    "smallint",
                    "mediumint",
                    "int",
                    "bigint",
                    "float",
                    "double",
                    "char",
                    "varchar",
                    "text",
                    "tinytext",
                    "mediumtext",
                    "longtext",
                ];
                rows.iter()
                    .map(|(c, ty)| {
                        if READABLE.contains(&ty.to_ascii_lowercase().as_str()) {
                            format!("q.{}", d.quote(c))
                        } else {
                            format!("CAST(q.{0} AS CHAR) AS {0}", d.quote(c))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
            _ => String::new(),
        };
        self.shape.insert(name, shape.clone());
        Ok(shape)
    }

    /// The rows after the last read of one table or query, as one run; and how many.
    async fn poll_one(&mut self, pool: &AnyPool, from: &From) -> Result<(SourceRun, usize)> {
        let d = self.dialect;
        let sql_from = match from {
            From::Table(t) => d.quote(t),
            From::Query(q) => format!("({q})"),
        };
        let shape = self.learn(pool, from, &sql_from).await?;
        let pos = self
            .last
            .get(&Self::name(from))
            .cloned()
            .unwrap_or_default();
        let mut binds: Vec<Value> = Vec::new();
        // `cast`: a stored timestamp, cast back to the column's type where the database needs it.
        // PostgreSQL's rows come through `COPY`, which takes no parameters: values are inlined.
        let param = |binds: &mut Vec<Value>, v: Value, cast: bool| match d {
            Dialect::Postgres if cast && !shape.is_empty() => {
                format!("CAST({} AS {shape})", copy_out::literal(&v))
            }
            Dialect::Postgres => copy_out::literal(&v),
            _ => {
                binds.push(v);
                d.param(binds.len())
            }
        };
        let mut wheres: Vec<String> = Vec::new();
        let mut order: Vec<String> = Vec::new();
        let q = |c: &str| format!("q.{}", d.quote(c));
        match (&self.timestamp, &self.incrementing) {
            (None, Some(inc)) => {
                let last = json!(pos.incrementing.unwrap_or(i64::MIN));
                wheres.push(format!("{} > {}", q(inc), param(&mut binds, last, false)));
                order.push(q(inc));
            }
            (Some(ts), None) => {
                if let Some(t) = &pos.timestamp {
                    wheres.push(format!(
                        "{} > {}",
                        q(ts),
                        param(&mut binds, t.clone(), true)
                    ));
                }
                order.push(q(ts));
            }
            (Some(ts), Some(inc)) => {
                if let (Some(t), Some(i)) = (&pos.timestamp, pos.incrementing) {
                    let a = param(&mut binds, t.clone(), true);
                    let b = param(&mut binds, json!(i), false);
                    let c = param(&mut binds, t.clone(), true);
                    wheres.push(format!(
                        "(({} = {a} AND {} > {b}) OR {} > {c})",
                        q(ts),
                        q(inc),
                        q(ts)
                    ));
                }
                order.push(q(ts));
                order.push(q(inc));
            }
            (None, None) => {}
        }
        if let (Some(ts), true) = (&self.timestamp, self.delay_ms > 0) {
            let ms = self.delay_ms;
            wheres.push(match d {
                Dialect::Postgres => format!(
                    "{} < CURRENT_TIMESTAMP - INTERVAL '{ms} milliseconds'",
                    q(ts)
                ),
                Dialect::MySql => {
                    format!("{} < NOW(6) - INTERVAL {} MICROSECOND", q(ts), ms * 1000)
                }
                Dialect::Sqlite => format!(
                    "{} < strftime('%Y-%m-%d %H:%M:%f', 'now', '-{}.{:03} seconds')",
                    q(ts),
                    ms / 1000,
                    ms % 1000
                ),
            });
        }
        let mut tail = String::new();
        if !wheres.is_empty() {
            tail += &format!(" WHERE {}", wheres.join(" AND "));
        }
        if !order.is_empty() {
            tail += &format!(" ORDER BY {}", order.join(", "));
            // PostgreSQL's `COPY` is read `batch.max.rows` at a time and stays open between.
            if d != Dialect::Postgres {
                tail += &format!(" LIMIT {}", self.max_rows);
            }
        }
        let mut run = SourceRun::new(self.topic(from), Self::partition(from), Value::Null);
        let mut pos = pos;
        let rows = if d == Dialect::Postgres {
            // Bulk: the whole table each time.
            let max = if order.is_empty() {
                usize::MAX
            } else {
                self.max_rows.max(1) as usize
            };
            self.copy_pg(from, &sql_from, &tail, max, &mut run, &mut pos)
                .await?
        } else {
            let sql = match (d, from) {
                (Dialect::MySql, From::Table(_)) => {
                    format!("SELECT {shape} FROM {sql_from} q{tail}")
                }
                _ => format!("SELECT q.* FROM {sql_from} q{tail}"),
            };
            let mut query = sqlx::query(&sql);
            for v in &binds {
                query = match v {
                    Value::Number(n) if n.is_i64() => query.bind(n.as_i64()),
                    Value::Number(n) => query.bind(n.as_f64()),
                    Value::String(s) => query.bind(s.clone()),
                    other => query.bind(other.to_string()),
                };
            }
            let rows = query
                .fetch_all(pool)
                .await
                .map_err(|e| jdbc::db_error(&self.url, e))?;
            for row in &rows {
                let obj = jdbc::row_to_json(row);
                if let Some(c) = &self.incrementing {
                    pos.incrementing = obj.get(c).and_then(Value::as_i64);
                }
                if let Some(c) = &self.timestamp {
                    pos.timestamp = obj.get(c).cloned();
                }
                let key = pos
                    .incrementing
                    .filter(|_| self.incrementing.is_some())
                    .map(|i| i.to_string());
                let value = serde_json::to_vec(&obj).expect("JSON serializes");
                run.push(key.as_ref().map(String::as_bytes), Some(&value));
            }
            rows.len()
        };
        let mut offset = Map::new();
        if let Some(i) = pos.incrementing {
            offset.insert("incrementing".into(), json!(i));
        }
        if let Some(t) = &pos.timestamp {
            offset.insert("timestamp".into(), t.clone());
        }
        run.offset = Value::Object(offset);
        self.last.insert(Self::name(from), pos);
        Ok((run, rows))
    }

    /// PostgreSQL's rows after `pos`, up to about `max` of them, through `COPY` (see
    /// [`copy_out`]), into `run`; returns how many. The `COPY` of `select` over `sql_from` and
    /// `tail` starts when none is open for the table, and stays open until read to its end.
    async fn copy_pg(
        &mut self,
        from: &From,
        sql_from: &str,
        tail: &str,
        max: usize,
        run: &mut SourceRun,
        pos: &mut Position,
    ) -> Result<usize> {
        let err = |e| jdbc::db_error(&self.url, e);
        if self.pg.is_none() {
            // A connection per table (an open `COPY` holds one), one more to learn columns.
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(self.sources.len() as u32 + 1)
                .connect(&self.url)
                .await
                .map_err(err)?;
            self.pg = Some(pool);
        }
        let pool = self.pg.clone().expect("connected above");
        let name = Self::name(from);
        if !self.pg_columns.contains_key(&name) {
            let columns = copy_out::Columns::learn(&pool, &self.url, sql_from).await?;
            self.pg_columns.insert(name.clone(), columns);
        }
        let columns = &self.pg_columns[&name];
        if !self.pg_copies.contains_key(&name) {
            let select = format!("SELECT {} FROM {sql_from} q{tail}", columns.select_list());
            let copy = copy_out::Copy::start(&pool, &self.url, select).await?;
            self.pg_copies.insert(name.clone(), copy);
        }
        let copy = self.pg_copies.get_mut(&name).expect("started above");
        let inc = self
            .incrementing
            .as_deref()
            .and_then(|c| columns.position(c));
        let mut last_row = Vec::new();
        let taken = copy.take(&self.url, columns, inc, max, |json, key| {
            if inc.is_some() {
                pos.incrementing = key
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .and_then(|k| k.parse().ok());
            }
            let key = key.filter(|_| pos.incrementing.is_some());
            run.push(key, Some(json));
            if self.timestamp.is_some() {
                last_row.clear();
                last_row.extend_from_slice(json);
            }
        });
        // A failed copy is not resumed: the next poll starts again after the last row stored.
        let (rows, ended) = match taken.await {
            Ok(taken) => taken,
            Err(e) => {
                self.pg_copies.remove(&name);
                return Err(e);
            }
        };
        if ended {
            self.pg_copies.remove(&name);
        }
        if let (Some(c), false) = (&self.timestamp, last_row.is_empty()) {
            let obj: Map<String, Value> =
                serde_json::from_slice(&last_row).map_err(|e| ConnectError::Record {
                    what: format!("jdbc-source {name}"),
                    message: format!("a row copied out is not JSON: {e}"),
                })?;
            pos.timestamp = obj.get(c).cloned();
        }
        Ok(rows)
    }
}

#[async_trait]
impl Source for JdbcSource {
    async fn start(&mut self, offsets: &[(Value, Value)]) -> Result<()> {
        for (p, o) in offsets {
            let name = match (p["table"].as_str(), p["query"].as_str()) {
                (Some(t), _) => t.to_string(),
                (None, Some(_)) => "query".to_string(),
                _ => continue,
            };
            self.last.insert(
                name,
                Position {
                    timestamp: o.get("timestamp").cloned().filter(|v| !v.is_null()),
                    incrementing: o["incrementing"].as_i64(),
                },
            );
        }
        Ok(())
    }

    async fn poll(&mut self) -> Result<SourceBatch> {
        if Instant::now() < self.next_poll {
            return Ok(Vec::new());
        }
        if self.pool.is_none() {
            self.pool = Some(jdbc::connect(&self.url).await?);
        }
        let pool = self.pool.clone().expect("connected above");
        let mut out = Vec::new();
        let mut full = false;
        for from in self.sources.clone() {
            let (run, rows) = self.poll_one(&pool, &from).await?;
            full |= rows as i64 >= self.max_rows;
            if rows > 0 {
                out.push(run);
            }
        }
        // A table that returned a full batch has more: ask again at once.
        let incremental = self.incrementing.is_some() || self.timestamp.is_some();
        if !(full && incremental) {
            self.next_poll = Instant::now() + self.interval;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_split_in_contiguous_groups_of_nearly_equal_size() {
        let c = |tables: &str| {
            ConnectorConfig::from_json(
                Some("db"),
                &json!({"connection.url": "sqlite::memory:", "mode": "bulk", "table.whitelist": tables}),
            )
            .unwrap()
        };
        let shares = |tables: &str, n: usize| -> Vec<String> {
            JdbcSource::split(&c(tables), n)
                .unwrap()
                .iter()
                .map(|t| t.props["table.whitelist"].clone())
                .collect()
        };
        assert_eq!(shares("a,b,c,d,e", 2), ["a,b,c", "d,e"]);
        assert_eq!(shares("a,b,c,d,e", 3), ["a,b", "c,d", "e"]);
        assert_eq!(shares("a,b", 9), ["a", "b"]);
        assert_eq!(shares("a", 4), ["a"]);
    }

    /// The ids of a poll's records.
    fn ids(batch: &SourceBatch) -> Vec<i64> {
        batch
            .iter()
            .flat_map(|run| run.records())
            .map(|(_, v)| {
                let row: Value = serde_json::from_slice(v.expect("a row")).unwrap();
                row["id"].as_i64().unwrap()
            })
            .collect()
    }

    /// One `COPY` read across polls in batches of `batch.max.rows`: its rows in order, rows
    /// added meanwhile with the next `COPY` (they are not in the open one's snapshot), and a
    /// source dropped with its `COPY` open resumes after the last offset it handed on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_is_read_across_polls_and_resumes_after_the_stored_offset() {
        let Some(url) = jdbc::test_postgres().await else {
            return;
        };
        let table = format!("copy_source_test_{}", std::process::id());
        let pool = jdbc::connect(&url).await.unwrap();
        let insert = |from: i64, to: i64| {
            format!("INSERT INTO {table} SELECT i, 'v' || i FROM generate_series({from}, {to}) i")
        };
        let sql = format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id BIGINT PRIMARY KEY, v TEXT);
             {}",
            insert(1, 25)
        );
        sqlx::raw_sql(&sql).execute(&pool).await.unwrap();
        let config = ConnectorConfig::from_json(
            Some("src"),
            &json!({
                "connection.url": url, "mode": "incrementing", "incrementing.column.name": "id",
                "table.whitelist": table, "topic.prefix": "t-", "batch.max.rows": "10",
                "poll.interval.ms": "0",
            }),
        )
        .unwrap();
        let mut source = JdbcSource::new(&config).unwrap();
        source.start(&[]).await.unwrap();
        assert_eq!(
            ids(&source.poll().await.unwrap()),
            (1..=10).collect::<Vec<_>>()
        );
        let second = source.poll().await.unwrap();
        assert_eq!(ids(&second), (11..=20).collect::<Vec<_>>());
        let stored = (second[0].partition.clone(), second[0].offset.clone());
        assert_eq!(stored.1["incrementing"], 20);
        sqlx::raw_sql(&insert(26, 30)).execute(&pool).await.unwrap();
        assert_eq!(
            ids(&source.poll().await.unwrap()),
            (21..=25).collect::<Vec<_>>()
        );
        assert_eq!(
            ids(&source.poll().await.unwrap()),
            (26..=30).collect::<Vec<_>>()
        );
        assert!(source.poll().await.unwrap().is_empty());
        drop(source);

        // Started again from offset 20: a new `COPY` has every row after it.
        let mut source = JdbcSource::new(&config).unwrap();
        source.start(&[stored]).await.unwrap();
        let again = source.poll().await.unwrap();
        assert_eq!(ids(&again), (21..=30).collect::<Vec<_>>());
        let stored = (again[0].partition.clone(), again[0].offset.clone());
        // Dropped with that `COPY` open (it handed on `batch.max.rows`, it may have more).
        drop(source);
        let mut source = JdbcSource::new(&config).unwrap();
        source.start(&[stored]).await.unwrap();
        assert!(source.poll().await.unwrap().is_empty());
        drop(source);
        sqlx::raw_sql(&format!("DROP TABLE {table}"))
            .execute(&pool)
            .await
            .unwrap();
    }
}
