//! The REST API of `runnel connect` driven with plain HTTP as a Kafka Connect user would:
//! every endpoint with Kafka Connect's shapes and status codes; and a worker SIGKILLed and
//! started again on the same log keeps the connectors created over REST (deleted ones stay
//! deleted, stopped ones stopped), from its config topic in Kafka Connect's record shapes.

use super::*;
use crate::support::Runnel;
use serde_json::{Value, json};

/// `runnel connect` on `data` (with `worker_file`, if any); returns it and its REST address.
fn start_worker(data: &Path, worker_file: Option<&Path>) -> (Runnel, String) {
    let mut args = vec![
        "--data-dir".into(),
        data.as_os_str().to_owned(),
        "connect".into(),
        "--rest".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(worker_file.map(|f| f.as_os_str().to_owned()));
    let (worker, mut found) = Runnel::start(&args, &["REST API on http://"]);
    (worker, found.remove(0))
}

fn source(file: &Path, topic: &str) -> Value {
    json!({"connector.class": "FileStreamSource", "file": file.to_str().unwrap(), "topic": topic})
}

fn sink(file: &Path, topic: &str) -> Value {
    json!({"connector.class": "FileStreamSink", "file": file.to_str().unwrap(), "topics": topic})
}

/// Asserts Kafka Connect's error shape with `code`; returns the message.
fn error(reply: (u16, Value), code: u16) -> String {
    let (status, body) = reply;
    assert_eq!(
        (status, body["error_code"].as_u64()),
        (code, Some(code.into())),
        "{body}"
    );
    body["message"].as_str().unwrap().to_string()
}

/// Asserts Kafka Connect's answer to a change of offsets (`verb`: altered, reset).
fn changed(reply: (u16, Value), verb: &str) {
    let message = format!("The offsets for this connector have been {verb} successfully");
    assert_eq!(reply, (200, json!({ "message": message })));
}

#[test]
fn every_endpoint_answers_with_kafka_connects_shapes_and_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (_worker, addr) = start_worker(&dir.path().join("data"), None);
    let (input, output) = (dir.path().join("in.txt"), dir.path().join("out.txt"));
    std::fs::write(&input, "a\nb\n").unwrap();
    let get = |path: &str| http(&addr, "GET", path, None);
    let call = |method: &str, path: &str| http(&addr, method, path, None).0;
    let offset =
        |name: &str| get(&format!("/connectors/{name}/offsets")).1["offsets"][0]["offset"].clone();

    assert_eq!(get("/").0, 200);
    let (code, body) = http(
        &addr,
        "POST",
        "/connectors",
        Some(json!({"name": "src", "config": source(&input, "t")})),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        (
            &body["name"],
            &body["type"],
            &body["tasks"],
            &body["config"]["name"]
        ),
        (
            &json!("src"),
            &json!("source"),
            &json!([{"connector": "src", "task": 0}]),
            &json!("src")
        )
    );
    let created = http(
        &addr,
        "POST",
        "/connectors",
        Some(json!({"name": "out", "config": sink(&output, "t")})),
    );
    assert_eq!(created.0, 201, "{}", created.1);

    // Refusals, all in Kafka Connect's error shape.
    let again = json!({"name": "src", "config": source(&input, "t")});
    error(http(&addr, "POST", "/connectors", Some(again)), 409);
    let m = error(http_raw(&addr, "POST", "/connectors", "{\"name\": "), 400);
    assert!(m.contains("not valid JSON"), "{m}");
    let m = error(
        http_raw(&addr, "PUT", "/connectors/x/config", "name=x"),
        400,
    );
    assert!(m.contains("not valid JSON"), "{m}");
    let typo = json!({"name": "bad", "config": {"connector.class": "FileStreamSource", "file": "/x", "topik": "t"}});
    let m = error(http(&addr, "POST", "/connectors", Some(typo)), 400);
    assert!(m.contains("did you mean \"topic\""), "{m}");
    let other = json!({"name": "one", "config": {"name": "two"}});
    error(http(&addr, "POST", "/connectors", Some(other)), 400);
    error(get("/connectors/nope/status"), 404);
    error(get("/connectors/src/tasks/7/status"), 404);
    error(get("/connectors/src/tasks/x/status"), 404);
    error(get("/no/such/path"), 404);
    error(http(&addr, "DELETE", "/connectors/src/status", None), 405);
    error(get("/connectors?expand=everything"), 400);

    assert_eq!(get("/connectors").1, json!(["out", "src"]));
    let both = get("/connectors?expand=status&expand=info").1;
    assert_eq!(
        both["src"]["status"]["connector"]["state"], "RUNNING",
        "{both}"
    );
    assert_eq!(
        both["src"]["status"]["tasks"][0]["worker_id"],
        addr.as_str()
    );
    assert_eq!(both["out"]["info"]["type"], "sink");
    assert_eq!(both["out"]["info"]["config"]["topics"], "t");
    let status = get("/connectors?expand=status").1;
    assert!(status["src"]["info"].is_null() && status["src"]["status"]["type"] == "source");
    assert!(get("/connectors?expand=info").1["src"]["status"].is_null());
    let tasks = get("/connectors/src/tasks").1;
    assert_eq!(
        tasks[0]["id"],
        json!({"connector": "src", "task": 0}),
        "{tasks}"
    );
    assert_eq!(tasks[0]["config"]["topic"], "t");
    let task = get("/connectors/src/tasks/0/status").1;
    assert_eq!(
        task,
        json!({"id": 0, "state": "RUNNING", "worker_id": addr.as_str()})
    );

    // Data flows; the connectors report their topics and offsets.
    wait_for("the two lines copied", || lines_of(&output) == ["a", "b"]);
    wait_for("the topics", || {
        get("/connectors/src/topics").1 == json!({"src": {"topics": ["t"]}})
            && get("/connectors/out/topics").1 == json!({"out": {"topics": ["t"]}})
    });
    wait_for("the offsets", || {
        get("/connectors/src/offsets").1["offsets"][0]["offset"]["position"] == 4
            && get("/connectors/out/offsets").1
                == json!({"offsets": [{"partition": {"kafka_topic": "t", "kafka_partition": 0}, "offset": {"kafka_offset": 2}}]})
    });
    assert_eq!(call("PUT", "/connectors/src/topics/reset"), 202);
    assert_eq!(
        get("/connectors/src/topics").1,
        json!({"src": {"topics": []}})
    );

    // Restarts.
    assert_eq!(call("POST", "/connectors/src/restart"), 204);
    assert_eq!(call("POST", "/connectors/src/tasks/0/restart"), 204);
    let (code, r) = http(
        &addr,
        "POST",
        "/connectors/src/restart?includeTasks=true",
        None,
    );
    assert_eq!(code, 202, "{r}");
    assert_eq!(
        (&r["connector"]["state"], &r["tasks"][0]["state"]),
        (&json!("RESTARTING"), &json!("RESTARTING"))
    );
    let path = "/connectors/src/restart?includeTasks=true&onlyFailed=true";
    let (code, r) = http(&addr, "POST", path, None);
    assert_eq!(
        (code, &r["tasks"][0]["state"]),
        (202, &json!("RUNNING")),
        "{r}"
    );
    error(
        http(
            &addr,
            "POST",
            "/connectors/src/restart?includeTasks=yes",
            None,
        ),
        400,
    );

    // Pause and resume.
    assert_eq!(call("PUT", "/connectors/src/pause"), 202);
    let s = get("/connectors/src/status").1;
    assert_eq!(
        (&s["connector"]["state"], &s["tasks"][0]["state"]),
        (&json!("PAUSED"), &json!("PAUSED"))
    );
    assert_eq!(call("PUT", "/connectors/src/resume"), 202);
    assert_eq!(
        get("/connectors/src/status").1["tasks"][0]["state"],
        "RUNNING"
    );

    // Offsets change only while STOPPED: a source's, rewound to line 2, sends "b" again.
    // The file source's partitions are its files' inodes.
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&input).unwrap());
    let rewind = json!({"offsets": [{"partition": {"inode": inode}, "offset": {"position": 2}}]});
    let m = error(
        http(
            &addr,
            "PATCH",
            "/connectors/src/offsets",
            Some(rewind.clone()),
        ),
        400,
    );
    assert!(m.contains("STOPPED"), "{m}");
    error(http(&addr, "DELETE", "/connectors/src/offsets", None), 400);
    assert_eq!(call("PUT", "/connectors/src/stop"), 204);
    let s = get("/connectors/src/status").1;
    assert_eq!(
        (&s["connector"]["state"], &s["tasks"]),
        (&json!("STOPPED"), &json!([])),
        "{s}"
    );
    assert_eq!(get("/connectors/src/tasks").1, json!([]));
    error(
        http(
            &addr,
            "PATCH",
            "/connectors/src/offsets",
            Some(json!({"offsets": 1})),
        ),
        400,
    );
    changed(
        http(&addr, "PATCH", "/connectors/src/offsets", Some(rewind)),
        "altered",
    );
    assert_eq!(offset("src"), json!({"position": 2}));
    assert_eq!(call("PUT", "/connectors/src/resume"), 202);
    wait_for("line b again", || lines_of(&output) == ["a", "b", "b"]);

    // A sink's are its group's: reset, it reads the topic again from its start.
    assert_eq!(call("PUT", "/connectors/out/stop"), 204);
    let to_one = json!({"offsets": [{"partition": {"kafka_topic": "t", "kafka_partition": 0}, "offset": {"kafka_offset": 1}}]});
    changed(
        http(&addr, "PATCH", "/connectors/out/offsets", Some(to_one)),
        "altered",
    );
    assert_eq!(offset("out"), json!({"kafka_offset": 1}));
    let nowhere = json!({"offsets": [{"partition": {"kafka_topic": "t", "kafka_partition": 9}, "offset": null}]});
    error(
        http(&addr, "PATCH", "/connectors/out/offsets", Some(nowhere)),
        400,
    );
    changed(
        http(&addr, "DELETE", "/connectors/out/offsets", None),
        "reset",
    );
    assert_eq!(offset("out"), json!({"kafka_offset": 0}));
    assert_eq!(call("PUT", "/connectors/out/resume"), 202);
    wait_for("the topic copied again", || {
        lines_of(&output) == ["a", "b", "b", "a", "b", "b"]
    });
    assert_eq!(call("PUT", "/connectors/src/stop"), 204);
    changed(
        http(&addr, "DELETE", "/connectors/src/offsets", None),
        "reset",
    );
    assert_eq!(get("/connectors/src/offsets").1, json!({"offsets": []}));

    // Configurations: PUT updates (200) or creates (201).
    let mut cfg = source(&input, "t");
    cfg["batch.max.lines"] = json!("10");
    let (code, body) = http(&addr, "PUT", "/connectors/src/config", Some(cfg.clone()));
    assert_eq!(
        (code, &body["config"]["batch.max.lines"]),
        (200, &json!("10")),
        "{body}"
    );
    assert_eq!(get("/connectors/src/config").1["batch.max.lines"], "10");
    assert_eq!(
        get("/connectors/src/status").1["connector"]["state"],
        "STOPPED",
        "a new config keeps the target state"
    );
    assert_eq!(
        http(&addr, "PUT", "/connectors/third/config", Some(cfg)).0,
        201
    );

    // Plugins.
    let plugins = get("/connector-plugins").1;
    assert!(
        plugins
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["class"] == "file-sink")
    );
    let (code, v) = http(
        &addr,
        "PUT",
        "/connector-plugins/FileStreamSource/config/validate",
        Some(json!({"file": "/x", "topic": "t", "tpoic": "t"})),
    );
    assert_eq!((code, v["error_count"].as_u64()), (200, Some(1)), "{v}");

    for name in ["src", "out", "third"] {
        assert_eq!(call("DELETE", &format!("/connectors/{name}")), 204);
    }
    error(get("/connectors/src"), 404);
    assert_eq!(get("/connectors").1, json!([]));
}

