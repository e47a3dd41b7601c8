//! `tasks.max`: a JDBC source's tables, and a JDBC sink's topic partitions, spread over tasks
//! (on SQLite).

use super::convert::exec;
use super::*;
use serde_json::json;

#[test]
fn tasks_max_spreads_tables_and_partitions_over_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("db.sqlite").display());
    for t in ["a", "b"] {
        exec(
            &url,
            &format!("CREATE TABLE {t} (id INTEGER PRIMARY KEY, v TEXT)"),
        );
        exec(
            &url,
            &format!("INSERT INTO {t} (id, v) VALUES (1, 'x'), (2, 'y'), (3, 'z')"),
        );
    }
    exec(&url, "CREATE TABLE wide (id INTEGER, v TEXT)");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = Log::open(dir.path().join("data")).unwrap();
    let client: SharedLogClient = Arc::new(log.clone());
    // Forty rows over the four partitions of the sink's topic.
    rt.block_on(async {
        let four = runnel::log::TopicConfig {
            partitions: 4,
            ..Default::default()
        };
        client.ensure_topic("wide", &four).await.unwrap();
        let p = client.producer(Default::default());
        for i in 0..40u32 {
            let v = format!("{{\"id\":{i},\"v\":\"r{i}\"}}");
            p.send(runnel::log::ProducerRecord {
                partition: Some(i % 4),
                ..runnel::log::ProducerRecord::new("wide", v.as_bytes())
            })
            .await
            .unwrap();
        }
        p.flush().await.unwrap();
    });
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();

    worker.create(config("from-db", json!({
        "connector.class": "JdbcSourceConnector", "connection.url": url, "mode": "incrementing",
        "incrementing.column.name": "id", "table.whitelist": "a,b", "topic.prefix": "db-",
        "poll.interval.ms": "100", "tasks.max": "4",
    }))).unwrap();
    let tables: Vec<String> = worker
        .view("from-db")
        .unwrap()
        .tasks
        .iter()
        .map(|t| t.config.props["table.whitelist"].clone())
        .collect();
    assert_eq!(tables, ["a", "b"], "one task per table, no idle one");
    let rows = |topic: &str| {
        rt.block_on(runnel::rides::read_raw(&client, topic))
            .map(|r| r.len())
            .unwrap_or(0)
    };
    wait_for("both tables' rows", || {
        rows("db-a") == 3 && rows("db-b") == 3
    });

    worker
        .create(config(
            "to-db",
            json!({
                "connector.class": "JdbcSinkConnector", "connection.url": url, "topics": "wide",
                "insert.mode": "insert", "tasks.max": "2",
            }),
        ))
        .unwrap();
    assert_eq!(worker.view("to-db").unwrap().tasks.len(), 2);
    wait_for("two members in the sink's group", || {
        log.groups().describe_group("connect-to-db").members.len() == 2
    });
    wait_for("every row", || count_rows(&url, "wide") == 40);
    assert_eq!(count_distinct_ids(&url, "wide"), (40, 40));
    for name in worker.names() {
        worker.delete(&name).unwrap();
    }
}
