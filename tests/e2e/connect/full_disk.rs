//! Sinks whose target fills up (issue 26): a file sink and a Parquet sink writing to a small
//! tmpfs that fills, and a JDBC sink into a PostgreSQL table on a tablespace on a small tmpfs that fills. Each
//! reports FAILED with the cause in its REST status, keeps retrying with backoff, never
//! commits offsets past what it wrote, sends nothing to the dead-letter topic (a full disk is
//! not a bad record, even under `errors.tolerance = all`), and once space is freed finishes by
//! itself with every record — the file without a torn line, exactly once under exactly-once.
//!
//! The tmpfs is mounted by the test (root; skipped otherwise, unless
//! `RUNNEL_REQUIRE_SERVICES=1`). `errors.retry.delay.max.ms` keeps the retries a few hundred
//! milliseconds apart so that the tests take seconds.

use super::*;
use crate::faults::SmallDisk;
use runnel::connectors::Status;

/// Serves the worker's REST API; returns its address.
fn serve_rest(rt: &tokio::runtime::Runtime, worker: &Worker) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let router = runnel::connectors::rest::router(worker.clone());
    rt.spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Waits until `GET /connectors/{name}/status` says FAILED with a trace holding every one of
/// `causes`; returns the trace.
fn wait_failed_with(addr: &str, name: &str, causes: &[&str]) -> String {
    let mut trace = String::new();
    wait_for(&format!("{name} FAILED with {causes:?}"), || {
        let (_, s) = http(addr, "GET", &format!("/connectors/{name}/status"), None);
        trace = s["tasks"][0]["trace"].as_str().unwrap_or_default().into();
        s["tasks"][0]["state"] == "FAILED" && causes.iter().all(|c| trace.contains(c))
    });
    trace
}

/// Runs `look` between two retries of a failed connector, at least `restarts` restarts in:
/// its status is FAILED with the same restart count before and after, so no attempt ran
/// meanwhile and what `look` sees is what a failed attempt left.
fn between_retries<T>(worker: &Worker, name: &str, restarts: u32, look: impl Fn() -> T) -> T {
    let mut seen = None;
    wait_for(&format!("{name} to retry {restarts} times"), || {
        let before: Status = worker.status(name).unwrap();
        let v = look();
        let settled = before.state == State::Failed
            && before.restarts >= restarts
            && worker.status(name).unwrap() == before;
        if settled {
            seen = Some(v);
        }
        settled
    });
    seen.unwrap()
}

fn dead_letters(rt: &tokio::runtime::Runtime, client: &SharedLogClient) -> usize {
    rt.block_on(runnel::rides::read_raw(client, "dlq"))
        .map(|d| d.len())
        .unwrap_or(0)
}

/// Fills the filesystem holding `path` with a file there, then gives back `free` bytes.
fn fill(path: &Path, free: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x55u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(free)).unwrap();
}

