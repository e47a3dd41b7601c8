//! The `COPY` path of the JDBC sink, PostgreSQL's insert and upsert: a chunk of rows as CSV
//! ([`crate::csv::Writer::postgres`]) streamed by `COPY … FROM STDIN`, straight into the table or through a temporary staging
//! table, in one transaction per chunk (with the consumed offsets under exactly-once). A
//! [`CopyJob`] owns what it needs, so a chunk is written by a task while the next one is
//! encoded; a chunk is in the table entirely or not at all.

use super::{IN_FLIGHT, JdbcSink, Mode};
use crate::csv;
use crate::error::Result;
use crate::jdbc;
use crate::jdbc::offsets::{self as jdbc_offsets, TxnOffsets};
use serde_json::{Map, Value};

impl JdbcSink {
    /// PostgreSQL, insert and upsert: the rows as `COPY` text, streamed instead of binding
    /// every value, which is what makes it several times faster. In insert mode, and in upsert
    /// mode when a probe finds none of the chunk's keys in the table (a first load; for integer
    /// keys, none in their range), they are `COPY`ed straight into the table, in the probe's
    /// transaction; a key written by someone else in between is a unique violation, and the
    /// records are then written one by one, which probes again and upserts. Other upsert
    /// chunks go through a temporary table shaped like the target ([`Staging`]): one
    /// `UPDATE … FROM` sets the record's columns of the rows that exist (other columns keep
    /// their values, as in Kafka Connect), and an `INSERT … SELECT` adds the others, only if
    /// some key was missing. An `UPDATE` costs the server less than `INSERT … ON CONFLICT DO
    /// UPDATE`, which locks each row (a WAL record of its own) before updating it.
    pub(super) async fn copy_job(
        &mut self,
        table: &str,
        columns: &[String],
        rows: &[Map<String, Value>],
        offsets: TxnOffsets,
    ) -> Result<CopyJob> {
        let d = self.dialect;
        if self.pg.is_none() {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(IN_FLIGHT as u32)
                .connect(&self.url)
                .await
                .map_err(|e| jdbc::db_error(&self.url, e))?;
            self.pg = Some(pool);
        }
        let pool = self.pg.clone().expect("connected above");
        let cols: Vec<String> = columns.iter().map(|c| d.quote(c)).collect();
        let cols = cols.join(", ");
        let (csv, mut number) = (csv::Writer::postgres(), Vec::new());
        let mut text = Vec::with_capacity(rows.len() * 64);
        for r in rows {
            for (i, c) in columns.iter().enumerate() {
                let field = copy_field(r.get(c).unwrap_or(&Value::Null), &mut number);
                csv.field(i == 0, field.as_deref(), &mut text);
            }
            text.push(b'\n');
        }
        let direct = format!(
            "COPY {} ({cols}) FROM STDIN {}",
            d.quote(table),
            csv::POSTGRES_COPY_OPTIONS
        );
        let route = match self.mode {
            Mode::Upsert => {
                let probe = self.probe(table, rows);
                let range = match probe {
                    Some((_, Keys::Range(lo, hi))) => Some((lo, hi)),
                    _ => None,
                };
                Route::Staged {
                    stage: self.staging(table, columns, &cols, range),
                    probe,
                }
            }
            _ => Route::Direct,
        };
        Ok(CopyJob {
            pool,
            url: self.url.clone(),
            direct,
            route,
            rows: rows.len() as u64,
            text,
            offsets: self.offsets_of.clone().map(|c| (c, offsets)),
        })
    }

