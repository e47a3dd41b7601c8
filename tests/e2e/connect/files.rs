//! File connectors: a source over a glob and a directory, tailing through rotation and
//! resuming by byte position, in text / JSON / CSV; a sink writing JSON and CSV, rotating by
//! size and by time, and appending to its CSV file after a restart under the header it wrote.
//! A directory split over tasks (`tasks.max`) through rotation, a SIGKILL and another
//! `tasks.max`.

use super::*;

fn values(
    rt: &tokio::runtime::Runtime,
    client: &SharedLogClient,
    topic: &str,
) -> Vec<serde_json::Value> {
    rt.block_on(runnel::rides::read_raw(client, topic))
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap())
        .collect()
}

fn append(path: &Path, from: usize, to: usize) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in from..to {
        writeln!(f, "{{\"id\":{i}}}").unwrap();
    }
}

/// Whether the source `connector` stored, for each of `files`, the position at its end: it
/// stores a position only after writing the lines before it, so they are all in the topic.
fn stored_at_ends(
    rt: &tokio::runtime::Runtime,
    worker: &Worker,
    connector: &str,
    files: &[&Path],
) -> bool {
    let stored = rt.block_on(worker.offsets(connector)).unwrap();
    files.iter().all(|f| {
        let m = std::fs::metadata(f).unwrap();
        stored.iter().any(|(p, o)| at_end(p, o, &m))
    })
}

/// Whether the offset `o` of partition `p` is at the end of the file `m` describes.
fn at_end(p: &serde_json::Value, o: &serde_json::Value, m: &std::fs::Metadata) -> bool {
    p["inode"].as_u64() == Some(std::os::unix::fs::MetadataExt::ino(m))
        && o["position"].as_u64() == Some(m.len())
}

fn ids_once(vals: &[serde_json::Value], n: usize) {
    let mut ids: Vec<i64> = vals.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, (0..n as i64).collect::<Vec<_>>(), "every line once");
}

#[test]
fn a_glob_source_follows_appends_and_rotation_and_resumes_by_byte_position() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let (a, b) = (logs.join("a.jsonl"), logs.join("b.jsonl"));
    append(&a, 0, 100);
    append(&b, 100, 200);
    std::fs::write(logs.join("ignored.txt"), "not matched\n").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    let cfg = serde_json::json!({
        "connector.class": "FileStreamSource", "file": format!("{}/*.jsonl", logs.display()),
        "topic": "logs", "format": "json",
    });
    worker.create(config("tail", cfg.clone())).unwrap();
    wait_for("both files", || values(&rt, &client, "logs").len() == 200);
    append(&a, 200, 250);
    wait_for("the appended lines", || {
        values(&rt, &client, "logs").len() == 250
    });
    // Rotation as logrotate does it: lines written, the file renamed (out of the glob), a new
    // one created: the lines still unread in the old file are read from it.
    append(&a, 250, 260);
    std::fs::rename(&a, logs.join("a.jsonl.1")).unwrap();
    append(&a, 260, 270);
    // The new a.jsonl is read only after the old one to its end: with both files' offsets at
    // their ends every line is in the topic, and no more can come.
    wait_for(
        "the offsets of the new a.jsonl and of b at their ends",
        || stored_at_ends(&rt, &worker, "tail", &[&a, &b]),
    );
    ids_once(&values(&rt, &client, "logs"), 270);

    // Stopped, more lines, started again: each line once.
    worker.delete("tail").unwrap();
    append(&a, 270, 280);
    append(&b, 280, 290);
    worker.create(config("tail", cfg)).unwrap();
    wait_for(
        "the offsets at the ends of the files written while stopped",
        || stored_at_ends(&rt, &worker, "tail", &[&a, &b]),
    );
    ids_once(&values(&rt, &client, "logs"), 290);
    worker.delete("tail").unwrap();
}

/// `runnel connect` over `broker` with `worker_file`; returns it and its REST address.
fn worker_over(broker: &str, worker_file: &Path) -> (crate::support::Runnel, String) {
    let args = [
        "--bootstrap",
        broker,
        "connect",
        "--rest",
        "127.0.0.1:0",
        worker_file.to_str().unwrap(),
    ];
    let (worker, mut found) = crate::support::Runnel::start(&args, &["REST API on http://"]);
    (worker, found.remove(0))
}

