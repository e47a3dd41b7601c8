//! The JDBC source's `timestamp`, `timestamp+incrementing` and `query` modes with Confluent's
//! semantics, and the sink's `auto.evolve`, on SQLite, PostgreSQL and MariaDB.

use super::convert::exec;
use super::*;

fn ids(rt: &tokio::runtime::Runtime, client: &SharedLogClient, topic: &str) -> Vec<i64> {
    rt.block_on(runnel::rides::read_raw(client, topic))
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            v["id"].as_i64().unwrap()
        })
        .collect()
}

/// Whether the source `connector`'s stored offset holds, under `key`, the `field` of the last
/// record of `topic`: the worker stores an offset only after writing the records before it.
fn offset_at_last(
    rt: &tokio::runtime::Runtime,
    worker: &Worker,
    client: &SharedLogClient,
    connector: &str,
    topic: &str,
    key: &str,
    field: &str,
) -> bool {
    let last = rt
        .block_on(runnel::rides::read_raw(client, topic))
        .unwrap_or_default()
        .last()
        .map(|r| serde_json::from_slice::<serde_json::Value>(r.value.as_deref().unwrap()).unwrap());
    let stored = rt.block_on(worker.offsets(connector)).unwrap();
    last.is_some_and(|row| stored.first().is_some_and(|(_, o)| o[key] == row[field]))
}

/// Rows (id, ts, v); `ts_type` is the dialect's timestamp column type.
fn timestamp_modes_on(url: &str, ts_type: &str) {
    let dir = tempfile::tempdir().unwrap();
    let table = format!("tsm_{}_{}", std::process::id(), rand_suffix());
    drop_table(url, &table);
    exec(
        url,
        &format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, ts {ts_type} NOT NULL, v VARCHAR(20))"
        ),
    );
    let insert = |rows: &[(i64, &str, &str)]| {
        for (id, ts, v) in rows {
            exec(
                url,
                &format!("INSERT INTO {table} (id, ts, v) VALUES ({id}, '{ts}', '{v}')"),
            );
        }
    };
    insert(&[
        (1, "2020-01-01 10:00:00", "a"),
        (2, "2020-01-01 10:00:00", "skip"),
        (3, "2020-01-01 11:00:00", "c"),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    let base = serde_json::json!({
        "connector.class": "io.confluent.connect.jdbc.JdbcSourceConnector", "connection.url": url,
        "timestamp.column.name": "ts", "incrementing.column.name": "id", "poll.interval.ms": "100",
    });
    let with = |extra: serde_json::Value| {
        let mut c = base.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let create = |name: &str, extra: serde_json::Value| {
        worker.create(config(name, with(extra))).unwrap();
    };
    create(
        "ts-inc",
        serde_json::json!({"mode": "timestamp+incrementing", "table.whitelist": table, "topic.prefix": "tsi-"}),
    );
    create(
        "ts",
        serde_json::json!({"mode": "timestamp", "table.whitelist": table, "topic.prefix": "ts-"}),
    );
    create(
        "query",
        serde_json::json!({
            "mode": "incrementing", "query": format!("SELECT id, v FROM {table} WHERE v <> 'skip'"),
            "topic.prefix": "from-query", "incrementing.column.name": "id",
        }),
    );
    // A delay of a day: only rows older than that are read.
    create(
        "delayed",
        serde_json::json!({
            "mode": "timestamp+incrementing", "table.whitelist": table, "topic.prefix": "late-",
            "timestamp.delay.interval.ms": "86400000",
        }),
    );
    let (tsi, ts) = (format!("tsi-{table}"), format!("ts-{table}"));
    wait_for("the first rows", || {
        ids(&rt, &client, &tsi).len() == 3
            && ids(&rt, &client, &ts).len() == 3
            && ids(&rt, &client, "from-query").len() == 2
    });
    assert_eq!(ids(&rt, &client, &tsi), [1, 2, 3]);
    assert_eq!(ids(&rt, &client, "from-query"), [1, 3]);
    // Row 4 has the last timestamp read and a larger id; row 5 is new; row 6 is too young.
    let now = {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let (d, s) = (t.div_euclid(86_400), t.rem_euclid(86_400));
        // Civil date from days since the epoch (Howard Hinnant's algorithm).
        let z = d + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    };
    insert(&[
        (4, "2020-01-01 11:00:00", "d"),
        (5, "2020-01-02 00:00:00", "e"),
        (6, &now, "f"),
    ]);
    wait_for("the new rows", || {
        ids(&rt, &client, &tsi).len() == 6 && ids(&rt, &client, "from-query").len() == 5
    });
    assert_eq!(
        ids(&rt, &client, &tsi),
        [1, 2, 3, 4, 5, 6],
        "(ts, id) strictly after the last read"
    );
    // Once the stored offset is that of the last record, every row up to it was handed on, and
    // row 4 (older than it) can be read no more.
    wait_for("the timestamp mode's offset at its last record", || {
        ids(&rt, &client, &ts).len() >= 5
            && offset_at_last(&rt, &worker, &client, "ts", &ts, "timestamp", "ts")
    });
    assert_eq!(
        ids(&rt, &client, &ts),
        [1, 2, 3, 5, 6],
        "timestamp mode: row 4 shares the last timestamp read, so it is not read (Confluent's semantics)"
    );
    // Proof of a poll that saw row 6 and left it: row 8, older than the delay and inserted after
    // row 6, read (after the last tuple read by the others, so they do not read it).
    let late = format!("late-{table}");
    insert(&[(8, "2020-01-03 00:00:00", "h")]);
    wait_for("row 8 past the delay", || {
        ids(&rt, &client, &late).contains(&8)
    });
    assert_eq!(
        ids(&rt, &client, &late),
        [1, 2, 3, 4, 5, 8],
        "row 6 is younger than the delay"
    );
    // Offsets carry the tuple: deleted and created again, the connector resumes after row 6.
    wait_for("ts-inc's offset at row 6", || {
        offset_at_last(&rt, &worker, &client, "ts-inc", &tsi, "incrementing", "id")
    });
    let stored = rt.block_on(worker.offsets("ts-inc")).unwrap();
    assert_eq!(stored[0].1["incrementing"], 6, "{stored:?}");
    worker.delete("ts-inc").unwrap();
    insert(&[(7, "2099-01-01 00:00:00", "g")]);
    create(
        "ts-inc",
        serde_json::json!({"mode": "timestamp+incrementing", "table.whitelist": table, "topic.prefix": "tsi-"}),
    );
    wait_for("row 7 and the offset at it", || {
        ids(&rt, &client, &tsi).len() >= 7
            && offset_at_last(&rt, &worker, &client, "ts-inc", &tsi, "incrementing", "id")
    });
    assert_eq!(ids(&rt, &client, &tsi), [1, 2, 3, 4, 5, 6, 7]);
    for n in worker.names() {
        worker.delete(&n).unwrap();
    }
    drop_table(url, &table);
}

#[test]
fn timestamp_and_query_modes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("db.sqlite").display());
    timestamp_modes_on(&url, "TEXT");
}