/// 5,000 lines go to the file; the disk fills (a few KiB left, so a line is cut in the middle)
/// and 25,000 more are produced; the sink fails, retries, and between retries the file ends
/// with a whole line and holds every committed record; the filler is deleted and the sink
/// finishes by itself.
fn a_file_sink_on_a_disk_that_fills(exactly_once: bool) {
    let Some(disk) = SmallDisk::mount("1m") else {
        return;
    };
    let out_dir = disk.path();
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("out.txt");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let lines: Vec<String> = (0..30_000)
        .map(|i| format!("line {i:06} of the input"))
        .collect();
    produce(&rt, &client, "lines", &lines[..5_000]);
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    let addr = serve_rest(&rt, &worker);
    worker
        .create(config(
            "out",
            serde_json::json!({
                "connector.class": "FileStreamSink", "file": out.to_str().unwrap(), "topics": "lines",
                "exactly.once.support": if exactly_once { "required" } else { "none" },
                "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "dlq",
                "errors.retry.delay.max.ms": "300",
            }),
        ))
        .unwrap();
    wait_for("the first 5,000 lines", || lines_of(&out).len() == 5_000);

    let filler = out_dir.join("filler");
    fill(&filler, 12 << 10);
    produce(&rt, &client, "lines", &lines[5_000..]);
    wait_failed_with(
        &addr,
        "out",
        &["No space left on device", out.to_str().unwrap()],
    );
    let sidecar = format!("{}.offsets", out.display());
    let (group, bytes, stored) = between_retries(&worker, "out", 2, || {
        // The committed offset first: the file only grows past what it covers.
        let group = committed(&rt, &client, "out", "lines");
        let stored: Option<serde_json::Value> = std::fs::read(&sidecar)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap());
        (group, std::fs::read(&out).unwrap(), stored)
    });
    assert!(
        bytes.ends_with(b"\n"),
        "between retries the file ends with a whole line"
    );
    let written: Vec<&str> = std::str::from_utf8(&bytes).unwrap().lines().collect();
    assert!(written.len() < lines.len(), "the disk was full");
    assert!(group >= 5_000, "the first lines were committed ({group})");
    if exactly_once {
        assert_eq!(written, lines[..written.len()], "each line once, in order");
        let stored = stored.expect("the offsets sidecar");
        assert_eq!(
            stored["length"],
            bytes.len(),
            "the file is cut to its commit"
        );
        assert_eq!(stored["offsets"][0][2], written.len(), "{stored}");
        assert!(group <= written.len() as u64, "{group} > {}", written.len());
    } else {
        let have: std::collections::HashSet<&str> = written.iter().copied().collect();
        let valid: std::collections::HashSet<&str> = lines.iter().map(String::as_str).collect();
        assert!(written.iter().all(|l| valid.contains(l)), "no torn line");
        assert!(
            lines[..group as usize]
                .iter()
                .all(|l| have.contains(l.as_str())),
            "every committed record ({group}) is in the file"
        );
    }
    assert_eq!(
        dead_letters(&rt, &client),
        0,
        "a full disk is not a bad record"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_for("every line after space is freed", || {
        committed(&rt, &client, "out", "lines") == lines.len() as u64
    });
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with('\n'));
    let written: Vec<&str> = text.lines().collect();
    if exactly_once {
        assert!(written == lines, "every line once, in order");
    } else {
        // At least once: lines after the last commit may come twice, never torn or glued.
        let have: std::collections::HashSet<&str> = written.iter().copied().collect();
        let valid: std::collections::HashSet<&str> = lines.iter().map(String::as_str).collect();
        let bad: Vec<&&str> = written.iter().filter(|l| !valid.contains(**l)).collect();
        assert!(bad.is_empty(), "torn or glued lines: {bad:?}");
        assert_eq!(have.len(), lines.len(), "every line");
    }
    let (_, s) = http(&addr, "GET", "/connectors/out/status", None);
    assert_eq!(s["tasks"][0]["state"], "RUNNING", "{s}");
    assert!(worker.status("out").unwrap().restarts >= 2);
    assert_eq!(dead_letters(&rt, &client), 0);
    worker.delete("out").unwrap();
}

#[test]
fn a_file_sink_on_a_full_disk_fails_retries_and_resumes_without_a_torn_line() {
    a_file_sink_on_a_disk_that_fills(false);
}

#[test]
fn an_exactly_once_file_sink_on_a_full_disk_resumes_with_each_line_once() {
    a_file_sink_on_a_disk_that_fills(true);
}

/// The ids in the closed Parquet files of `dir`, sorted.
fn parquet_ids(dir: &Path) -> Vec<i64> {
    use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use arrow::array::Int64Array;
    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if !e.file_name().to_string_lossy().ends_with(".parquet") {
            continue;
        }
        let file = std::fs::File::open(e.path()).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
        for b in reader.build().unwrap() {
            let b = b.unwrap();
            let col = b.column_by_name("id").unwrap();
            let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
            ids.extend(col.values().iter().copied());
        }
    }
    ids.sort();
    ids
}

