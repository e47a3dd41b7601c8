//! `runnel server`: a file source, a SQL window job and a file sink in one process with a
//! Kafka client producing into it; `/metrics` read by Prometheus' own Python parser; the jobs
//! API as a user drives it (bad jobs, unknown jobs, oversize bodies, restarts).

use crate::broker::python;
use crate::support::{Runnel, wait_for};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A `runnel server` child with the addresses it printed.
pub(crate) struct ServerProc {
    server: Runnel,
    pub(crate) kafka: String,
    pub(crate) http: String,
}

impl ServerProc {
    pub(crate) fn start(data: &Path, config: &Path) -> Self {
        let args: [&OsStr; 5] = [
            "--data-dir".as_ref(),
            data.as_os_str(),
            "server".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ];
        let (server, printed) = Runnel::start(&args, &["listening on ", "HTTP on http://"]);
        let [kafka, http] = <[String; 2]>::try_from(printed).expect("two addresses");
        Self {
            server,
            kafka,
            http,
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub(crate) fn stop(self) {
        self.server.stop();
    }
}

/// One HTTP/1.1 request with a text body; returns the status and the body.
pub(crate) fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    http_as(addr, method, path, body, None)
}

/// [`http`] with an `Authorization: Bearer` token.
pub(crate) fn http_as(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    // A refused oversize body may reset the connection before everything was read.
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw);
    let status: u16 = raw.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let text = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, text.to_string())
}

pub(crate) fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

pub(crate) const WINDOW_JOB: &str = r#"
[job]
name = "counts-per-region"
sql = """
INSERT INTO counts
SELECT region, window_start, COUNT(*) AS rides
FROM rides
GROUP BY region, tumble(ts, INTERVAL '10' SECOND)
"""

[[input]]
name = "rides"
format = "json"
schema = "ts BIGINT, region VARCHAR"
event_time = "ts"
watermark = "1 hour"

[[output]]
name = "counts"
topic = "counts"
"#;

pub(crate) fn ride(ts: i64, region: &str) -> String {
    format!("{{\"ts\":{ts},\"region\":\"{region}\"}}")
}