/// A worker file of the `files` source over `logs` as `tasks` tasks.
fn split_source(worker_file: &Path, logs: &Path, tasks: usize) {
    let toml = format!(
        "[[connector]]\nname = \"files\"\n\"connector.class\" = \"file-source\"\ndirectory = {:?}\ntopic = \"lines\"\nformat = \"json\"\n\"tasks.max\" = {tasks}\n",
        logs.display()
    );
    std::fs::write(worker_file, toml).unwrap();
}

/// `GET` of `path` on the REST API at `rest`, as JSON.
fn rest_get(rest: &str, path: &str) -> serde_json::Value {
    serde_json::from_str(&crate::support::http_get(rest, path).1).unwrap_or_default()
}

/// Whether the `files` source has `n` tasks, all RUNNING.
fn running(rest: &str, n: usize) -> bool {
    let tasks = rest_get(rest, "/connectors/files/status")["tasks"].clone();
    tasks
        .as_array()
        .is_some_and(|t| t.len() == n && t.iter().all(|t| t["state"] == "RUNNING"))
}

/// Whether the `files` source stored, for every file in `logs`, the position at its end.
fn all_stored_at_ends(rest: &str, logs: &Path) -> bool {
    let offsets = rest_get(rest, "/connectors/files/offsets")["offsets"].clone();
    let offsets = offsets.as_array().cloned().unwrap_or_default();
    std::fs::read_dir(logs).unwrap().flatten().all(|f| {
        let m = f.metadata().unwrap();
        offsets
            .iter()
            .any(|e| at_end(&e["partition"], &e["offset"], &m))
    })
}

/// How many times the topic holds each id.
fn id_counts(vals: &[serde_json::Value]) -> std::collections::BTreeMap<i64, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for v in vals {
        *counts.entry(v["id"].as_i64().unwrap()).or_default() += 1;
    }
    counts
}

