//! A JDBC sink's consumed offsets kept in the target database (`exactly.once.support =
//! required`): the table `runnel_connect_offsets (connector, topic, kafka_partition,
//! next_offset)`.
//!
//! Contract: every database transaction that writes records of a partition also sets that
//! partition's `next_offset` to the offset after the last of them, so the table and the rows
//! always agree. At start the sink reads its offsets back and the worker resumes each
//! partition from them, so a crash between a commit in the database and the commit of the
//! consumer group neither loses nor repeats a row, whatever `insert.mode` is. Transactions are
//! written in offset order per partition, so a stored offset never goes back.

use crate::error::Result;
use crate::jdbc::{self, Dialect};
use runnel_log::{ConsumerRecord, TopicPartition};
use sqlx::AnyPool;
use std::collections::BTreeMap;

pub const TABLE: &str = "runnel_connect_offsets";

/// (topic, partition) → the next offset to read, for one transaction's records.
pub type TxnOffsets = BTreeMap<(String, u32), u64>;

/// The offsets after the records at `indices` of `records`.
pub fn of_records(
    records: &[ConsumerRecord],
    indices: impl IntoIterator<Item = usize>,
) -> TxnOffsets {
    let mut out = TxnOffsets::new();
    for i in indices {
        let r = &records[i];
        let next = out.entry((r.topic.to_string(), r.partition)).or_default();
        *next = (*next).max(r.record.offset + 1);
    }
    out
}

/// The same statement for the three databases (portable types, no quoting needed).
pub fn create_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (connector VARCHAR(255) NOT NULL, topic VARCHAR(255) NOT NULL, \
         kafka_partition INTEGER NOT NULL, next_offset BIGINT NOT NULL, \
         PRIMARY KEY (connector, topic, kafka_partition))"
    )
}

/// The statement setting one partition's offset (parameters: connector, topic, partition,
/// next offset).
pub fn upsert_sql(d: Dialect) -> String {
    let values = (1..=4).map(|n| d.param(n)).collect::<Vec<_>>().join(", ");
    let insert = format!(
        "INSERT INTO {TABLE} (connector, topic, kafka_partition, next_offset) VALUES ({values})"
    );
    match d {
        Dialect::MySql => {
            format!("{insert} ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset)")
        }
        Dialect::Postgres | Dialect::Sqlite => format!(
            "{insert} ON CONFLICT (connector, topic, kafka_partition) DO UPDATE SET next_offset = excluded.next_offset"
        ),
    }
}

/// Writes `offsets` in the transaction `tx` (the `Any` driver's).
pub async fn write_any(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    d: Dialect,
    connector: &str,
    offsets: &TxnOffsets,
) -> std::result::Result<(), sqlx::Error> {
    let sql = upsert_sql(d);
    for ((topic, partition), next) in offsets {
        sqlx::query(&sql)
            .bind(connector.to_string())
            .bind(topic.clone())
            .bind(i64::from(*partition))
            .bind(*next as i64)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Writes `offsets` in a PostgreSQL transaction of the `COPY` path.
pub async fn write_pg(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    connector: &str,
    offsets: &TxnOffsets,
) -> std::result::Result<(), sqlx::Error> {
    let sql = upsert_sql(Dialect::Postgres);
    for ((topic, partition), next) in offsets {
        sqlx::query(&sql)
            .bind(connector)
            .bind(topic)
            .bind(*partition as i32)
            .bind(*next as i64)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The stored offsets of `connector` (creating the table if needed).
pub async fn load(
    pool: &AnyPool,
    url: &str,
    d: Dialect,
    connector: &str,
) -> Result<Vec<(TopicPartition, u64)>> {
    sqlx::query(&create_sql())
        .execute(pool)
        .await
        .map_err(|e| jdbc::db_error(url, e))?;
    let sql = format!(
        "SELECT topic, kafka_partition, next_offset FROM {TABLE} WHERE connector = {}",
        d.param(1)
    );
    let rows = sqlx::query(&sql)
        .bind(connector.to_string())
        .fetch_all(pool)
        .await
        .map_err(|e| jdbc::db_error(url, e))?;
    use sqlx::Row;
    rows.iter()
        .map(|r| {
            let topic: String = r.try_get(0).map_err(|e| jdbc::db_error(url, e))?;
            let partition: i64 = r
                .try_get::<i64, _>(1)
                .or_else(|_| r.try_get::<i32, _>(1).map(i64::from))
                .map_err(|e| jdbc::db_error(url, e))?;
            let next: i64 = r.try_get(2).map_err(|e| jdbc::db_error(url, e))?;
            Ok((
                TopicPartition::new(topic, partition.max(0) as u32),
                next.max(0) as u64,
            ))
        })
        .collect()
}
