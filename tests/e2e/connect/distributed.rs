//! Workers of a group (`runnel --bootstrap .. connect --group-id G`, Kafka Connect's
//! distributed mode) over `runnel broker`, in one test (every step needs the group formed):
//! a connector created over the second worker's REST API is forwarded to the leader and
//! created once; of two creations of one name over the two workers at once, one is refused;
//! the two tasks of a JDBC sink run one on each worker; restarts and offsets are answered
//! by either worker; the first worker SIGKILLed, the other takes everything over, and the
//! exactly-once copy into PostgreSQL (`insert.mode = insert`) ends with every row once.

use super::*;
use crate::support::Runnel;
use serde_json::{Value, json};

/// A worker of group `g` over the broker at `addr`; returns it and its REST address.
fn member(addr: &str, g: &str) -> (Runnel, String) {
    let args = ["--bootstrap", addr, "connect", "--group-id", g];
    let (worker, mut found) = Runnel::start(
        &[&args[..], &["--rest", "127.0.0.1:0"]].concat(),
        &["REST API on http://"],
    );
    (worker, found.remove(0))
}

/// [`member`] listening on every interface, named by the address the others reach it at
/// (`--rest-advertised`), as a worker on another host would be.
fn advertised_member(addr: &str, g: &str) -> (Runnel, String) {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let (rest, advertised) = (format!("0.0.0.0:{port}"), format!("127.0.0.1:{port}"));
    let args = ["--bootstrap", addr, "connect", "--group-id", g];
    let more = ["--rest", &rest, "--rest-advertised", &advertised];
    let (worker, _) = Runnel::start(&[&args[..], &more].concat(), &["REST API on http://"]);
    (worker, advertised)
}

/// `method path` on the worker at `rest`, sent again while it answers that the group is
/// rebalancing (409 "momentarily": no leader known yet, or the target moved).
fn settled(rest: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut answer = (0, Value::Null);
    wait_for(&format!("{method} {path} on {rest} to be served"), || {
        answer = http(rest, method, path, body.clone());
        let message = answer.1["message"].as_str().unwrap_or_default();
        !(answer.0 == 409 && message.contains("momentarily"))
    });
    answer
}

/// `POST /connectors` of connector `name` on the worker at `rest`, [`settled`].
fn create(rest: &str, name: &str, config: Value) -> (u16, Value) {
    let body = json!({"name": name, "config": config});
    settled(rest, "POST", "/connectors", Some(body))
}

/// The workers running `name`'s tasks, by task id, when the connector and all its tasks are
/// RUNNING (as the worker at `rest` sees them).
fn running_on(rest: &str, name: &str) -> Option<Vec<String>> {
    let (code, status) = http(rest, "GET", &format!("/connectors/{name}/status"), None);
    let tasks = status["tasks"].as_array()?;
    let running = code == 200
        && status["connector"]["state"] == "RUNNING"
        && !tasks.is_empty()
        && tasks.iter().all(|t| t["state"] == "RUNNING");
    running.then(|| {
        (tasks.iter())
            .map(|t| t["worker_id"].as_str().unwrap_or_default().to_string())
            .collect()
    })
}

/// Waits until `in` runs and `to-db`'s two tasks run one on each worker, as both see it.
fn spread(workers: &[String; 2]) {
    let mut both = workers.to_vec();
    both.sort();
    wait_for("in running, and to-db's tasks one on each worker", || {
        let sink = running_on(&workers[0], "to-db");
        let mut on = sink.clone().unwrap_or_default();
        on.sort();
        on == both
            && sink == running_on(&workers[1], "to-db")
            && running_on(&workers[0], "in").is_some()
    });
}