/// Parquet files of 5,000 rows: two are written, the disk fills, 20,000 more rows come; closing
/// the next file fails, and between retries every `.parquet` file is whole and together they
/// hold exactly the committed records; once the filler is deleted every row is in a file once.
#[test]
fn a_parquet_sink_on_a_full_disk_fails_retries_and_loses_nothing() {
    let Some(disk) = SmallDisk::mount("3m") else {
        return;
    };
    let out_dir = disk.path();
    std::fs::create_dir(&out_dir).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let n = 30_000;
    let rows: Vec<String> = (0..n)
        .map(|i| format!("{{\"id\":{i},\"v\":\"row {i:06} of the input, padded\"}}"))
        .collect();
    produce(&rt, &client, "rows", &rows[..10_000]);
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    let addr = serve_rest(&rt, &worker);
    worker
        .create(config(
            "pq",
            serde_json::json!({
                "connector.class": "parquet-sink", "directory": out_dir.to_str().unwrap(),
                "topics": "rows", "schema": "id:int64,v:string", "rotate.rows": "5000",
                "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "dlq",
                "errors.retry.delay.max.ms": "300",
            }),
        ))
        .unwrap();
    wait_for("the first two files", || {
        committed(&rt, &client, "pq", "rows") == 10_000
    });
    let filler = out_dir.join("filler");
    fill(&filler, 12 << 10);
    produce(&rt, &client, "rows", &rows[10_000..]);
    wait_failed_with(&addr, "pq", &["No space left on device", ".parquet"]);
    let (group, ids) = between_retries(&worker, "pq", 2, || {
        let group = committed(&rt, &client, "pq", "rows");
        (group, parquet_ids(&out_dir))
    });
    assert!(group >= 10_000 && group < n as u64, "{group}");
    assert_eq!(
        ids,
        (0..group as i64).collect::<Vec<_>>(),
        "the closed files hold the committed records, once"
    );
    assert_eq!(
        dead_letters(&rt, &client),
        0,
        "a full disk is not a bad record"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_for("every row after space is freed", || {
        committed(&rt, &client, "pq", "rows") == n as u64
    });
    assert_eq!(parquet_ids(&out_dir), (0..n as i64).collect::<Vec<_>>());
    let (_, s) = http(&addr, "GET", "/connectors/pq/status", None);
    assert_eq!(s["tasks"][0]["state"], "RUNNING", "{s}");
    assert_eq!(dead_letters(&rt, &client), 0);
    worker.delete("pq").unwrap();
}

/// One statement on PostgreSQL in the simple protocol (`CREATE TABLESPACE` may not run in a
/// transaction block); the SQLSTATE of its error.
fn pg(url: &str, sql: &str) -> Result<(), String> {
    use sqlx::{Connection, Executor};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let r = conn.execute(sqlx::raw_sql(sql)).await;
        let _ = conn.close().await;
        r.map(drop).map_err(|e| {
            e.as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.into_owned())
                .unwrap_or_else(|| e.to_string())
        })
    })
}

/// Drops the test's tables and tablespace, also when the test fails (before the tmpfs under
/// them is unmounted).
struct Tablespace {
    url: String,
    name: String,
    tables: Vec<String>,
}

impl Drop for Tablespace {
    fn drop(&mut self) {
        for t in &self.tables {
            let _ = pg(&self.url, &format!("DROP TABLE IF EXISTS \"{t}\""));
        }
        if let Err(e) = pg(
            &self.url,
            &format!("DROP TABLESPACE IF EXISTS {}", self.name),
        ) {
            eprintln!("could not drop tablespace {}: {e}", self.name);
        }
    }
}