/// `tasks.max = 3` over a directory: three tasks, each file read by exactly one. Lines
/// appended and a file rotated while running, the worker SIGKILLed once they are all in the
/// topic (before or after their offsets are stored), another file rotated while it is down,
/// then started again: every line at least once, and exactly once those whose offsets were
/// stored before the kill or that came after it. Stopped cleanly and started as two tasks: the
/// finished files are not read again.
#[test]
fn a_directory_split_over_tasks_survives_rotation_a_sigkill_and_a_new_tasks_max() {
    let dir = tempfile::tempdir().unwrap();
    let broker = crate::broker::BrokerProc::start(&dir.path().join("broker"));
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let file = |i: usize| logs.join(format!("f{i}.jsonl"));
    let rotated = |i: usize| logs.join(format!("f{i}.jsonl.1"));
    for i in 0..6 {
        append(&file(i), i * 50, i * 50 + 50);
    }
    let worker_file = dir.path().join("worker.toml");
    split_source(&worker_file, &logs, 3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = rt
        .block_on(runnel::broker::RemoteLog::connect(&broker.addr))
        .unwrap();
    let (worker, rest) = worker_over(&broker.addr, &worker_file);
    wait_for("3 tasks RUNNING", || running(&rest, 3));
    wait_for("every file's offset at its end", || {
        all_stored_at_ends(&rest, &logs)
    });
    ids_once(&values(&rt, &client, "lines"), 300);

    // While running: appends, and f0 rotated (its last lines written, renamed, a new f0).
    append(&file(1), 300, 320);
    append(&file(2), 320, 340);
    append(&file(0), 340, 350);
    std::fs::rename(file(0), rotated(0)).unwrap();
    append(&file(0), 350, 360);
    wait_for("every line in the topic", || {
        id_counts(&values(&rt, &client, "lines")).len() == 360
    });
    drop(worker); // SIGKILL: the last lines' offsets may not be stored.

    // While down: f1 rotated, with a last line in its old file; f2 appended to.
    std::fs::rename(file(1), rotated(1)).unwrap();
    append(&rotated(1), 360, 370);
    append(&file(1), 370, 390);
    append(&file(2), 390, 410);
    let (worker, rest) = worker_over(&broker.addr, &worker_file);
    wait_for("3 tasks RUNNING again", || running(&rest, 3));
    wait_for("every file's offset at its end after the restart", || {
        all_stored_at_ends(&rest, &logs)
    });
    let counts = id_counts(&values(&rt, &client, "lines"));
    assert_eq!(counts.len(), 410, "every line at least once");
    for (id, n) in &counts {
        let exact = !(300..360).contains(id);
        assert!(*n == 1 || !exact, "id {id} {n} times");
    }
    worker.stop();

    // Stopped cleanly, more lines, started as 2 tasks: only the new lines are read.
    append(&file(3), 410, 420);
    append(&rotated(0), 420, 430);
    split_source(&worker_file, &logs, 2);
    let (worker, rest) = worker_over(&broker.addr, &worker_file);
    wait_for("2 tasks RUNNING", || running(&rest, 2));
    wait_for("every file's offset at its end as 2 tasks", || {
        all_stored_at_ends(&rest, &logs)
    });
    let mut want = counts;
    want.extend((410..430).map(|id| (id, 1)));
    assert_eq!(id_counts(&values(&rt, &client, "lines")), want);
    worker.stop();
}

#[test]
fn a_directory_of_csv_files_becomes_json_records_with_the_header_as_field_names() {
    let dir = tempfile::tempdir().unwrap();
    let csvs = dir.path().join("csv");
    std::fs::create_dir(&csvs).unwrap();
    let f = csvs.join("people.csv");
    std::fs::write(
        &f,
        "id,name,city\n1,Ann,\"Paris, FR\"\n2,Bob\n3,\"Cy \"\"C\"\"\",Rome\n",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    let cfg = serde_json::json!({
        "connector.class": "file-source", "directory": csvs.to_str().unwrap(), "topic": "people", "format": "csv",
        "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "people-dlq",
    });
    worker.create(config("csv", cfg.clone())).unwrap();
    wait_for("the rows", || values(&rt, &client, "people").len() == 2);
    assert_eq!(
        values(&rt, &client, "people"),
        [
            serde_json::json!({"id": "1", "name": "Ann", "city": "Paris, FR"}),
            serde_json::json!({"id": "3", "name": "Cy \"C\"", "city": "Rome"}),
        ]
    );
    let dead = rt
        .block_on(runnel::rides::read_raw(&client, "people-dlq"))
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        String::from_utf8_lossy(&dead[0].headers[0].value.clone().unwrap())
            .contains("people.csv:3: 2 fields where the header has 3")
    );
    // Resumed mid-file, the header still names the fields.
    let size = std::fs::metadata(&f).unwrap().len();
    wait_for("the stored offset", || {
        rt.block_on(worker.offsets("csv"))
            .unwrap()
            .first()
            .and_then(|(_, o)| o["position"].as_u64())
            == Some(size)
    });
    worker.delete("csv").unwrap();
    let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    writeln!(h, "4,Dee,Oslo").unwrap();
    drop(h);
    worker.create(config("csv", cfg)).unwrap();
    wait_for("the stored offset at the new end", || {
        stored_at_ends(&rt, &worker, "csv", &[&f])
    });
    let got = values(&rt, &client, "people");
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[2],
        serde_json::json!({"id": "4", "name": "Dee", "city": "Oslo"})
    );
    worker.delete("csv").unwrap();
}