#[test]
fn a_group_forwards_requests_spreads_tasks_and_survives_a_killed_worker() {
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
    // Two partitions: an exactly-once sink's task reads every `tasks.max`th one.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = rt
        .block_on(runnel::broker::RemoteLog::connect(&broker.addr))
        .unwrap();
    let two = runnel::log::TopicConfig {
        partitions: 2,
        ..Default::default()
    };
    rt.block_on(client.ensure_topic(&table, &two)).unwrap();
    let input = dir.path().join("in.jsonl");
    json_lines(&input, 1..=20_000);

    // Alone in the group, the first worker is its leader, and stays so.
    let (w1, rest1) = member(&broker.addr, "G");
    let source = json!({"connector.class": "FileStreamSource", "file": input.to_str().unwrap(),
        "topic": table, "format": "json", "exactly.once.support": "required"});
    let (code, body) = create(&rest1, "in", source);
    assert_eq!(code, 201, "{body}");
    let (_w2, rest2) = advertised_member(&broker.addr, "G");
    let workers = [rest1.clone(), rest2.clone()];
    let sink = json!({"connector.class": "io.confluent.connect.jdbc.JdbcSinkConnector",
        "connection.url": url, "topics": table, "insert.mode": "insert", "auto.create": "true",
        "tasks.max": "2", "exactly.once.support": "required"});
    let (code, body) = create(&rest2, "to-db", sink);
    assert_eq!(code, 201, "forwarded to the leader: {body}");
    for rest in &workers {
        let (_, names) = http(rest, "GET", "/connectors", None);
        assert_eq!(
            names,
            json!(["in", "to-db"]),
            "created once, seen by {rest}"
        );
    }
    spread(&workers);
    wait_for("rows in the table", || count_rows(&url, &table) > 0);

    // Two creations of one name at once, one over each worker: the leader takes one.
    let dup = json!({"name": "dup", "initial_state": "STOPPED", "config": {
        "connector.class": "FileStreamSink", "topics": table,
        "file": dir.path().join("dup.txt").to_str().unwrap()}});
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let sent: Vec<_> = (workers.iter())
            .map(|rest| s.spawn(|| http(rest, "POST", "/connectors", Some(dup.clone()))))
            .collect();
        sent.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut codes: Vec<u16> = answers.iter().map(|(c, _)| *c).collect();
    codes.sort();
    assert_eq!(codes, [201, 409], "{answers:?}");
    let refused = answers.iter().find(|(c, _)| *c == 409).unwrap();
    assert!(
        refused.1["message"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{answers:?}"
    );

    // The new connector rebalanced the group; then every restart and offsets request is
    // answered by both workers: one of them runs the task, the other forwards.
    spread(&workers);
    for rest in &workers {
        for task in 0..2 {
            let path = format!("/connectors/to-db/tasks/{task}/restart");
            assert_eq!(
                settled(rest, "POST", &path, None).0,
                204,
                "{path} on {rest}"
            );
        }
        let path = "/connectors/to-db/restart?includeTasks=true";
        let (code, status) = settled(rest, "POST", path, None);
        assert_eq!(code, 202, "{status}");
        assert_eq!(status["tasks"][1]["state"], "RESTARTING", "{status}");
        let (code, offsets) = http(rest, "GET", "/connectors/in/offsets", None);
        assert_eq!(code, 200, "{offsets}");
        assert!(offsets["offsets"][0]["offset"]["position"].as_u64() > Some(0));
        assert_eq!(http(rest, "GET", "/connectors/to-db/offsets", None).0, 200);
    }
    spread(&workers);

    // Killed while the sink copies a new batch.
    json_lines(&input, 20_001..=170_000);
    wait_for("rows of the new lines", || {
        count_rows(&url, &table) > 20_000
    });
    drop(w1); // SIGKILL
    json_lines(&input, 170_001..=175_000);
    wait_for("everything running on worker 2", || {
        let only = |on: Option<Vec<String>>| on.is_some_and(|w| w.iter().all(|w| *w == rest2));
        only(running_on(&rest2, "in")) && only(running_on(&rest2, "to-db"))
    });
    wait_for("every line of the file in the table", || {
        count_rows(&url, &table) >= 175_000
    });
    assert_eq!(
        count_distinct_ids(&url, &table),
        (175_000, 175_000),
        "every row once"
    );
    drop_table(&url, &table);
}