#[test]
fn a_jdbc_sink_into_a_full_postgresql_tablespace_waits_for_space_and_loses_nothing() {
    // Before the reachability check: another test may have the server stopped.
    let _one = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let Some(url) = database(
        "RUNNEL_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let Some(disk) = SmallDisk::mount("2m") else {
        return;
    };
    // The server must see the directory: the tmpfs is mounted on this host, and PostgreSQL
    // runs here too (the tests start and stop it with pg_ctlcluster).
    let location = disk.path();
    std::fs::create_dir(&location).unwrap();
    let chown = Command::new("chown")
        .arg("postgres:postgres")
        .arg(&location)
        .status()
        .unwrap();
    assert!(chown.success(), "chown postgres {}", location.display());
    let id = format!("{}_{}", std::process::id(), rand_suffix());
    let (table, filler) = (format!("full_{id}"), format!("filler_{id}"));
    let _cleanup = Tablespace {
        url: url.clone(),
        name: format!("full_ts_{id}"),
        tables: vec![table.clone(), filler.clone()],
    };
    let ts = &_cleanup.name;
    pg(
        &url,
        &format!("CREATE TABLESPACE {ts} LOCATION '{}'", location.display()),
    )
    .unwrap();
    // As the sink's auto.create would make it, in the small tablespace, its index too.
    pg(&url, &format!(
        "CREATE TABLE \"{table}\" (\"id\" BIGINT NOT NULL, \"v\" TEXT, PRIMARY KEY (\"id\") USING INDEX TABLESPACE {ts}) TABLESPACE {ts}"
    ))
    .unwrap();
    pg(
        &url,
        &format!("CREATE TABLE \"{filler}\" (pad TEXT) TABLESPACE {ts}"),
    )
    .unwrap();
    // Big inserts until one fails, then small ones: no page is left for the table to grow by.
    for rows in [20_000, 50] {
        let insert = format!(
            "INSERT INTO \"{filler}\" SELECT md5(g::text) || md5(random()::text) FROM generate_series(1, {rows}) g"
        );
        let code = loop {
            if let Err(code) = pg(&url, &insert) {
                break code;
            }
        };
        assert_eq!(code, "53100", "PostgreSQL's disk_full");
    }

    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let n = 5_000;
    let rows: Vec<String> = (1..=n)
        .map(|i| format!("{{\"id\":{i},\"v\":\"row {i}\"}}"))
        .collect();
    produce(&rt, &client, &table, &rows);
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    let addr = serve_rest(&rt, &worker);
    worker
        .create(config(
            "to-db",
            serde_json::json!({
                "connector.class": "JdbcSinkConnector", "connection.url": url, "topics": table,
                "insert.mode": "upsert", "pk.mode": "record_value", "pk.fields": "id",
                "auto.create": "true",
                "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "dlq",
                "errors.retry.delay.max.ms": "300",
            }),
        ))
        .unwrap();
    let trace = wait_failed_with(&addr, "to-db", &["SQLSTATE 53100"]);
    assert!(trace.contains("No space left on device"), "{trace}");
    let (group, count) = between_retries(&worker, "to-db", 2, || {
        let group = committed(&rt, &client, "to-db", &table);
        (group, count_rows(&url, &table))
    });
    assert!(count < n as i64, "the tablespace was full ({count} rows)");
    assert!(
        group as i64 <= count,
        "committed {group} with {count} rows in the table"
    );
    assert_eq!(
        dead_letters(&rt, &client),
        0,
        "a full disk is not a bad record"
    );

    pg(&url, &format!("DROP TABLE \"{filler}\"")).unwrap();
    wait_for("every row after space is freed", || {
        count_rows(&url, &table) == n as i64
    });
    wait_for("the offsets committed", || {
        committed(&rt, &client, "to-db", &table) == n as u64
    });
    let (_, s) = http(&addr, "GET", "/connectors/to-db/status", None);
    assert_eq!(s["tasks"][0]["state"], "RUNNING", "{s}");
    assert_eq!(dead_letters(&rt, &client), 0);
    worker.delete("to-db").unwrap();
}