/// The file sink reads the header of the CSV file it appends to back with the rule it wrote it
/// with: a column name holding a comma (quoted in the header) stays one column after a restart.
#[test]
fn a_csv_header_with_a_comma_survives_a_restart_of_the_file_sink() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let out = dir.path().join("out.csv");
    let cfg = serde_json::json!({
        "connector.class": "file-sink", "file": out.to_str().unwrap(), "topics": "rows", "format": "csv",
    });
    let rows = |ids: std::ops::Range<usize>| -> Vec<String> {
        ids.map(|i| format!(r#"{{"id":{i},"name, full":"n{i}, \"{i}\""}}"#))
            .collect()
    };
    let run = |ids: std::ops::Range<usize>| {
        let worker = rt.block_on(Worker::new(client.clone())).unwrap();
        let _g = rt.enter();
        produce(&rt, &client, "rows", &rows(ids.clone()));
        worker.create(config("csv-out", cfg.clone())).unwrap();
        wait_for("every record written and committed", || {
            committed(&rt, &client, "csv-out", "rows") == ids.end as u64
        });
        worker.delete("csv-out").unwrap();
    };
    run(0..50);
    // The worker stopped: a new one appends to the file the first one wrote.
    run(50..100);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(r#"id,"name, full""#), "one header");
    let mut reader = runnel::connectors::csv::Reader::new();
    let parsed: Vec<Vec<String>> = lines.map(|l| reader.line(l.as_bytes())).collect();
    let want: Vec<Vec<String>> = (0..100)
        .map(|i| vec![i.to_string(), format!("n{i}, \"{i}\"")])
        .collect();
    assert_eq!(parsed, want, "every row once, in two columns");
}

#[test]
fn the_file_sink_writes_json_and_csv_and_rotates_by_size_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let recs: Vec<String> = (0..100)
        .map(|i| format!("{{\"id\":{i},\"name\":\"n{i}\"}}"))
        .collect();
    produce(&rt, &client, "rows", &recs);
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    let out = dir.path().join("out.jsonl");
    worker.create(config("json-out", serde_json::json!({
        "connector.class": "file-sink", "file": out.to_str().unwrap(), "topics": "rows", "format": "json",
        "rotate.size.bytes": "500",
    }))).unwrap();
    let all_lines = |base: &Path| -> Vec<String> {
        let mut n = 1;
        let mut lines = Vec::new();
        loop {
            let p = format!("{}.{n}", base.display());
            if !Path::new(&p).exists() {
                break;
            }
            let l = lines_of(Path::new(&p));
            assert!(
                std::fs::metadata(&p).unwrap().len() >= 500,
                "{p} rotated at 500 bytes"
            );
            lines.extend(l);
            n += 1;
        }
        lines.extend(lines_of(base));
        lines
    };
    wait_for("every record in the rotated files", || {
        all_lines(&out).len() == 100
    });
    assert_eq!(all_lines(&out), recs, "in order, across the rotated files");
    assert!(Path::new(&format!("{}.3", out.display())).exists());

    let csv = dir.path().join("out.csv");
    produce(
        &rt,
        &client,
        "rows",
        &[
            r#"{"id":100,"name":"has, comma"}"#,
            r#"{"id":101,"zip":"x"}"#,
        ],
    );
    worker.create(config("csv-out", serde_json::json!({
        "connector.class": "file-sink", "file": csv.to_str().unwrap(), "topics": "rows", "format": "csv",
        "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "csv-dlq",
    }))).unwrap();
    wait_for("the CSV file", || lines_of(&csv).len() == 102);
    let lines = lines_of(&csv);
    assert_eq!(lines[0], "id,name");
    assert_eq!(lines[1], "0,n0");
    assert_eq!(lines[101], "100,\"has, comma\"");
    wait_for("the refused record", || {
        rt.block_on(runnel::rides::read_raw(&client, "csv-dlq"))
            .map(|d| d.len())
            .unwrap_or(0)
            == 1
    });

    // Time: a file open longer than rotate.interval.ms is rotated when records arrive.
    let timed = dir.path().join("timed.jsonl");
    produce(&rt, &client, "timed", &recs[..5]);
    worker.create(config("timed-out", serde_json::json!({
        "connector.class": "file-sink", "file": timed.to_str().unwrap(), "topics": "timed", "format": "json",
        "rotate.interval.ms": "300",
    }))).unwrap();
    wait_for("the first records", || lines_of(&timed).len() == 5);
    // Its last write is at or after its opening: once that is older than the interval, the
    // file has been open longer.
    wait_for("the file open longer than rotate.interval.ms", || {
        std::fs::metadata(&timed)
            .and_then(|m| m.modified())
            .is_ok_and(|t| {
                t.elapsed()
                    .is_ok_and(|age| age > Duration::from_millis(300))
            })
    });
    produce(&rt, &client, "timed", &recs[5..10]);
    wait_for("the rotation", || {
        lines_of(&timed).len() == 5
            && lines_of(Path::new(&format!("{}.1", timed.display()))).len() == 5
    });
    assert_eq!(lines_of(&timed), recs[5..10]);
    for n in worker.names() {
        worker.delete(&n).unwrap();
    }
}
