//! Converters, the typed transforms and sink-side dead letters, driven as a Kafka Connect user
//! would: connector configs with Kafka's class names, records read back from the topics and
//! the tables.

use super::*;

fn read(
    rt: &tokio::runtime::Runtime,
    client: &SharedLogClient,
    topic: &str,
) -> Vec<runnel::log::Record> {
    rt.block_on(runnel::rides::read_raw(client, topic))
        .unwrap_or_default()
}

fn text(b: &Option<bytes::Bytes>) -> String {
    String::from_utf8(b.as_deref().unwrap_or_default().to_vec()).unwrap()
}

fn header(r: &runnel::log::Record, key: &str) -> String {
    r.headers
        .iter()
        .find(|h| h.key == key)
        .map(|h| text(&h.value))
        .unwrap_or_default()
}

fn sqlite_rows(url: &str, sql: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = runnel::connectors::jdbc::connect(url).await.unwrap();
        let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap_or_default();
        rows.iter()
            .map(runnel::connectors::jdbc::row_to_json)
            .collect()
    })
}

#[test]
fn converters_write_and_read_the_schema_payload_envelope_strings_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (json_in, text_in) = (dir.path().join("in.jsonl"), dir.path().join("in.txt"));
    std::fs::write(
        &json_in,
        "{\"id\":1,\"name\":\"a\",\"score\":1.5,\"ok\":true}\n{\"id\":2,\"name\":\"b\",\"score\":2.5,\"ok\":false}\n{\"id\":3,\"name\":\"c\",\"score\":3.5,\"ok\":true}\n",
    )
    .unwrap();
    std::fs::write(&text_in, "hello \"you\"\n").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    worker.create(config("env-in", serde_json::json!({
        "connector.class": "FileStreamSource", "file": json_in.to_str().unwrap(), "topic": "env", "format": "json",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter", "value.converter.schemas.enable": "true",
    }))).unwrap();
    for (name, class) in [
        ("txt-json", "org.apache.kafka.connect.json.JsonConverter"),
        (
            "txt-string",
            "org.apache.kafka.connect.storage.StringConverter",
        ),
        (
            "txt-bytes",
            "org.apache.kafka.connect.converters.ByteArrayConverter",
        ),
    ] {
        worker.create(config(name, serde_json::json!({
            "connector.class": "FileStreamSource", "file": text_in.to_str().unwrap(), "topic": name,
            "value.converter": class,
        }))).unwrap();
    }
    wait_for("the envelopes", || read(&rt, &client, "env").len() == 3);
    let first: serde_json::Value =
        serde_json::from_slice(read(&rt, &client, "env")[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(
        first["payload"],
        serde_json::json!({"id":1,"name":"a","score":1.5,"ok":true})
    );
    assert_eq!(first["schema"]["type"], "struct");
    let mut types: Vec<(String, String)> = first["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().into(),
                f["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            ("id", "int64"),
            ("name", "string"),
            ("ok", "boolean"),
            ("score", "double")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    for (topic, want) in [
        ("txt-json", r#""hello \"you\"""#),
        ("txt-string", r#"hello "you""#),
        ("txt-bytes", r#"hello "you""#),
    ] {
        wait_for(topic, || read(&rt, &client, topic).len() == 1);
        assert_eq!(text(&read(&rt, &client, topic)[0].value), want, "{topic}");
    }

    // A sink reading envelopes; one record without the envelope and one not JSON at all.
    produce(
        &rt,
        &client,
        "env",
        &[r#"{"id":9,"name":"no envelope"}"#, "{oops"],
    );
    let url = format!("sqlite:{}", dir.path().join("db.sqlite").display());
    worker.create(config("env-out", serde_json::json!({
        "connector.class": "io.confluent.connect.jdbc.JdbcSinkConnector", "connection.url": url, "topics": "env",
        "insert.mode": "upsert", "pk.mode": "record_value", "pk.fields": "id", "auto.create": "true",
        "value.converter": "json", "value.converter.schemas.enable": "true",
        "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "env-dlq",
    }))).unwrap();
    wait_for("the dead letters", || {
        read(&rt, &client, "env-dlq").len() == 2
    });
    wait_for("the rows", || count_rows(&url, "env") == 3);
    let rows = sqlite_rows(&url, "SELECT id, name, score FROM env ORDER BY id");
    assert_eq!(rows[1]["name"], "b");
    assert_eq!(rows[2]["score"], 3.5);
    let dead = read(&rt, &client, "env-dlq");
    assert_eq!(
        text(&dead[0].value),
        r#"{"id":9,"name":"no envelope"}"#,
        "the original bytes"
    );
    assert!(header(&dead[0], "__connect.errors.exception.message").contains("envelope"));
    assert!(header(&dead[1], "__connect.errors.exception.message").contains("not JSON"));
    assert_eq!(header(&dead[0], "__connect.errors.topic"), "env");
    assert_eq!(header(&dead[0], "__connect.errors.partition"), "0");
    assert_eq!(header(&dead[1], "__connect.errors.offset"), "4");
    assert_eq!(worker.status("env-out").unwrap().state, State::Running);
    for n in worker.names() {
        worker.delete(&n).unwrap();
    }
}

#[test]
fn cast_and_timestamp_converter_retype_fields() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\":\"7\",\"price\":\"9.5\",\"qty\":3.9,\"at\":\"2024-03-01 12:30:00\",\"seen\":1709296200}\n{\"id\":\"x\",\"price\":\"1\",\"qty\":1,\"at\":\"2024-03-01 12:30:00\",\"seen\":0}\n",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    worker.create(config("in", serde_json::json!({
        "connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": "typed", "format": "json",
        "transforms": "cast,at,seen",
        "transforms.cast.type": "org.apache.kafka.connect.transforms.Cast$Value",
        "transforms.cast.spec": "id:int64,price:float64,qty:int32",
        "transforms.at.type": "org.apache.kafka.connect.transforms.TimestampConverter$Value",
        "transforms.at.field": "at", "transforms.at.target.type": "unix",
        "transforms.at.format": "yyyy-MM-dd HH:mm:ss",
        "transforms.seen.type": "org.apache.kafka.connect.transforms.TimestampConverter$Value",
        "transforms.seen.field": "seen", "transforms.seen.target.type": "string",
        "transforms.seen.format": "yyyy-MM-dd'T'HH:mm:ssXXX", "transforms.seen.unix.precision": "seconds",
        "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "typed-dlq",
    }))).unwrap();
    wait_for("the typed record", || {
        read(&rt, &client, "typed").len() == 1
    });
    let v: serde_json::Value =
        serde_json::from_slice(read(&rt, &client, "typed")[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"id": 7, "price": 9.5, "qty": 3, "at": 1_709_296_200_000i64, "seen": "2024-03-01T12:30:00+00:00"})
    );
    wait_for("the uncastable record", || {
        read(&rt, &client, "typed-dlq").len() == 1
    });
    let dead = &read(&rt, &client, "typed-dlq")[0];
    let reason = header(dead, "__connect.errors.exception.message");
    assert!(
        reason.contains("transform cast") && reason.contains("\"id\""),
        "{reason}"
    );
    // A bad spec is refused when the connector is created, naming the key.
    let err = worker
        .create(config("bad", serde_json::json!({
            "connector.class": "FileStreamSource", "file": "/x", "topic": "t",
            "transforms": "c", "transforms.c.type": "Cast$Value", "transforms.c.spec": "id:decimal",
        })))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("transforms.c.spec") && err.contains("int64"),
        "{err}"
    );
    worker.delete("in").unwrap();
}

/// A table with a BIGINT column; a record with text there, one not JSON: both are dead
/// letters and the others are written; under `errors.tolerance = none` the task fails naming
/// the record.
fn sink_dead_letters_on(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let table = format!("dlq_{}_{}", std::process::id(), rand_suffix());
    let strict = format!("{table}_strict");
    for t in [&table, &strict] {
        drop_table(url, t);
        exec(
            url,
            &format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, n BIGINT)"),
        );
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let values: Vec<String> = (1..=10)
        .map(|i| match i {
            4 => r#"{"id":4,"n":"abc"}"#.to_string(),
            7 => "{oops".to_string(),
            _ => format!(r#"{{"id":{i},"n":{i}}}"#),
        })
        .collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    produce(&rt, &client, &table, &refs);
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    worker
        .create(config(
            "tolerant",
            serde_json::json!({
                "connector.class": "jdbc-sink", "connection.url": url, "topics": table,
                "insert.mode": "upsert", "pk.mode": "record_value", "pk.fields": "id",
                "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "sink-dlq",
            }),
        ))
        .unwrap();
    wait_for("the dead letters", || {
        let s = worker.status("tolerant").unwrap();
        assert!(s.state != State::Failed, "{s:?}");
        read(&rt, &client, "sink-dlq").len() == 2
    });
    assert_eq!(count_rows(url, &table), 8, "every good record is written");
    let dead = read(&rt, &client, "sink-dlq");
    assert_eq!(text(&dead[0].value), r#"{"id":4,"n":"abc"}"#);
    assert_eq!(header(&dead[0], "__connect.errors.offset"), "3");
    assert_eq!(header(&dead[0], "__connect.errors.topic"), table);
    assert!(!header(&dead[0], "__connect.errors.exception.message").is_empty());
    assert!(header(&dead[1], "__connect.errors.exception.message").contains("not JSON"));
    assert_eq!(header(&dead[1], "__connect.errors.offset"), "6");
    assert_eq!(worker.status("tolerant").unwrap().state, State::Running);

    worker.create(config("strict", serde_json::json!({
        "connector.class": "jdbc-sink", "connection.url": url, "topics": table, "table.name.format": strict,
        "insert.mode": "upsert", "pk.mode": "record_value", "pk.fields": "id",
    }))).unwrap();
    wait_for("the strict sink to fail", || {
        worker.status("strict").unwrap().state == State::Failed
    });
    let trace = worker.status("strict").unwrap().trace.unwrap();
    assert!(
        trace.contains(&format!("record {table}-0 offset 3")) && trace.contains("errors.tolerance"),
        "{trace}"
    );
    for n in worker.names() {
        worker.delete(&n).unwrap();
    }
    drop_table(url, &table);
    drop_table(url, &strict);
}

pub(super) fn exec(url: &str, sql: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = runnel::connectors::jdbc::connect(url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    })
}

#[test]
fn sink_dead_letters_on_postgresql() {
    let _one = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(url) = database(
        "RUNNEL_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) {
        sink_dead_letters_on(&url);
    }
}

#[test]
fn sink_dead_letters_on_mariadb() {
    if let Some(url) = database("RUNNEL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test") {
        sink_dead_letters_on(&url);
    }
}
