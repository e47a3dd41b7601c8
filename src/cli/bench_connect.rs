//! `runnel bench connect`: connectors against their physical references, on N rows of about
//! 100 bytes of JSON (`{"id", "name", "score", "pad"}`):
//! - file source ingest (file → topic, until every offset is stored) vs `cat FILE > /dev/null`;
//! - topic → PostgreSQL (jdbc-sink, upsert by `id`, until its consumer group committed N
//!   records, then the table is checked to hold N rows) vs `COPY` of
//!   the same rows as CSV through `psql \copy`;
//! - PostgreSQL → topic (jdbc-source, incrementing), until the topic holds N records.
//!
//! PostgreSQL comes from `RUNNEL_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); its rows go into scratch tables dropped after.

use super::output;
use anyhow::{Context, Result, bail};
use clap::Args;
use runnel::connectors::{ConnectorConfig, Worker};
use runnel::log::{Log, SharedLogClient, TopicPartition};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct ConnectBenchArgs {
    /// Rows (lines) per run.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// 20,000 rows: a smoke test, not for numbers.
    #[arg(long)]
    quick: bool,
}

fn config(name: &str, v: serde_json::Value) -> Result<ConnectorConfig> {
    Ok(ConnectorConfig::from_json(Some(name), &v)?)
}