#[test]
fn timestamp_and_query_modes_on_postgresql() {
    let _one = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(url) = database(
        "RUNNEL_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) {
        timestamp_modes_on(&url, "TIMESTAMP");
    }
}

#[test]
fn timestamp_and_query_modes_on_mariadb() {
    if let Some(url) = database("RUNNEL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test") {
        timestamp_modes_on(&url, "DATETIME(6)");
    }
}

/// Records gain a field: `auto.evolve` adds the column, and the old rows have NULL there.
fn auto_evolve_on(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let table = format!("evo_{}_{}", std::process::id(), rand_suffix());
    drop_table(url, &table);
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"id\":1,\"a\":\"x\"}\n").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    worker.create(config("in", serde_json::json!({"connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": table, "format": "json"}))).unwrap();
    worker.create(config("out", serde_json::json!({
        "connector.class": "jdbc-sink", "connection.url": url, "topics": table,
        "insert.mode": "upsert", "pk.mode": "record_value", "pk.fields": "id", "auto.create": "true", "auto.evolve": "true",
    }))).unwrap();
    wait_for("the first row", || count_rows(url, &table) == 1);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    writeln!(f, "{{\"id\":2,\"a\":\"y\",\"b\":42,\"c\":2.5}}").unwrap();
    drop(f);
    wait_for("the evolved row", || count_rows(url, &table) == 2);
    let d = runnel::connectors::jdbc::Dialect::of(url).unwrap();
    let rows = rt.block_on(async {
        let pool = runnel::connectors::jdbc::connect(url).await.unwrap();
        let sql = format!("SELECT id, b, c FROM {} ORDER BY id", d.quote(&table));
        let rows = sqlx::query(&sql).fetch_all(&pool).await.unwrap();
        rows.iter()
            .map(runnel::connectors::jdbc::row_to_json)
            .collect::<Vec<_>>()
    });
    assert_eq!(rows[0]["b"], serde_json::Value::Null);
    assert_eq!(
        (rows[1]["b"].clone(), rows[1]["c"].clone()),
        (serde_json::json!(42), serde_json::json!(2.5))
    );
    assert_eq!(worker.status("out").unwrap().state, State::Running);
    for n in worker.names() {
        worker.delete(&n).unwrap();
    }
    drop_table(url, &table);
}

#[test]
fn auto_evolve_adds_columns_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    auto_evolve_on(&format!(
        "sqlite:{}",
        dir.path().join("db.sqlite").display()
    ));
}

#[test]
fn auto_evolve_adds_columns_on_postgresql() {
    let _one = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(url) = database(
        "RUNNEL_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) {
        auto_evolve_on(&url);
    }
}

#[test]
fn auto_evolve_adds_columns_on_mariadb() {
    if let Some(url) = database("RUNNEL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test") {
        auto_evolve_on(&url);
    }
}