    /// The statements of the upsert through a staging table (one per table and column set),
    /// for keys in `range` when they are integers of one column.
    fn staging(
        &self,
        table: &str,
        columns: &[String],
        cols: &str,
        range: Option<(i64, i64)>,
    ) -> Staging {
        let d = self.dialect;
        let stage = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (table, columns).hash(&mut h);
            format!("runnel_stage_{:016x}", h.finish())
        };
        let qt = d.quote(table);
        let mut create = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {qt} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        );
        // The stage has no statistics, and the planner joins it to the table by a merge join
        // that reads the table's key index from its first entry, every chunk (a cost growing
        // with the table), or by a hash join over the whole table. Given the keys' range, a
        // merge join reads that range of the index once; without, an index lookup per staged
        // row is what the update needs.
        let mut within = String::new();
        match (range, self.pk_fields.as_slice()) {
            (Some((lo, hi)), [pk]) => {
                within = format!(" AND t.{} BETWEEN {lo} AND {hi}", d.quote(pk))
            }
            _ => create += "; SET LOCAL enable_mergejoin = off; SET LOCAL enable_hashjoin = off",
        }
        let rest: Vec<String> = columns
            .iter()
            .filter(|c| !self.pk_fields.contains(c))
            .map(|c| d.quote(c))
            .collect();
        let pk: Vec<String> = self.pk_fields.iter().map(|c| d.quote(c)).collect();
        let matches: Vec<String> = pk.iter().map(|c| format!("t.{c} = s.{c}")).collect();
        let matches = matches.join(" AND ");
        let update = (!rest.is_empty()).then(|| {
            let set: Vec<String> = rest.iter().map(|c| format!("{c} = s.{c}")).collect();
            format!(
                "UPDATE {qt} t SET {} FROM {stage} s WHERE {matches}{within}",
                set.join(", ")
            )
        });
        // A key someone else inserted since the UPDATE conflicts, and is updated then: the
        // record wins either way.
        let on_conflict = if rest.is_empty() {
            format!("ON CONFLICT ({}) DO NOTHING", pk.join(", "))
        } else {
            let set: Vec<String> = rest.iter().map(|c| format!("{c} = excluded.{c}")).collect();
            format!(
                "ON CONFLICT ({}) DO UPDATE SET {}",
                pk.join(", "),
                set.join(", ")
            )
        };
        Staging {
            create,
            copy: format!(
                "COPY {stage} ({cols}) FROM STDIN {}",
                csv::POSTGRES_COPY_OPTIONS
            ),
            update,
            insert: format!(
                "INSERT INTO {qt} ({cols}) SELECT {cols} FROM {stage} s \
                 WHERE NOT EXISTS (SELECT 1 FROM {qt} t WHERE {matches}) {on_conflict}"
            ),
        }
    }

    /// The probe that lets a chunk of new keys skip the staging table: one integer or text
    /// key column.
    fn probe(&self, table: &str, rows: &[Map<String, Value>]) -> Option<(String, Keys)> {
        let [pk] = self.pk_fields.as_slice() else {
            return None;
        };
        let (qt, qk) = (self.dialect.quote(table), self.dialect.quote(pk));
        let ints: Option<Vec<i64>> = rows
            .iter()
            .map(|r| r.get(pk).and_then(Value::as_i64))
            .collect();
        if let Some(keys) = ints {
            // One index descent for the keys' range instead of one per key: a first load's
            // keys are new and usually above all others. Keys interleaved with existing ones
            // take the staging table, which is correct for any.
            let (lo, hi) = keys
                .iter()
                .fold((i64::MAX, i64::MIN), |(lo, hi), &k| (lo.min(k), hi.max(k)));
            let probe = format!("SELECT EXISTS (SELECT 1 FROM {qt} WHERE {qk} BETWEEN $1 AND $2)");
            return Some((probe, Keys::Range(lo, hi)));
        }
        let texts: Option<Vec<String>> = rows
            .iter()
            .map(|r| r.get(pk).and_then(Value::as_str).map(str::to_string))
            .collect();
        let probe = format!("SELECT EXISTS (SELECT 1 FROM {qt} WHERE {qk} = ANY($1))");
        texts.map(|keys| (probe, Keys::Texts(keys)))
    }
}

