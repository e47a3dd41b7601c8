//! Workers of a group (`runnel --bootstrap .. connect --group-id G`, Kafka Connect's
//! distributed mode) over `runnel broker`: connectors created over one worker's REST API are
//! seen, and run, by the group; a worker SIGKILLed has its connectors moved to the other once
//! its session expires, and the copy into PostgreSQL ends whole.

use super::*;
use crate::support::Runnel;
use serde_json::{Value, json};

/// A worker of group `g` over the broker at `addr`; returns it and its REST address.
fn member(addr: &str, g: &str) -> (Runnel, String) {
    let args = [
        "--bootstrap",
        addr,
        "connect",
        "--group-id",
        g,
        "--rest",
        "127.0.0.1:0",
    ];
    let (worker, mut found) = Runnel::start(&args, &["REST API on http://"]);
    (worker, found.remove(0))
}

/// `name`'s status on the worker at `rest`, when its connector and every task are RUNNING on
/// one worker: that worker's id.
fn running_on(rest: &str, name: &str) -> Option<String> {
    let (code, status) = http(rest, "GET", &format!("/connectors/{name}/status"), None);
    let on = status["connector"]["worker_id"].as_str()?.to_string();
    let tasks = status["tasks"].as_array()?;
    let all_running = status["connector"]["state"] == "RUNNING"
        && !tasks.is_empty()
        && tasks
            .iter()
            .all(|t| t["state"] == "RUNNING" && t["worker_id"] == on.as_str());
    (code == 200 && all_running).then_some(on)
}

#[test]
fn a_group_shares_its_connectors_and_moves_them_off_a_killed_worker() {
    let _one = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let Some(url) = database(
        "RUNNEL_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = crate::broker::BrokerProc::start(&dir.path().join("broker"));
    let table = format!("dist_{}_{}", std::process::id(), rand_suffix());
    drop_table(&url, &table);
    let input = dir.path().join("in.jsonl");
    json_lines(&input, 1..=20_000);
    let (w1, rest1) = member(&broker.addr, "G");
    let (_w2, rest2) = member(&broker.addr, "G");
    let source = json!({"connector.class": "FileStreamSource", "file": input.to_str().unwrap(),
        "topic": table, "format": "json"});
    let sink = json!({"connector.class": "io.confluent.connect.jdbc.JdbcSinkConnector",
        "connection.url": url, "topics": table, "insert.mode": "upsert",
        "pk.mode": "record_value", "pk.fields": "id", "auto.create": "true"});
    for (name, config) in [("in", source), ("to-db", sink)] {
        let (code, body) = http(
            &rest1,
            "POST",
            "/connectors",
            Some(json!({"name": name, "config": config})),
        );
        assert_eq!(code, 201, "{body}");
    }
    wait_for("worker 2 to list worker 1's connectors", || {
        http(&rest2, "GET", "/connectors", None).1 == json!(["in", "to-db"])
    });
    let workers = [rest1.clone(), rest2.clone()];
    for name in ["in", "to-db"] {
        wait_for(
            &format!("{name} running on a worker, seen from both"),
            || {
                let on = running_on(&rest2, name);
                on.is_some()
                    && on == running_on(&rest1, name)
                    && workers.contains(on.as_ref().unwrap())
            },
        );
    }
    let (code, info) = http(&rest2, "GET", "/connectors/to-db", None);
    assert_eq!((code, &info["config"]["pk.fields"]), (200, &json!("id")));
    wait_for("rows in the table", || count_rows(&url, &table) > 0);
    drop(w1); // SIGKILL
    json_lines(&input, 20_001..=25_000);
    for name in ["in", "to-db"] {
        wait_for(&format!("{name} running on worker 2"), || {
            running_on(&rest2, name).as_deref() == Some(rest2.as_str())
        });
    }
    wait_for("every line of the file in the table", || {
        count_rows(&url, &table) == 25_000
    });
    assert_eq!(count_distinct_ids(&url, &table), (25_000, 25_000));
    let (code, list) = http(&rest2, "GET", "/connectors?expand=status", None);
    assert_eq!(code, 200);
    let on: Vec<&Value> = ["in", "to-db"]
        .iter()
        .map(|n| &list[n]["status"]["connector"]["worker_id"])
        .collect();
    assert_eq!(on, [&json!(rest2), &json!(rest2)]);
    drop_table(&url, &table);
}