async fn wait(what: &str, mut done: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !done().await? {
        if Instant::now() > deadline {
            bail!("gave up waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn count(url: &str, table: &str) -> Result<i64> {
    use sqlx::Connection;
    let mut c = sqlx::AnyConnection::connect(url).await?;
    let n = sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM \"{table}\""))
        .fetch_one(&mut c)
        .await
        .unwrap_or(0);
    c.close().await?;
    Ok(n)
}

async fn execute(url: &str, sql: &str) -> Result<()> {
    use sqlx::Connection;
    let mut c = sqlx::AnyConnection::connect(url).await?;
    sqlx::query(sql).execute(&mut c).await?;
    c.close().await?;
    Ok(())
}

pub async fn run(args: ConnectBenchArgs) -> Result<()> {
    sqlx::any::install_default_drivers();
    let rows = if args.quick { 20_000 } else { args.rows };
    let url = std::env::var("RUNNEL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let tmp = tempfile::Builder::new()
        .prefix("runnel-bench-connect-")
        .tempdir()?;
    let (file, csv) = (tmp.path().join("rows.jsonl"), tmp.path().join("rows.csv"));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut c = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        for i in 1..=rows {
            let (name, score, pad) = (format!("user-{i}"), i % 1000, "x".repeat(40));
            writeln!(
                f,
                r#"{{"id":{i},"name":"{name}","score":{score},"pad":"{pad}"}}"#
            )?;
            writeln!(c, "{i},{name},{score},{pad}")?;
        }
    }
    let bytes = std::fs::metadata(&file)?.len();
    let mut t = output::table(
        &[
            "benchmark",
            "rows",
            "seconds",
            "rows/s",
            "MB/s",
            "vs reference",
        ],
        &[1, 2, 3, 4],
    );
    let mut row = |name: &str, secs: f64, reference: Option<f64>| {
        t.add_row(vec![
            name.to_string(),
            rows.to_string(),
            format!("{secs:.2}"),
            format!("{:.0}", rows as f64 / secs),
            format!("{:.1}", bytes as f64 / secs / 1e6),
            reference.map_or("-".into(), |r| format!("{:.0} %", r / secs * 100.0)),
        ]);
    };

    // cat: the physical reference for reading the file.
    let started = Instant::now();
    let status = std::process::Command::new("cat")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("cat failed");
    }
    let cat = started.elapsed().as_secs_f64();
    row("cat FILE > /dev/null", cat, None);

    let log = Log::open(tmp.path().join("data"))?;
    let client: SharedLogClient = Arc::new(log.clone());
    let worker = Worker::new(client.clone()).await?;
    let pb = output::spinner("{spinner} {msg} {elapsed}", "file source → topic");
    let started = Instant::now();
    worker.create(config("bench-in", serde_json::json!({
        "connector.class": "file-source", "file": file.to_str().context("path")?, "topic": "bench-rows",
    }))?)?;
    wait("the file source", async || {
        Ok(worker
            .offsets("bench-in")
            .await
            .first()
            .and_then(|(_, o)| o["position"].as_u64())
            == Some(bytes))
    })
    .await?;
    let ingest = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    row("file source → topic", ingest, Some(cat));

    // COPY: the reference for loading PostgreSQL.
    let suffix = std::process::id();
    let (copy_table, sink_table) = (
        format!("bench_copy_{suffix}"),
        format!("bench_sink_{suffix}"),
    );
    let columns = "(id BIGINT PRIMARY KEY, name TEXT, score BIGINT, pad TEXT)";
    execute(&url, &format!("CREATE TABLE \"{copy_table}\" {columns}")).await?;
    let started = Instant::now();
    let psql = std::process::Command::new("psql")
        .arg(&url)
        .args(["-q", "-c"])
        .arg(format!(
            "\\copy \"{copy_table}\" FROM '{}' CSV",
            csv.display()
        ))
        .status()
        .context("psql (for the COPY reference)")?;
    let copy = started.elapsed().as_secs_f64();
    if !psql.success() {
        bail!("psql \\copy failed");
    }
    row("COPY (psql \\copy, CSV)", copy, None);

    let pb = output::spinner("{spinner} {msg} {elapsed}", "topic → PostgreSQL");
    let started = Instant::now();
    worker.create(config(
        "bench-to-pg",
        serde_json::json!({
            "connector.class": "jdbc-sink", "connection.url": url, "topics": "bench-rows",
            "table.name.format": sink_table, "insert.mode": "upsert", "pk.mode": "record_value",
            "pk.fields": "id", "auto.create": "true", "batch.size": "1000",
        }),
    )?)?;
    // The sink's committed offset, not COUNT(*): counting a growing table every few
    // milliseconds would load the server being measured.
    let tp = [TopicPartition::new("bench-rows", 0)];
    wait("the PostgreSQL sink", async || {
        Ok(client.committed_offsets("connect-bench-to-pg", &tp).await?[0] == Some(rows))
    })
    .await?;
    let sink = started.elapsed().as_secs_f64();
    let n = count(&url, &sink_table).await?;
    if n != rows as i64 {
        bail!("the sink committed every record but the table has {n} rows, not {rows}");
    }
    pb.finish_and_clear();
    row("topic → PostgreSQL (upsert)", sink, Some(copy));

    let pb = output::spinner("{spinner} {msg} {elapsed}", "PostgreSQL → topic");
    let started = Instant::now();
    worker.create(config(
        "bench-from-pg",
        serde_json::json!({
            "connector.class": "jdbc-source", "connection.url": url, "mode": "incrementing",
            "incrementing.column.name": "id", "table.whitelist": copy_table, "topic.prefix": "pg-",
            "poll.interval.ms": "100", "batch.max.rows": "10000",
        }),
    )?)?;
    let topic = format!("pg-{copy_table}");
    wait("the PostgreSQL source", async || {
        let end = match client.partition_count(&topic).await? {
            Some(_) => {
                client
                    .end_offsets(&[TopicPartition::new(&*topic, 0)])
                    .await?[0]
            }
            None => 0,
        };
        Ok(end >= rows)
    })
    .await?;
    let source = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    row("PostgreSQL → topic (incrementing)", source, None);

    for name in worker.names() {
        worker.delete(&name)?;
    }
    for table in [&copy_table, &sink_table] {
        let _ = execute(&url, &format!("DROP TABLE IF EXISTS \"{table}\"")).await;
    }
    drop((worker, client));
    super::close_log(log);
    output::print(t)
}