/// One PostgreSQL batch ready to go: `COPY` it into the table or through the staging table.
/// Owns what it needs, so it can run in a task while the next batch is prepared.
pub(super) struct CopyJob {
    pool: sqlx::PgPool,
    url: String,
    /// `COPY` straight into the table.
    direct: String,
    route: Route,
    /// The rows in `text`.
    rows: u64,
    text: Vec<u8>,
    /// (connector, offsets) to store in the same transaction (exactly-once).
    offsets: Option<(String, TxnOffsets)>,
}

impl CopyJob {
    pub(super) async fn run(self) -> Result<()> {
        use sqlx::Executor;
        let err = |e| jdbc::db_error(&self.url, e);
        let mut tx = self.pool.begin().await.map_err(err)?;
        let staging = match &self.route {
            Route::Direct => None,
            Route::Staged { stage, probe: None } => Some(stage),
            Route::Staged {
                stage,
                probe: Some((probe, keys)),
            } => {
                let q = sqlx::query_scalar::<_, bool>(probe);
                let q = match keys {
                    Keys::Range(lo, hi) => q.bind(lo).bind(hi),
                    Keys::Texts(k) => q.bind(k),
                };
                q.fetch_one(&mut *tx).await.map_err(err)?.then_some(stage)
            }
        };
        let copy = staging.map_or(&self.direct, |s| &s.copy);
        if let Some(s) = staging {
            // Unprepared: its several statements go in one round trip.
            conn(&mut tx)
                .execute(s.create.as_str())
                .await
                .map_err(err)?;
        }
        let mut c = tx.copy_in_raw(copy).await.map_err(err)?;
        c.send(self.text.as_slice()).await.map_err(err)?;
        c.finish().await.map_err(err)?;
        if let Some(s) = staging {
            let updated = match &s.update {
                // Unprepared: its text holds the chunk's key range.
                Some(update) => conn(&mut tx)
                    .execute(update.as_str())
                    .await
                    .map_err(err)?
                    .rows_affected(),
                None => 0,
            };
            // Every key was there: nothing to insert, and no anti-join to pay for.
            if updated < self.rows {
                sqlx::query(&s.insert)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
        }
        if let Some((connector, offsets)) = &self.offsets {
            jdbc_offsets::write_pg(&mut tx, connector, offsets)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }
}

/// The connection of a transaction, for statements sent unprepared (`Executor` on a `&str`).
fn conn<'a>(tx: &'a mut sqlx::Transaction<'_, sqlx::Postgres>) -> &'a mut sqlx::PgConnection {
    tx
}

/// How a chunk reaches its table.
enum Route {
    /// `COPY` straight in (insert mode).
    Direct,
    /// Upsert: through the staging table, or straight in when the probe finds none of the
    /// chunk's keys in the table.
    Staged {
        stage: Staging,
        probe: Option<(String, Keys)>,
    },
}

/// Upsert through a temporary table: create it (emptied at each commit), `COPY` the rows into
/// it, `UPDATE` the rows whose keys are in the table, insert the others.
struct Staging {
    create: String,
    copy: String,
    /// `None` when every column is a key column: nothing to update.
    update: Option<String>,
    insert: String,
}

enum Keys {
    /// The smallest and the largest of integer keys.
    Range(i64, i64),
    Texts(Vec<String>),
}

/// A value's text for `COPY`: `None` for NULL, `t`/`f`, numbers as JSON writes them (into
/// `number`, reused), strings as they are, arrays and objects as JSON text.
fn copy_field<'v>(v: &'v Value, number: &'v mut Vec<u8>) -> Option<std::borrow::Cow<'v, [u8]>> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => (if *b { &b"t"[..] } else { b"f" }).into(),
        Value::Number(n) => {
            use std::io::Write;
            number.clear();
            write!(number, "{n}").expect("writing to a Vec succeeds");
            number.as_slice().into()
        }
        Value::String(s) => s.as_bytes().into(),
        other => other.to_string().into_bytes().into(),
    })
}