#[test]
fn a_restarted_worker_keeps_its_rest_created_connectors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (input, output) = (dir.path().join("in.txt"), dir.path().join("out.txt"));
    let other = dir.path().join("other.txt");
    std::fs::write(&input, "1\n2\n3\n").unwrap();
    std::fs::write(&other, "x\n").unwrap();
    let (worker, addr) = start_worker(&data, None);
    let post = |name: &str, config: Value| {
        let r = http(
            &addr,
            "POST",
            "/connectors",
            Some(json!({"name": name, "config": config})),
        );
        assert_eq!(r.0, 201, "{}", r.1);
    };
    post("in", source(&input, "numbers"));
    post("out", sink(&output, "numbers"));
    post("gone", source(&other, "others"));
    post("held", source(&other, "others"));
    wait_for("the first lines", || lines_of(&output) == ["1", "2", "3"]);
    assert_eq!(http(&addr, "DELETE", "/connectors/gone", None).0, 204);
    assert_eq!(http(&addr, "PUT", "/connectors/held/stop", None).0, 204);
    drop(worker); // SIGKILL

    std::fs::write(&input, "1\n2\n3\n4\n5\n").unwrap();
    // The file declares "in" again with another batch size: the file wins.
    let file = dir.path().join("worker.toml");
    std::fs::write(
        &file,
        format!(
            "[[connector]]\nname = \"in\"\n\"connector.class\" = \"FileStreamSource\"\nfile = \"{}\"\ntopic = \"numbers\"\n\"batch.max.lines\" = 7\n",
            input.display()
        ),
    )
    .unwrap();
    let (worker, addr) = start_worker(&data, Some(&file));
    let get = |path: &str| http(&addr, "GET", path, None).1;
    assert_eq!(get("/connectors"), json!(["held", "in", "out"]));
    assert_eq!(get("/connectors/in/config")["batch.max.lines"], "7");
    let s = get("/connectors?expand=status");
    let states: Vec<&Value> = ["held", "in", "out"]
        .iter()
        .map(|n| &s[n]["status"]["connector"]["state"])
        .collect();
    assert_eq!(states, ["STOPPED", "RUNNING", "RUNNING"], "{s}");
    assert_eq!(s["held"]["status"]["tasks"], json!([]));
    // At least once: a line whose offset the kill beat may come twice.
    wait_for("the new lines copied after the restart", || {
        let got = lines_of(&output);
        ["1", "2", "3", "4", "5"]
            .iter()
            .all(|l| got.iter().any(|g| g == l))
    });
    // Stopped, not killed: status writes are reports a kill may lose (as in Kafka Connect), and
    // the second run's must be in the topic below.
    worker.stop();

    // The topics hold Kafka Connect's records.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(&data).unwrap());
    let latest = |topic: &str| -> std::collections::BTreeMap<String, Option<Value>> {
        rt.block_on(runnel::rides::read_raw(&client, topic))
            .unwrap()
            .iter()
            .map(|r| {
                let key = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
                (
                    key,
                    r.value
                        .as_deref()
                        .map(|v| serde_json::from_slice(v).unwrap()),
                )
            })
            .collect()
    };
    let configs = latest("connect-configs");
    assert_eq!(
        configs["connector-in"].as_ref().unwrap()["properties"]["topic"],
        "numbers"
    );
    assert_eq!(configs["connector-gone"], None, "a tombstone");
    assert_eq!(
        configs["target-state-held"],
        Some(json!({"state": "PAUSED", "state.v2": "STOPPED"}))
    );
    let statuses = latest("connect-status");
    let task = statuses["status-task-in-0"].as_ref().unwrap();
    assert_eq!(task["worker_id"], addr.as_str());
    assert_eq!(task["generation"], 1, "the second run of the worker");
    assert!(
        ["RUNNING", "UNASSIGNED"].contains(&task["state"].as_str().unwrap()),
        "{task}"
    );
    assert_eq!(
        statuses.get("status-connector-gone"),
        Some(&None),
        "a tombstone"
    );
    assert!(statuses.contains_key("topic-numbers-connector-out"));
}
