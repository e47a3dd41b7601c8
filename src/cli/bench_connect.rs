//! `runnel bench connect`: connectors against their physical references, on N rows of about
//! 100 bytes of JSON (`{"id", "name", "score", "pad"}`):
//! - file source ingest (file → topic, until every offset is stored), as text lines and as
//!   checked JSON, vs `cat FILE > /dev/null`;
//! - topic → file (file-sink) and topic → Parquet (parquet-sink), until the sink's consumer
//!   group committed N records, vs `cp FILE`;
//! - topic → PostgreSQL (jdbc-sink, upsert by `id`, until its consumer group committed N
//!   records, then the table is checked to hold N rows), into an empty table and again into
//!   the table that now has every key, vs `COPY` of the same rows as CSV through `psql \copy`;
//! - PostgreSQL → topic (jdbc-source, incrementing), until the topic holds N records, vs
//!   `COPY (table) TO` a file through `psql \copy`.
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
        // Short: the file source takes a fraction of a second, and the conditions are cheap
        // reads of the log (committed and end offsets), never of the database measured.
        tokio::time::sleep(Duration::from_millis(5)).await;
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

/// Runs a command (`psql`, `cat`, `cp`: a reference) and returns the seconds it took.
fn timed(program: &str, args: &[&str]) -> Result<f64> {
    let started = Instant::now();
    let status = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("{program} (a reference)"))?;
    if !status.success() {
        bail!("{program} {args:?} failed");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Starts a file source of `file` into `topic` and waits until its offset is the file's end;
/// returns the seconds it took.
async fn ingest(
    worker: &Worker,
    name: &str,
    file: &std::path::Path,
    topic: &str,
    format: &str,
) -> Result<f64> {
    let pb = output::spinner(
        "{spinner} {msg} {elapsed}",
        &format!("file source ({format}) → {topic}"),
    );
    let bytes = std::fs::metadata(file)?.len();
    let started = Instant::now();
    worker.create(config(
        name,
        serde_json::json!({
            "connector.class": "file-source", "file": file.to_str().context("path")?,
            "topic": topic, "format": format,
        }),
    )?)?;
    wait("the file source", async || {
        Ok(worker
            .offsets(name)
            .await?
            .first()
            .and_then(|(_, o)| o["position"].as_u64())
            == Some(bytes))
    })
    .await?;
    pb.finish_and_clear();
    Ok(started.elapsed().as_secs_f64())
}

/// Starts a sink over `rows` records and waits until its consumer group committed them all;
/// returns the seconds it took. The committed offset, not the sink's output: counting a
/// growing table every few milliseconds would load the server being measured.
async fn run_sink(
    worker: &Worker,
    client: &SharedLogClient,
    rows: u64,
    what: &str,
    config: ConnectorConfig,
) -> Result<f64> {
    let pb = output::spinner("{spinner} {msg} {elapsed}", what);
    let group = format!("connect-{}", config.name);
    let topic = config.get("topics").context("a sink's topics")?.to_string();
    let started = Instant::now();
    worker.create(config)?;
    let tp = [TopicPartition::new(&*topic, 0)];
    wait(what, async || {
        Ok(client.committed_offsets(&group, &tp).await?[0] == Some(rows))
    })
    .await?;
    pb.finish_and_clear();
    Ok(started.elapsed().as_secs_f64())
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
    // The same keys with other scores: the updates of existing rows.
    let updates = tmp.path().join("updates.jsonl");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut c = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        let mut u = std::io::BufWriter::new(std::fs::File::create(&updates)?);
        for i in 1..=rows {
            let (name, score, pad) = (format!("user-{i}"), i % 1000, "x".repeat(40));
            writeln!(
                f,
                r#"{{"id":{i},"name":"{name}","score":{score},"pad":"{pad}"}}"#
            )?;
            writeln!(c, "{i},{name},{score},{pad}")?;
            let score = score + 1;
            writeln!(
                u,
                r#"{{"id":{i},"name":"{name}","score":{score},"pad":"{pad}"}}"#
            )?;
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

    let path = file.to_str().context("path")?;
    let cat = timed("cat", &[path])?;
    row("cat FILE > /dev/null", cat, None);

    let log = Log::open(tmp.path().join("data"))?;
    let client: SharedLogClient = Arc::new(log.clone());
    let worker = Worker::new(client.clone()).await?;
    for format in ["text", "json"] {
        let topic = format!("bench-rows-{format}");
        let secs = ingest(
            &worker,
            &format!("bench-in-{format}"),
            &file,
            &topic,
            format,
        )
        .await?;
        row(&format!("file source → topic ({format})"), secs, Some(cat));
    }

    // cp: the physical reference for writing a file.
    let copied = tmp.path().join("rows.copy");
    let cp = timed("cp", &[path, copied.to_str().context("path")?])?;
    std::fs::remove_file(&copied)?;
    row("cp FILE FILE2", cp, None);
    let sink_file = tmp.path().join("sink.jsonl");
    let sink = run_sink(
        &worker,
        &client,
        rows,
        "topic → file",
        config(
            "bench-to-file",
            serde_json::json!({
                "connector.class": "file-sink", "file": sink_file.to_str().context("path")?,
                "topics": "bench-rows-text",
            }),
        )?,
    )
    .await?;
    if std::fs::metadata(&sink_file)?.len() != bytes {
        bail!("the file sink committed every record but its file is not the input's size");
    }
    row("topic → file", sink, Some(cp));
    let parquet_dir = tmp.path().join("parquet");
    let sink = run_sink(&worker, &client, rows, "topic → Parquet", config("bench-to-parquet", serde_json::json!({
        "connector.class": "parquet-sink", "directory": parquet_dir.to_str().context("path")?,
        "topics": "bench-rows-text", "schema": "id:int64,name:string,score:int64,pad:string",
        "rotate.rows": (rows / 4).max(1).to_string(),
    }))?).await?;
    row("topic → Parquet", sink, Some(cp));

    // COPY: the reference for loading PostgreSQL.
    let suffix = std::process::id();
    let (copy_table, sink_table) = (
        format!("bench_copy_{suffix}"),
        format!("bench_sink_{suffix}"),
    );
    let columns = "(id BIGINT PRIMARY KEY, name TEXT, score BIGINT, pad TEXT)";
    execute(&url, &format!("CREATE TABLE \"{copy_table}\" {columns}")).await?;
    let copy_in = format!("\\copy \"{copy_table}\" FROM '{}' CSV", csv.display());
    let copy = timed("psql", &[&url, "-q", "-c", &copy_in])?;
    row("COPY FROM (psql \\copy, CSV)", copy, None);

    ingest(
        &worker,
        "bench-in-updates",
        &updates,
        "bench-rows-updates",
        "text",
    )
    .await?;
    // Into the new table, then the updates into the table that has every key by then.
    for (name, topic, what) in [
        ("bench-to-pg", "bench-rows-json", "first load"),
        ("bench-to-pg-updates", "bench-rows-updates", "existing keys"),
    ] {
        let sink = run_sink(&worker, &client, rows, &format!("topic → PostgreSQL ({what})"), config(
            name,
            serde_json::json!({
                "connector.class": "jdbc-sink", "connection.url": url, "topics": topic,
                "table.name.format": sink_table, "insert.mode": "upsert", "pk.mode": "record_value",
                "pk.fields": "id", "auto.create": "true", "batch.size": "1000",
            }),
        )?)
        .await?;
        let n = count(&url, &sink_table).await?;
        if n != rows as i64 {
            bail!("the sink committed every record but the table has {n} rows, not {rows}");
        }
        row(
            &format!("topic → PostgreSQL (upsert, {what})"),
            sink,
            Some(copy),
        );
    }

    // COPY TO: the reference for reading PostgreSQL.
    let copy_out = format!("\\copy \"{copy_table}\" TO '/dev/null' CSV");
    let copy_out = timed("psql", &[&url, "-q", "-c", &copy_out])?;
    row("COPY TO (psql \\copy, CSV)", copy_out, None);

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
    row("PostgreSQL → topic (incrementing)", source, Some(copy_out));

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