pub(crate) fn write_config(dir: &Path, jobs: Option<&Path>, worker_file: Option<&Path>) -> PathBuf {
    let mut text = String::from(
        "[broker]\nlisten = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\nmax_body = \"64KiB\"\n",
    );
    if let Some(w) = worker_file {
        text += &format!("[connect]\nworker_file = {:?}\n", w.to_str().unwrap());
    }
    if let Some(j) = jobs {
        text += &format!("[jobs]\ndir = {:?}\n", j.to_str().unwrap());
    }
    let path = dir.join("runnel.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A worker file of one file-source connector `name` reading `file` into `topic`.
pub(crate) fn write_file_source_worker(
    path: &Path,
    name: &str,
    file: &Path,
    topic: &str,
    format: &str,
) {
    let text = format!(
        "[[connector]]\nname = {name:?}\n\"connector.class\" = \"file-source\"\nfile = {:?}\ntopic = {topic:?}\nformat = {format:?}\n",
        file.to_str().unwrap()
    );
    std::fs::write(path, text).unwrap();
}

/// Families of a scrape, parsed by `prometheus_client`'s parser: name → [(labels, value)].
fn scrape(py: &Path, addr: &str) -> serde_json::Value {
    let script = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen("http://" + sys.argv[1] + "/metrics").read().decode()
out = {}
for fam in text_string_to_metric_families(text):
    for s in fam.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;
    let out = Command::new(py)
        .args(["-c", script, addr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the scrape failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))
}

/// The sum of a metric's samples whose labels include every pair of `matching`.
fn total(m: &serde_json::Value, name: &str, matching: &[(&str, &str)]) -> f64 {
    m[name]
        .as_array()
        .map(|samples| {
            samples
                .iter()
                .filter(|s| matching.iter().all(|(k, v)| s[0][k] == *v))
                .map(|s| s[1].as_f64().unwrap())
                .sum()
        })
        .unwrap_or(0.0)
}

#[test]
fn one_server_runs_connectors_a_sql_job_and_kafka_clients_and_shows_it_in_metrics() {
    let Some(py) = python("runnel server") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    std::fs::write(jobs.join("counts.toml"), WINDOW_JOB).unwrap();
    let input = dir.path().join("rides.jsonl");
    let output = dir.path().join("counts.jsonl");
    std::fs::write(&input, "").unwrap();
    let worker_file = dir.path().join("connect.toml");
    std::fs::write(
        &worker_file,
        format!(
            "[[connector]]\nname = \"rides-in\"\n\"connector.class\" = \"file-source\"\nfile = {:?}\ntopic = \"rides\"\nformat = \"json\"\n\n\
             [[connector]]\nname = \"counts-out\"\n\"connector.class\" = \"file-sink\"\ntopics = \"counts\"\nfile = {:?}\n",
            input.to_str().unwrap(),
            output.to_str().unwrap()
        ),
    )
    .unwrap();
    let config = write_config(dir.path(), Some(&jobs), Some(&worker_file));
    let server = ServerProc::start(&dir.path().join("data"), &config);

    // Rides in windows [0, 10 s) .. [40 s, 50 s) from the file, and as many from a Kafka client.
    let regions = ["north", "south", "east"];
    let mut expected = std::collections::BTreeMap::<(String, i64), u64>::new();
    let mut file_lines = String::new();
    let mut kafka_lines = Vec::new();
    for i in 0..3_000i64 {
        let (ts, region) = (i * 15, regions[(i % 3) as usize]);
        *expected
            .entry((region.to_string(), ts / 10_000 * 10_000))
            .or_default() += 1;
        if i % 2 == 0 {
            file_lines += &(ride(ts, region) + "\n");
        } else {
            kafka_lines.push(ride(ts, region));
        }
    }
    // Both inputs may arrive in any order (the hour of watermark delay keeps every window
    // open until then); a last ride far ahead, written after both, closes them all.
    let closer = ride(10_000_000, "north");
    std::fs::write(&input, &file_lines).unwrap();
    produce_lines(&py, &server.kafka, "rides", &kafka_lines);
    let first = scrape(&py, &server.http);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap()
        .write_all((closer + "\n").as_bytes())
        .unwrap();

    let windows = || -> std::collections::BTreeMap<(String, i64), u64> {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v = json(l);
                (
                    (
                        v["region"].as_str().unwrap().to_string(),
                        v["window_start"].as_i64().unwrap(),
                    ),
                    v["rides"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    wait_for("every window in the sink's file", || {
        windows().len() >= expected.len()
    });
    let got: std::collections::BTreeMap<_, _> = windows()
        .into_iter()
        .filter(|((_, start), _)| *start < 10_000_000)
        .collect();
    assert_eq!(got, expected, "each window counts the rides of both inputs");

    // What /metrics says of it, through Prometheus' parser.
    let group = [("group", "counts-per-region")];
    wait_for("the job's lag at zero", || {
        let m = scrape(&py, &server.http);
        total(&m, "runnel_group_lag", &group) == 0.0
            && total(
                &m,
                "runnel_group_committed_offset",
                &[("group", "counts-per-region"), ("topic", "rides")],
            ) == 3_001.0
    });
    let last = scrape(&py, &server.http);
    let rides = [("topic", "rides")];
    assert_eq!(
        total(&last, "runnel_log_appended_records_total", &rides),
        3_001.0
    );
    let job = [("job", "counts-per-region")];
    let records_in = |m: &serde_json::Value| total(m, "runnel_job_records_in_total", &job);
    assert!(
        records_in(&last) > records_in(&first) && records_in(&last) >= 3_001.0,
        "the job's input rate is not zero: {} then {}",
        records_in(&first),
        records_in(&last)
    );
    assert!(total(&last, "runnel_job_records_out_total", &job) >= expected.len() as f64);
    assert!(
        last["runnel_job_watermark_seconds"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s[1].as_f64().unwrap() >= 6_400.0)),
        "the job's watermark an hour behind the last ride: {}",
        last["runnel_job_watermark_seconds"]
    );
    assert!(total(&last, "runnel_broker_requests_total", &[("api", "Produce")]) >= 1.0);
    assert_eq!(total(&last, "runnel_connector_running", &[]), 2.0);
    assert_eq!(
        total(
            &last,
            "runnel_connector_records_total",
            &[("connector", "counts-out")]
        ),
        expected.len() as f64,
        "the sink read every closed window once"
    );
    assert!(total(&last, "runnel_job_commit_seconds_count", &job) >= 1.0);
    assert!(total(&last, "runnel_process_resident_memory_bytes", &[]) > 0.0);
    // Every series the Grafana dashboard charts is there.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/grafana/runnel.json"
    ))
    .unwrap();
    for name in dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("runnel_"))
    {
        assert!(
            last.get(name).is_some(),
            "the dashboard charts {name}, which /metrics lacks"
        );
    }
    server.stop();
}

#[test]
fn jobs_are_submitted_described_refused_and_deleted_over_http_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), None, None);
    let server = ServerProc::start(&data, &config);
    let addr = server.http.clone();

    let bad = WINDOW_JOB.replace("COUNT(*) AS rides", "COUNT(*) AS rides, nope");
    let (code, body) = http(&addr, "POST", "/jobs", &bad);
    assert_eq!(code, 400, "{body}");
    let message = json(&body)["message"].as_str().unwrap().to_string();
    let line = WINDOW_JOB
        .lines()
        .position(|l| l.contains("COUNT(*) AS rides"))
        .unwrap()
        + 1;
    assert!(
        message.starts_with(&format!("{line}:")) && message.contains("nope"),
        "a file-less line:column error naming the column: {message}"
    );
    assert_eq!(http(&addr, "GET", "/jobs/nope", "").0, 404);
    assert_eq!(http(&addr, "DELETE", "/jobs/nope", "").0, 404);
    let huge = format!("{WINDOW_JOB}\n#{}", "x".repeat(100 * 1024));
    assert_eq!(
        http(&addr, "POST", "/jobs", &huge).0,
        413,
        "a body over max_body"
    );

    let (code, body) = http(&addr, "POST", "/jobs", WINDOW_JOB);
    assert_eq!(code, 201, "{body}");
    assert_eq!(json(&body)["name"], "counts-per-region");
    // A connector created over REST is kept, as Kafka Connect keeps it in its config topic.
    let lines = dir.path().join("kept.txt");
    std::fs::write(&lines, "one\ntwo\n").unwrap();
    let connector = serde_json::json!({"name": "kept", "config": {
        "connector.class": "FileStreamSource", "file": lines, "topic": "kept-lines"}});
    let (code, body) = http(&addr, "POST", "/connectors", &connector.to_string());
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        http(&addr, "POST", "/jobs", WINDOW_JOB).0,
        409,
        "the name is taken"
    );
    wait_for("the job running", || {
        json(&http(&addr, "GET", "/jobs/counts-per-region", "").1)["status"]["state"] == "RUNNING"
    });
    let (code, body) = http(&addr, "GET", "/jobs/counts-per-region", "");
    assert_eq!(code, 200);
    let described = json(&body);
    assert_eq!(described["inputs"], serde_json::json!(["rides"]));
    assert!(described["topology"].as_str().unwrap().contains("counts"));
    assert_eq!(
        described["queryable_outputs"],
        serde_json::json!([{"output": "counts", "key": ["region"]}])
    );

    // Stopped over HTTP, a job stays stopped across a restart until resumed.
    let job_state = |addr: &str| {
        json(&http(addr, "GET", "/jobs/counts-per-region", "").1)["status"]["state"].clone()
    };
    let (code, body) = http(&addr, "POST", "/jobs/counts-per-region/resume", "");
    assert_eq!(code, 409, "it runs: {body}");
    assert_eq!(
        http(&addr, "POST", "/jobs/counts-per-region/stop", "").0,
        202
    );
    wait_for("the job stopped", || job_state(&addr) == "STOPPED");
    server.stop();
    let server = ServerProc::start(&data, &config);
    let addr = server.http.clone();
    assert_eq!(job_state(&addr), "STOPPED");
    assert_eq!(
        http(&addr, "POST", "/jobs/counts-per-region/resume", "").0,
        202
    );
    wait_for("the job running again", || job_state(&addr) == "RUNNING");
    assert_eq!(http(&addr, "POST", "/jobs/nope/stop", "").0, 404);

    // Submitted jobs come back after a restart; deleted ones do not.
    server.stop();
    let server = ServerProc::start(&data, &config);
    let addr = server.http.clone();
    let listed = json(&http(&addr, "GET", "/jobs", "").1);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "counts-per-region");
    let connectors = json(&http(&addr, "GET", "/connectors", "").1);
    assert_eq!(
        connectors,
        serde_json::json!(["kept"]),
        "kept across restarts"
    );
    wait_for("the kept connector running", || {
        json(&http(&addr, "GET", "/connectors/kept/status", "").1)["connector"]["state"]
            == "RUNNING"
    });
    assert_eq!(http(&addr, "DELETE", "/jobs/counts-per-region", "").0, 204);
    assert_eq!(http(&addr, "GET", "/jobs/counts-per-region", "").0, 404);
    server.stop();
    let server = ServerProc::start(&data, &config);
    let listed = json(&http(&server.http, "GET", "/jobs", "").1);
    assert_eq!(
        listed,
        serde_json::json!([]),
        "the deleted job stayed deleted"
    );
    server.stop();

    // With a token, nothing is answered without it.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[http]\n", "[http]\ntoken = \"s3cret\"\n"),
    )
    .unwrap();
    let server = ServerProc::start(&data, &config);
    for path in ["/jobs", "/metrics", "/connectors"] {
        assert_eq!(
            http(&server.http, "GET", path, "").0,
            401,
            "{path} without the token"
        );
        let wrong = http_as(&server.http, "GET", path, "", Some("guess")).0;
        assert_eq!(wrong, 401, "{path} with a wrong token");
        let right = http_as(&server.http, "GET", path, "", Some("s3cret")).0;
        assert_eq!(right, 200, "{path} with the token");
    }
    server.stop();
}

