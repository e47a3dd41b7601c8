//! `jdbc-sink` (`io.confluent.connect.jdbc.JdbcSinkConnector`): JSON object records into a
//! table of SQLite, PostgreSQL or MySQL/MariaDB.
//!
//! Keys: `connection.url`, `topics`, `table.name.format` (`${topic}`), `insert.mode`
//! (`insert` | `upsert` | `update`), `pk.mode` (`none` | `record_key` | `record_value`),
//! `pk.fields`, `auto.create`, `auto.evolve` (adds the nullable columns a record has and the
//! table lacks), `delete.enabled` (a tombstone deletes the row, with
//! `pk.mode = record_key`), `batch.size`. Each `put` is one transaction of multi-row
//! statements (on PostgreSQL, each chunk of 20,000 records of it, `COPY`ed, chunks of disjoint
//! keys at once), so a batch (chunk) is in the table entirely or not at all; with `upsert` a replay after
//! a crash rewrites the same rows (idempotent). A database that went away fails the put; the
//! worker restarts the task with backoff and shows the error in its status until it is back.
//! A batch the database refuses for its data is written again one record per transaction, and
//! the records still refused are returned as [`Rejected`] (dead-letter topic or a failed task,
//! naming topic, partition and offset).
//!
//! With `exactly.once.support = required` every transaction also stores the consumed offsets
//! of its records in the target database ([`crate::jdbc::offsets`]), and the worker resumes
//! from them: each record is in the table exactly once after any crash, even with
//! `insert.mode = insert`.

use crate::config::{ConnectorConfig, List};
mod copy;
mod statements;

use crate::api::{Rejected, Sink};
use crate::error::{ConnectError, Result};
use crate::jdbc::offsets::{self as jdbc_offsets, TxnOffsets};
use crate::jdbc::{self, Dialect};
use async_trait::async_trait;
use runnel_log::{ConsumerRecord, TopicPartition};
use serde_json::{Map, Value};
use sqlx::AnyPool;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// The keys of a `jdbc-sink`.
#[derive(Debug, serde::Deserialize)]
struct Config {
    #[serde(rename = "connection.url")]
    url: String,
    topics: List,
    #[serde(rename = "table.name.format", default = "default_table_format")]
    table_format: String,
    #[serde(rename = "insert.mode", default)]
    mode: Mode,
    #[serde(rename = "pk.mode", default)]
    pk_mode: PkMode,
    #[serde(rename = "pk.fields")]
    pk_fields: Option<List>,
    #[serde(rename = "auto.create", default)]
    auto_create: bool,
    #[serde(rename = "auto.evolve", default)]
    auto_evolve: bool,
    #[serde(rename = "delete.enabled", default)]
    delete_enabled: bool,
    #[serde(rename = "batch.size", default = "default_batch_size")]
    batch_size: usize,
}

fn default_table_format() -> String {
    "${topic}".into()
}

fn default_batch_size() -> usize {
    500
}

/// `insert.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Insert,
    Upsert,
    Update,
}

/// `pk.mode`: where the primary key comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum PkMode {
    #[default]
    None,
    RecordKey,
    RecordValue,
}

pub struct JdbcSink {
    url: String,
    dialect: Dialect,
    pool: Option<AnyPool>,
    /// PostgreSQL's own driver, for `COPY` (the `Any` driver has none).
    pg: Option<sqlx::PgPool>,
    topics: Vec<String>,
    table_format: String,
    mode: Mode,
    pk_mode: PkMode,
    pk_fields: Vec<String>,
    auto_create: bool,
    delete_enabled: bool,
    batch_size: usize,
    created: HashSet<String>,
    auto_evolve: bool,
    /// Per table, its columns as last seen (lowercase: MySQL's names ignore case).
    columns: HashMap<String, HashSet<String>>,
    /// The connector's name when its offsets are kept in the database (exactly-once).
    offsets_of: Option<String>,
    /// Hashes the keys of chunks in flight, to tell whether two may commit in any order.
    key_hasher: std::collections::hash_map::RandomState,
}