/// Produces `lines` into `topic` through confluent-kafka.
fn produce_lines(py: &Path, kafka: &str, topic: &str, lines: &[String]) {
    let produce = r#"
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1], "enable.idempotence": True})
for line in sys.stdin:
    p.produce(sys.argv[2], line.strip().encode())
p.flush(30)
print("ok")
"#;
    let mut child = Command::new(py)
        .args(["-c", produce, kafka, topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all((lines.join("\n") + "\n").as_bytes())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "the producer failed"
    );
}

#[test]
fn interactive_queries_read_the_ride_hailing_counts_as_the_input_so_far_gives_them() {
    let Some(py) = python("interactive queries") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    let job = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/jobs/ride_hailing.toml"
    );
    std::fs::copy(job, jobs.join("ride_hailing.toml")).unwrap();
    let config = write_config(dir.path(), Some(&jobs), None);
    let server = ServerProc::start(&dir.path().join("data"), &config);
    let addr = server.http.clone();
    let state = "/jobs/ride-hailing-sql/state";
    wait_for("the job running", || {
        json(&http(&addr, "GET", "/jobs/ride-hailing-sql", "").1)["status"]["state"] == "RUNNING"
    });

    let regions = ["north", "south", "east", "west", "downtown"];
    let ride = |i: i64| {
        format!(
            "{{\"ts\":{},\"driver_id\":{},\"region\":\"{}\",\"lat\":1.0,\"lon\":2.0,\"speed\":{}}}",
            1_000_000 + i * 7,
            i % 50,
            regions[(i / 3 % 5) as usize],
            (i % 40) as f64
        )
    };
    let mut produced = std::collections::BTreeMap::<String, u64>::new();
    let count = |addr: &str, region: &str| -> Option<u64> {
        let (code, body) = http(
            addr,
            "GET",
            &format!("{state}/updates_per_region?key={region}"),
            "",
        );
        assert_eq!(code, 200, "{body}");
        let answer = json(&body);
        assert_eq!(answer["output"], "updates_per_region");
        assert!(!answer["tasks"].as_array().unwrap().is_empty(), "{answer}");
        match answer["rows"].as_array().unwrap().as_slice() {
            [] => None,
            [row] => {
                assert_eq!(row["region"], region, "{answer}");
                Some(row["updates"].as_u64().unwrap())
            }
            more => panic!("one row per key, got {more:?}"),
        }
    };
    for round in 0..2i64 {
        let lines: Vec<String> = (round * 4_000..(round + 1) * 4_000).map(ride).collect();
        for i in round * 4_000..(round + 1) * 4_000 {
            *produced
                .entry(regions[(i / 3 % 5) as usize].to_string())
                .or_default() += 1;
        }
        produce_lines(&py, &server.kafka, "rides", &lines);
        for region in regions {
            let expected = produced.get(region).copied();
            wait_for(&format!("{region}'s count to reach the input's"), || {
                let got = count(&addr, region);
                // Never ahead of the input.
                assert!(got <= expected, "{region}: {got:?} > {expected:?}");
                got == expected
            });
        }
    }
    // Every key at once: the same counts.
    let (code, body) = http(&addr, "GET", &format!("{state}/updates_per_region"), "");
    assert_eq!(code, 200, "{body}");
    let all: std::collections::BTreeMap<String, u64> = json(&body)["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["region"].as_str().unwrap().to_string(),
                r["updates"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(all, produced);
    let described = json(&http(&addr, "GET", "/jobs/ride-hailing-sql", "").1);
    let operators = described["operators"].as_array().unwrap();
    assert!(
        operators
            .iter()
            .any(|o| o["name"].as_str().unwrap().contains("SOURCE")
                && o["records_out"].as_u64().unwrap() > 0),
        "per-operator figures: {described}"
    );
    assert!(
        operators
            .iter()
            .any(|o| o["records_in"].as_u64().unwrap() > 0),
        "{operators:?}"
    );

    // The windowed output: the windows the job still holds for a key (the open ones: the
    // watermark is 5 s behind the last ride), each with its rides so far.
    let (code, body) = http(&addr, "GET", &format!("{state}/speeds?key=north"), "");
    assert_eq!(code, 200, "{body}");
    let answer = json(&body);
    let mut expected_windows = std::collections::BTreeMap::<i64, u64>::new();
    for i in 0..8_000i64 {
        let (ts, speed) = (1_000_000 + i * 7, (i % 40) as f64);
        if regions[(i / 3 % 5) as usize] == "north" && speed > 5.0 {
            *expected_windows.entry(ts / 10_000 * 10_000).or_default() += 1;
        }
    }
    let got: std::collections::BTreeMap<i64, u64> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["region"], "north");
            (
                r["window_start"].as_i64().unwrap(),
                r["rides"].as_u64().unwrap(),
            )
        })
        .collect();
    let (last, _) = expected_windows.last_key_value().unwrap();
    assert!(got.contains_key(last), "the last window is open: {answer}");
    for (start, rides) in &got {
        assert_eq!(Some(rides), expected_windows.get(start), "window {start}");
    }

    // What it refuses.
    let (code, body) = http(&addr, "GET", &format!("{state}/nope?key=north"), "");
    assert_eq!(code, 404, "{body}");
    assert!(
        body.contains("updates_per_region"),
        "names the queryable outputs: {body}"
    );
    assert_eq!(http(&addr, "GET", "/jobs/nope/state/speeds", "").0, 404);
    let (code, body) = http(
        &addr,
        "GET",
        &format!("{state}/speeds?key=north&timeout_ms=soon"),
        "",
    );
    assert_eq!(code, 400, "{body}");

    // After a restart the stores are restored from their changelogs (with the progress in
    // /metrics), and answer as before.
    server.stop();
    let server = ServerProc::start(&dir.path().join("data"), &config);
    let addr = server.http.clone();
    for region in regions {
        let expected = produced.get(region).copied();
        wait_for(&format!("{region}'s count after the restart"), || {
            http(
                &addr,
                "GET",
                &format!("{state}/updates_per_region?key={region}"),
                "",
            )
            .0 == 200
                && count(&addr, region) == expected
        });
    }
    let text = crate::support::http_get(&addr, "/metrics").1;
    let job = "job=\"ride-hailing-sql\"";
    let restored = crate::support::metric_sum(&text, "runnel_job_restored_records_total", &[job]);
    assert!(restored > 0.0, "the restore's progress: {text}");
    assert_eq!(
        crate::support::metric_sum(&text, "runnel_job_restore_pending_records", &[job]),
        0.0
    );
    server.stop();
}

#[test]
fn broker_run_and_connect_serve_metrics_with_http() {
    use crate::support::{http_get, metric_sum};
    let dir = tempfile::tempdir().unwrap();
    let runnel = |data: &Path, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // The broker: requests per API and the log's partitions.
    let data = dir.path().join("broker");
    let args = [
        "broker",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--stats-interval",
        "0s",
    ];
    let data_arg = data.to_str().unwrap();
    let full: Vec<&str> = ["--data-dir", data_arg].into_iter().chain(args).collect();
    let (broker, printed) = Runnel::start(&full, &["listening on ", "HTTP on http://"]);
    let (kafka, addr) = (&printed[0], &printed[1]);
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args([
            "--bootstrap",
            kafka,
            "topics",
            "create",
            "created-over-the-wire",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, text) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metric_sum(
            &text,
            "runnel_broker_requests_total",
            &["api=\"CreateTopics\""]
        ) >= 1.0,
        "{text}"
    );
    assert!(text.contains("topic=\"created-over-the-wire\""), "{text}");
    broker.stop();

    // A SQL job: its records, running state and its group's lag.
    let data = dir.path().join("run");
    runnel(&data, &["topics", "create", "rides", "--partitions", "2"]);
    let rides: String = (0..100).map(|i| ride(i * 100, "north") + "\n").collect();
    let mut produce = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .arg("--data-dir")
        .arg(&data)
        .args(["produce", "rides"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(rides.as_bytes())
        .unwrap();
    assert!(produce.wait().unwrap().success());
    let job = dir.path().join("job.toml");
    std::fs::write(&job, WINDOW_JOB).unwrap();
    let (run, printed) = Runnel::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "run",
            job.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
        ],
        &["HTTP on http://"],
    );
    let addr = &printed[0];
    let job_label = "job=\"counts-per-region\"";
    wait_for("the job's 100 records in its metrics", || {
        let text = http_get(addr, "/metrics").1;
        // The first sub-topology's tasks read the input; the others, its repartition topic.
        metric_sum(
            &text,
            "runnel_job_records_in_total",
            &[job_label, "task=\"0_"],
        ) == 100.0
            && metric_sum(&text, "runnel_job_running", &[job_label]) == 1.0
            && metric_sum(
                &text,
                "runnel_group_committed_offset",
                &["group=\"counts-per-region\"", "topic=\"rides\""],
            ) == 100.0
            && metric_sum(&text, "runnel_group_lag", &["group=\"counts-per-region\""]) == 0.0
    });
    let text = http_get(addr, "/metrics").1;
    let source = "operator=\"KSTREAM-SOURCE-0000000000\"";
    assert_eq!(
        metric_sum(
            &text,
            "runnel_job_operator_records_out_total",
            &[job_label, source]
        ),
        100.0,
        "per-operator figures count records, also where SQL passes them as columnar batches: {text}"
    );
    run.stop();

    // A Connect worker: its connectors and what they appended.
    let data = dir.path().join("connect");
    let lines = dir.path().join("lines.txt");
    std::fs::write(
        &lines,
        (0..10).map(|i| format!("line {i}\n")).collect::<String>(),
    )
    .unwrap();
    let worker = dir.path().join("worker.toml");
    write_file_source_worker(&worker, "lines-in", &lines, "lines", "text");
    let (connect, printed) = Runnel::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "connect",
            worker.to_str().unwrap(),
            "--rest",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ],
        &["HTTP on http://"],
    );
    let addr = &printed[0];
    wait_for("the connector's 10 lines in the metrics", || {
        let text = http_get(addr, "/metrics").1;
        metric_sum(
            &text,
            "runnel_connector_running",
            &["connector=\"lines-in\""],
        ) == 1.0
            && metric_sum(
                &text,
                "runnel_log_appended_records_total",
                &["topic=\"lines\""],
            ) == 10.0
            && metric_sum(
                &text,
                "runnel_connector_records_total",
                &["connector=\"lines-in\""],
            ) == 10.0
    });
    connect.stop();
}