impl JdbcSink {
    /// A sink to `c`'s database; it is connected at the first put.
    ///
    /// # Errors
    /// [`ConnectError::Config`] for a key or value [`ConnectorConfig::parse`] refuses, an empty
    /// `topics`, or `insert.mode` upsert or update without a primary key;
    /// [`ConnectError::Record`] for a `connection.url` of no supported database.
    pub fn new(c: &ConnectorConfig) -> Result<Self> {
        let config: Config = c.parse()?;
        let (mode, pk_mode) = (config.mode, config.pk_mode);
        let pk_fields = match config.pk_fields {
            Some(fields) => fields.0,
            None if pk_mode == PkMode::RecordKey => vec!["id".into()],
            None => Vec::new(),
        };
        if mode != Mode::Insert && pk_fields.is_empty() {
            return Err(c.error("insert.mode upsert or update needs pk.mode and pk.fields".into()));
        }
        if pk_mode == PkMode::None && mode != Mode::Insert {
            return Err(c.error(
                "insert.mode upsert or update needs pk.mode record_key or record_value".into(),
            ));
        }
        let url = config.url;
        Ok(Self {
            dialect: Dialect::of(&url)?,
            url,
            pool: None,
            pg: None,
            topics: config.topics.non_empty(c, "topics")?,
            table_format: config.table_format,
            mode,
            pk_mode,
            pk_fields,
            auto_create: config.auto_create,
            delete_enabled: config.delete_enabled,
            batch_size: config.batch_size.max(1),
            created: HashSet::new(),
            auto_evolve: config.auto_evolve,
            columns: HashMap::new(),
            offsets_of: c.common()?.exactly_once().then(|| c.name.clone()),
            key_hasher: Default::default(),
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
        offsets: TxnOffsets,
    ) -> Result<()> {
        let (pool, columns, rows, _) = self.prepare(table, rows).await?;
        let d = self.dialect;
        if d == Dialect::Postgres
            && self.mode != Mode::Update
            && deletes.is_empty()
            && !rows.is_empty()
        {
            return self
                .copy_job(table, &columns, &rows, offsets)
                .await?
                .run()
                .await;
        }
        self.write_rows(&pool, table, &columns, rows, deletes, offsets)
            .await
    }

    /// The table made or evolved as configured, the batch's columns, its rows with one per
    /// key in upsert mode, and the hashes of their keys.
    async fn prepare(
        &mut self,
        table: &str,
        rows: Vec<Map<String, Value>>,
    ) -> Result<(AnyPool, Vec<String>, Vec<Map<String, Value>>, HashSet<u64>)> {
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
        if self.auto_evolve && !rows.is_empty() {
            self.evolve(&pool, table, &columns, &rows).await?;
        }
        // The key fields' JSON texts, joined by a byte JSON text cannot hold.
        let pk = |r: &Map<String, Value>| -> String {
            let mut k = String::new();
            for f in &self.pk_fields {
                match r.get(f) {
                    Some(Value::Number(n)) => k += &n.to_string(),
                    Some(v) => k += &v.to_string(),
                    None => {}
                }
                k.push('\u{1}');
            }
            k
        };
        let keys: Vec<String> = if self.pk_fields.is_empty() {
            Vec::new()
        } else {
            rows.iter().map(pk).collect()
        };
        let hashes = keys
            .iter()
            .map(|k| std::hash::BuildHasher::hash_one(&self.key_hasher, (table, k)))
            .collect();
        // One statement may not touch a row twice (PostgreSQL refuses): per key, the last
        // record of the batch wins, as it would row by row.
        let rows = if self.mode == Mode::Upsert {
            let mut last = HashMap::with_capacity(rows.len());
            for (i, k) in keys.iter().enumerate() {
                last.insert(k, i);
            }
            let keep: Vec<bool> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| last.get(k) == Some(&i))
                .collect();
            rows.into_iter()
                .zip(keep)
                .filter_map(|(r, k)| k.then_some(r))
                .collect()
        } else {
            rows
        };
        Ok((pool, columns, rows, hashes))
    }

    /// Waits for the chunks in flight, oldest first (see [`Self::finish`]).
    async fn finish_all(
        &mut self,
        inflight: &mut VecDeque<Inflight>,
        records: &[ConsumerRecord],
        rejected: &mut Vec<Rejected>,
    ) -> Result<()> {
        while let Some(job) = inflight.pop_front() {
            self.finish(job, records, rejected).await?;
        }
        Ok(())
    }

    /// Waits for a chunk written by a task; if the database refused its data, finds the bad
    /// records one by one.
    async fn finish(
        &mut self,
        job: Inflight,
        records: &[ConsumerRecord],
        rejected: &mut Vec<Rejected>,
    ) -> Result<()> {
        let result = job.handle.await.unwrap_or_else(|e| {
            Err(ConnectError::Record {
                what: format!("the write task of table {}", job.table),
                message: e.to_string(),
            })
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) if !data_error(&e) => Err(e),
            Err(e) => {
                tracing::info!(table = %job.table, error = %e, "a batch failed; writing its records one by one");
                self.one_by_one(&job.table, job.indices, Vec::new(), records, rejected)
                    .await
            }
        }
    }

    /// One record per transaction; those the database refuses are rejected with their origin.
    async fn one_by_one(
        &mut self,
        table: &str,
        rows: Vec<usize>,
        deletes: Vec<(usize, Value)>,
        records: &[ConsumerRecord],
        rejected: &mut Vec<Rejected>,
    ) -> Result<()> {
        for index in rows {
            let r = &records[index];
            let Ok(Some(row)) = self.row(r) else { continue };
            let offsets = jdbc_offsets::of_records(records, [index]);
            match self
                .write_table(table, vec![row], Vec::new(), offsets)
                .await
            {
                Ok(()) => {}
                Err(e) if !data_error(&e) => return Err(e),
                Err(e) => rejected.push(Rejected {
                    index,
                    reason: format!(
                        "{}-{} offset {}: {e}",
                        r.topic, r.partition, r.record.offset
                    ),
                }),
            }
        }
        for (index, key) in deletes {
            let offsets = jdbc_offsets::of_records(records, [index]);
            match self
                .write_table(table, Vec::new(), vec![key], offsets)
                .await
            {
                Ok(()) => {}
                Err(e) if !data_error(&e) => return Err(e),
                Err(e) => rejected.push(Rejected {
                    index,
                    reason: e.to_string(),
                }),
            }
        }
        Ok(())
    }

    /// `auto.evolve`: adds the columns the records have and the table lacks, nullable, typed
    /// from the first non-null value.
    async fn evolve(
        &mut self,
        pool: &AnyPool,
        table: &str,
        columns: &[String],
        rows: &[Map<String, Value>],
    ) -> Result<()> {
        let d = self.dialect;
        let known = match self.columns.get(table) {
            Some(k) if columns.iter().all(|c| k.contains(&c.to_lowercase())) => return Ok(()),
            Some(k) => k.clone(),
            None => {
                let sql = match d {
                    Dialect::Postgres => {
                        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1"
                    }
                    Dialect::MySql => {
                        "SELECT CAST(column_name AS CHAR) FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?"
                    }
                    Dialect::Sqlite => "SELECT name FROM pragma_table_info(?)",
                };
                let names: Vec<String> = sqlx::query_scalar(sql)
                    .bind(table.to_string())
                    .fetch_all(pool)
                    .await
                    .map_err(|e| jdbc::db_error(&self.url, e))?;
                names.into_iter().map(|n| n.to_lowercase()).collect()
            }
        };
        let mut known = known;
        if known.is_empty() {
            // No table: the insert says so (set auto.create to have it made).
            return Ok(());
        }
        for c in columns {
            if known.contains(&c.to_lowercase()) {
                continue;
            }
            let sample = rows
                .iter()
                .find_map(|r| r.get(c).filter(|v| !v.is_null()))
                .unwrap_or(&Value::Null);
            let sql = format!(
                "ALTER TABLE {} ADD COLUMN {} {} NULL",
                d.quote(table),
                d.quote(c),
                d.column_type(sample, false)
            );
            tracing::info!(table = %table, column = %c, "auto.evolve: adding a column");
            sqlx::query(&sql)
                .execute(pool)
                .await
                .map_err(|e| jdbc::db_error(&self.url, e))?;
            known.insert(c.to_lowercase());
        }
        self.columns.insert(table.to_string(), known);
        Ok(())
    }
}

/// Records per PostgreSQL chunk: big enough that a commit's fsync is paid rarely, small
/// enough that encoding the next chunk overlaps the server's work on this one.
const PIPELINE_CHUNK: usize = 20_000;

/// A chunk being written by a task: which table, which records (indices into the put), and
/// the hashes of their keys.
struct Inflight {
    handle: tokio::task::JoinHandle<Result<()>>,
    table: String,
    indices: Vec<usize>,
    keys: HashSet<u64>,
}

/// Chunks written at once on PostgreSQL: an `UPDATE` of existing rows keeps one server core
/// busy, and two chunks of disjoint keys may commit in either order.
const IN_FLIGHT: usize = 2;

/// The records of one table in a put, with their index in the batch.
#[derive(Default)]
struct Batch {
    rows: Vec<(usize, Map<String, Value>)>,
    deletes: Vec<(usize, Value)>,
}

/// A database's refusal of the data, as opposed to a database that is not there.
fn data_error(e: &ConnectError) -> bool {
    matches!(
        e,
        ConnectError::Database {
            transient: false,
            ..
        }
    )
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

#[async_trait]
impl Sink for JdbcSink {
    fn topics(&self) -> Vec<String> {
        self.topics.clone()
    }

    /// On PostgreSQL (insert, upsert) a batch goes in chunks, each `COPY`ed by a task while the
    /// next chunk is parsed and encoded: the client's work and the server's overlap. Up to
    /// `IN_FLIGHT` chunks are written at once, each in its own transaction, when no two hold
    /// the same key; a chunk with a key of one in flight waits for it, so per key the last
    /// record still wins. With exactly-once, whose stored offsets must only grow, one chunk
    /// at a time.
    async fn put(&mut self, records: &[ConsumerRecord]) -> Result<Vec<Rejected>> {
        let mut rejected = Vec::new();
        let pipelined = self.dialect == Dialect::Postgres && self.mode != Mode::Update;
        let chunk = if pipelined {
            PIPELINE_CHUNK
        } else {
            records.len().max(1)
        };
        let mut inflight: VecDeque<Inflight> = VecDeque::new();
        // With its offsets stored chunk by chunk, a chunk may not commit before an earlier one.
        let most = if self.offsets_of.is_some() {
            1
        } else {
            IN_FLIGHT
        };
        let (mut last_topic, mut last_table): (Option<String>, String) = (None, String::new());
        for (n, part) in records.chunks(chunk).enumerate() {
            let mut tables: BTreeMap<String, Batch> = BTreeMap::new();
            for (i, r) in part.iter().enumerate() {
                let index = n * chunk + i;
                // Records come in runs of one topic: name its table once per run.
                if last_topic.as_deref() != Some(&*r.topic) {
                    last_topic = Some(r.topic.to_string());
                    last_table = self.table_format.replace("${topic}", &r.topic);
                }
                if !tables.contains_key(&last_table) {
                    tables.insert(last_table.clone(), Batch::default());
                }
                let entry = tables.get_mut(&last_table).expect("inserted above");
                match self.row(r) {
                    Ok(Some(row)) => entry.rows.push((index, row)),
                    Ok(None) if self.delete_enabled => {
                        if let Some(k) = key_value(r) {
                            entry.deletes.push((index, k));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => rejected.push(Rejected {
                        index,
                        reason: e.to_string(),
                    }),
                }
            }
            for (table, batch) in tables {
                let indices: Vec<usize> = batch.rows.iter().map(|(i, _)| *i).collect();
                let deletes: Vec<(usize, Value)> = batch.deletes;
                let rows: Vec<Map<String, Value>> =
                    batch.rows.into_iter().map(|(_, r)| r).collect();
                let offsets = jdbc_offsets::of_records(
                    records,
                    indices
                        .iter()
                        .copied()
                        .chain(deletes.iter().map(|(i, _)| *i)),
                );
                if pipelined && deletes.is_empty() && !rows.is_empty() {
                    let job = match self.prepare(&table, rows).await {
                        Ok((_, columns, rows, keys)) => self
                            .copy_job(&table, &columns, &rows, offsets)
                            .await
                            .map(|job| (job, keys)),
                        Err(e) => Err(e),
                    };
                    // A chunk holding a key of a chunk in flight waits for it: per key, the
                    // last record wins.
                    let overlaps = |f: &Inflight| match &job {
                        Ok((_, keys)) => !f.keys.is_disjoint(keys),
                        Err(_) => true,
                    };
                    if inflight.iter().any(overlaps) {
                        self.finish_all(&mut inflight, records, &mut rejected)
                            .await?;
                    }
                    while inflight.len() >= most {
                        let oldest = inflight.pop_front().expect("not empty");
                        self.finish(oldest, records, &mut rejected).await?;
                    }
                    match job {
                        Ok((job, keys)) => {
                            inflight.push_back(Inflight {
                                handle: tokio::spawn(job.run()),
                                table,
                                indices,
                                keys,
                            });
                            // A task spawned from a worker waits in its LIFO slot, which other
                            // workers do not steal from, until this task yields: yield now, or
                            // the chunk would start only after the next one is encoded.
                            tokio::task::yield_now().await;
                        }
                        Err(e) if !data_error(&e) => return Err(e),
                        Err(e) => {
                            tracing::info!(table = %table, error = %e, "a batch failed; writing its records one by one");
                            self.one_by_one(&table, indices, Vec::new(), records, &mut rejected)
                                .await?;
                        }
                    }
                    continue;
                }
                self.finish_all(&mut inflight, records, &mut rejected)
                    .await?;
                let keys: Vec<Value> = deletes.iter().map(|(_, k)| k.clone()).collect();
                match self.write_table(&table, rows, keys, offsets).await {
                    Ok(()) => {}
                    Err(e) if !data_error(&e) => return Err(e),
                    // Some record is bad for the table (a value of the wrong type, a missing
                    // column): find which, one record per transaction; the good ones are written.
                    Err(e) => {
                        tracing::info!(table = %table, error = %e, "a batch failed; writing its records one by one");
                        self.one_by_one(&table, indices, deletes, records, &mut rejected)
                            .await?;
                    }
                }
            }
        }
        self.finish_all(&mut inflight, records, &mut rejected)
            .await?;
        Ok(rejected)
    }

    async fn flush(&mut self) -> Result<()> {
        // Every put committed its own transaction.
        Ok(())
    }

    async fn stored_offsets(&mut self) -> Result<Option<Vec<(TopicPartition, u64)>>> {
        let Some(connector) = self.offsets_of.clone() else {
            return Ok(None);
        };
        let pool = self.pool().await?;
        let stored = jdbc_offsets::load(&pool, &self.url, self.dialect, &connector).await?;
        Ok(Some(stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_log::Record;

    fn record(offset: u64, value: String) -> ConsumerRecord {
        ConsumerRecord {
            topic: "upserts".into(),
            partition: 0,
            record: Record {
                offset,
                timestamp: 0,
                key: None,
                value: Some(value.into_bytes().into()),
                headers: Vec::new(),
            },
        }
    }

    /// Existing keys through the staging table and new ones, over several chunks written at
    /// once: only the record's columns change, and per key the last record wins, also when
    /// its chunk follows the one holding an earlier record of the key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upserts_update_only_the_records_columns_and_the_last_record_wins() {
        let Some(url) = jdbc::test_postgres().await else {
            return;
        };
        let table = format!("upsert_test_{}", std::process::id());
        let pool = jdbc::connect(&url).await.unwrap();
        let sql = format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, score BIGINT, note TEXT);
             INSERT INTO {table} SELECT i, 0, 'kept' FROM generate_series(1, 30000) i"
        );
        sqlx::raw_sql(&sql).execute(&pool).await.unwrap();
        let config = ConnectorConfig::from_json(
            Some("upserts"),
            &serde_json::json!({
                "connector.class": "jdbc-sink", "connection.url": url, "topics": "upserts",
                "table.name.format": table, "insert.mode": "upsert",
                "pk.mode": "record_value", "pk.fields": "id",
            }),
        )
        .unwrap();
        let mut sink = JdbcSink::new(&config).unwrap();
        // Keys 1..=50,000 (the first 30,000 exist), then key 7 again in the third chunk.
        let mut records: Vec<ConsumerRecord> = (1..=50_000u64)
            .map(|i| record(i, format!(r#"{{"id":{i},"score":{i}}}"#)))
            .collect();
        records.push(record(50_001, r#"{"id":7,"score":-7}"#.into()));
        assert!(sink.put(&records).await.unwrap().is_empty());
        let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(&format!(
            "SELECT id, score, note FROM {table} WHERE id IN (1, 7, 30000, 30001, 50000) ORDER BY id"
        ))
        .fetch_all(&pool)
        .await
        .unwrap();
        let kept = || Some("kept".to_string());
        assert_eq!(
            rows,
            [
                (1, 1, kept()),
                (7, -7, kept()),
                (30000, 30000, kept()),
                (30001, 30001, None),
                (50000, 50000, None)
            ]
        );
        let wrong: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table} WHERE score <> id AND id <> 7"
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(wrong, 0);
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(&pool)
            .await
            .unwrap();
    }
}
