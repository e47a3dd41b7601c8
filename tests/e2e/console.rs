//! The web console of `runnel server`, in a real browser: headless Chromium loads each page of a
//! server holding topics, a consumer group with a lag, a SQL job and a file source connector;
//! the dumped DOM must show them, with no error on the page or in the browser's console.
//! Screenshots of each page go to `$CARGO_TARGET_TMPDIR/console-screenshots/` (CI artifacts).
//! The record browser's API is tested directly as a script would use it.

use crate::server::{
    ServerProc, WINDOW_JOB, http, http_as, json, ride, write_config, write_file_source_worker,
};
use crate::support::{wait_for, wait_for_up_to};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "s3cret";
const JOB: &str = "counts-per-region";
const RIDES: u64 = 300;
/// Records produced to `events`, per partition, and how many the group `g` consumes of them.
const EVENTS: [u64; 2] = [40, 30];
const CONSUMED: u64 = 25;

/// Chromium's path, or `None` (after saying so) where it is not installed and not required.
fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/chromium");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("RUNNEL_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "chromium is not installed (apt-get install -y chromium) and RUNNEL_REQUIRE_SERVICES=1"
    );
    println!("skipped: chromium not installed");
    None
}

/// Runs headless Chromium on `url` with `args` (its virtual time lets the page's requests and
/// timers run for 10 s), with a deadline; returns its stdout and stderr.
fn browse(chromium: &Path, work: &Path, url: &str, args: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir_in(work).unwrap();
    let (out, err) = (work.join("stdout"), work.join("stderr"));
    let mut browser = Browser(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--virtual-time-budget=10000",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args)
            .arg(url)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut status = None;
    wait_for_up_to(
        &format!("chromium to finish loading {url}"),
        Duration::from_secs(90),
        || {
            status = browser.0.try_wait().unwrap();
            status.is_some()
        },
    );
    let status = status.expect("waited for");
    let (out, err) = (
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(err).unwrap(),
    );
    assert!(status.success(), "chromium failed on {url}: {err}");
    (out, err)
}

/// A Chromium child, killed when dropped (a test that times out leaves no browser running).
struct Browser(std::process::Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the browser's console printed: Chromium logs every console message, whatever its
/// level, and every uncaught error as an `INFO:CONSOLE` line on stderr.
fn console_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

/// `runnel` with `args` against the server's Kafka listener, `stdin` as its input.
fn runnel(kafka: &str, args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["--bootstrap", kafka])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "runnel {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn get(addr: &str, path: &str) -> serde_json::Value {
    let (code, body) = http_as(addr, "GET", path, "", Some(TOKEN));
    assert_eq!(code, 200, "GET {path}: {body}");
    json(&body)
}

fn records(addr: &str, query: &str) -> serde_json::Value {
    get(addr, &format!("/api/topics/events/records?{query}"))
}

#[test]
fn the_console_shows_topics_groups_jobs_and_connectors_in_a_browser() {
    let Some(chromium) = chromium() else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    std::fs::write(jobs.join("counts.toml"), WINDOW_JOB).unwrap();
    let input = dir.path().join("rides.jsonl");
    let rides: String = (0..RIDES as i64)
        .map(|i| ride(i * 100, ["north", "south"][(i % 2) as usize]) + "\n")
        .collect();
    std::fs::write(&input, rides).unwrap();
    let worker_file = dir.path().join("connect.toml");
    write_file_source_worker(&worker_file, "rides-in", &input, "rides", "json");
    let config = write_config(dir.path(), Some(&jobs), Some(&worker_file));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[http]\n", &format!("[http]\ntoken = \"{TOKEN}\"\n")),
    )
    .unwrap();
    let server = ServerProc::start(&dir.path().join("data"), &config);
    let addr = server.http.clone();

    // `events`: text records on both partitions, one not UTF-8 last on partition 1; the group
    // `g` reads CONSUMED of them and stops, leaving the rest as its lag.
    runnel(
        &server.kafka,
        &["topics", "create", "events", "--partitions", "2"],
        b"",
    );
    for (partition, n) in EVENTS.iter().enumerate() {
        let lines: String = (0..*n)
            .map(|i| format!("event-{partition}-{i}\n"))
            .collect();
        let mut input = lines.into_bytes();
        if partition == 1 {
            input.truncate(input.len() - format!("event-1-{}\n", n - 1).len());
            input.extend_from_slice(b"\xff\xfe\n");
        }
        let p = partition.to_string();
        runnel(
            &server.kafka,
            &["produce", "events", "--partition", &p],
            &input,
        );
    }
    let max = CONSUMED.to_string();
    let consume = [
        "consume",
        "events",
        "--group",
        "g",
        "--from-beginning",
        "--max-messages",
        &max,
    ];
    let consumed = runnel(&server.kafka, &consume, b"").lines().count();
    assert_eq!(consumed as u64, CONSUMED);
    let total: u64 = EVENTS.iter().sum();
    let lag = total - CONSUMED;
    wait_for("the group's lag", || {
        let groups = get(&addr, "/api/groups");
        groups
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == "g" && g["lag"] == lag)
    });
    // The job's input count includes its repartition topic's records: its group's committed
    // offset on `rides` says when it has read every ride.
    wait_for("the job to read every ride", || {
        let groups = get(&addr, "/api/groups");
        groups.as_array().unwrap().iter().any(|g| {
            g["group"] == JOB
                && g["lag"] == 0
                && g["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["topic"] == "rides" && p["committed"] == RIDES)
        })
    });

    // The APIs need the token; the page and its scripts do not.
    assert_eq!(http(&addr, "GET", "/api/topics", "").0, 401);
    assert_eq!(http(&addr, "GET", "/api/groups", "").0, 401);
    let (code, page) = http(&addr, "GET", "/console/", "");
    assert_eq!(code, 200);
    assert!(page.contains("id=\"errors\""), "{page}");
    assert_eq!(http(&addr, "GET", "/console/base.js", "").0, 200);

    let topics = get(&addr, "/api/topics");
    let events = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "events")
        .unwrap_or_else(|| panic!("no events topic: {topics}"));
    assert_eq!(events["end_offset_total"], total);
    for (p, n) in EVENTS.iter().enumerate() {
        assert_eq!(events["partitions"][p]["end_offset"], *n, "{events}");
        assert!(events["partitions"][p]["size_bytes"].as_u64().unwrap() > 0);
    }
    let groups = get(&addr, "/api/groups");
    let g = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "g")
        .unwrap();
    let lags: u64 = g["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap() - p["committed"].as_u64().unwrap())
        .sum();
    assert_eq!(lags, lag, "{g}");

    // The record browser's API: seek by offset, by time, pages, bytes that are not UTF-8.
    let page = records(&addr, "partition=0&offset=10&limit=5");
    let offsets: Vec<u64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [10, 11, 12, 13, 14]);
    assert_eq!(page["records"][0]["value"], "event-0-10");
    assert_eq!(page["records"][0]["value_encoding"], "utf-8");
    assert_eq!(page["next_offset"], 15);
    assert_eq!(page["end_offset"], EVENTS[0]);
    let all = records(&addr, "partition=1&limit=500");
    let all = all["records"].as_array().unwrap();
    assert_eq!(all.len() as u64, EVENTS[1]);
    let last = &all[all.len() - 1];
    assert_eq!(last["value"], "//4=", "0xff 0xfe in base64: {last}");
    assert_eq!(last["value_encoding"], "base64");
    let ts = all[20]["timestamp"].as_i64().unwrap();
    let first_at_ts = all
        .iter()
        .find(|r| r["timestamp"].as_i64().unwrap() >= ts)
        .unwrap();
    let by_time = records(&addr, &format!("partition=1&timestamp={ts}&limit=1"));
    assert_eq!(by_time["records"][0]["offset"], first_at_ts["offset"]);
    let future = records(&addr, &format!("partition=1&timestamp={}", ts + 3_600_000));
    assert_eq!(future["records"], serde_json::json!([]));
    assert_eq!(future["next_offset"], EVENTS[1]);
    for (query, named) in [
        ("partition=x", "partition"),
        ("partition=9", "partition 9"),
        ("offset=1&timestamp=2", "timestamp"),
        ("limit=0", "limit"),
        ("offset=ten", "offset"),
        ("colour=red", "colour"),
    ] {
        let path = format!("/api/topics/events/records?{query}");
        let (code, body) = http_as(&addr, "GET", &path, "", Some(TOKEN));
        assert_eq!(code, 400, "{query}: {body}");
        let e = json(&body);
        assert_eq!(e["error_code"], 400);
        assert!(
            e["message"].as_str().unwrap().contains(named),
            "{query}: the message names {named}: {body}"
        );
    }
    let (code, body) = http_as(&addr, "GET", "/api/topics/nope/records", "", Some(TOKEN));
    assert_eq!(
        (code, json(&body)["error_code"].clone()),
        (404, 404.into()),
        "{body}"
    );

    // Chromium's console lines are what this test watches: one deliberate error shows there.
    let work = tempfile::tempdir().unwrap();
    let (_, stderr) = browse(
        &chromium,
        work.path(),
        "data:text/html,<script>console.error('deliberate-console-check')</script>",
        &["--dump-dom"],
    );
    assert!(
        console_lines(&stderr)
            .iter()
            .any(|l| l.contains("deliberate-console-check")),
        "chromium no longer logs console errors as :CONSOLE lines: {stderr}"
    );

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let pages: [(&str, &[&str]); 7] = [
        (
            "overview",
            &["data-figure=\"topics\"", "data-figure=\"rss\"", ">1 / 1<"],
        ),
        (
            "topics",
            &[
                "data-topic=\"events\"",
                "data-topic=\"rides\"",
                "class=\"num rate\"",
            ],
        ),
        (
            "topics/events",
            &["data-offset=\"0\"", "event-0-0", "data-next-offset=\"40\""],
        ),
        (
            "groups",
            &[
                &format!("data-group=\"g\" data-lag=\"{lag}\""),
                "data-series=\"g\"",
                "<polyline",
            ],
        ),
        (
            "jobs",
            &["class=\"num rate\"", "data-series=\"counts-per-region in\""],
        ),
        (
            "jobs/counts-per-region",
            &[
                "data-figure=\"records-in\"",
                "data-figure=\"rate\"",
                "data-figure=\"watermark\"",
                "class=\"topology\"",
                "data-node=",
            ],
        ),
        (
            "connectors",
            &[
                "data-connector=\"rides-in\" data-state=\"RUNNING\"",
                "data-action=\"pause\"",
            ],
        ),
    ];
    for (page, expected) in pages {
        let url = format!("http://{addr}/console/?token={TOKEN}#{page}");
        let (dom, stderr) = browse(&chromium, work.path(), &url, &["--dump-dom"]);
        let name = page.split('/').next().unwrap();
        assert!(
            dom.contains(&format!("data-ready=\"{name}\"")),
            "#{page} never became ready: {dom}"
        );
        assert!(
            dom.contains("<div id=\"errors\" role=\"alert\"></div>"),
            "#{page} shows errors: {dom}"
        );
        assert_eq!(
            console_lines(&stderr),
            Vec::<&str>::new(),
            "#{page} wrote to the browser's console"
        );
        for e in expected {
            assert!(dom.contains(e), "#{page} lacks {e}: {dom}");
        }
        if page == "jobs" {
            let shown = dom
                .split_once(&format!("data-job=\"{JOB}\" data-records-in=\""))
                .and_then(|(_, rest)| rest.split('"').next()?.parse::<u64>().ok());
            assert!(shown >= Some(RIDES), "the job's records in: {dom}");
        }
        if page == "groups" {
            let rows = dom.matches("data-partition=\"events:").count();
            assert_eq!(rows, 2, "a row per partition of g: {dom}");
        }
        let png = shots.join(format!("{}.png", page.replace('/', "-")));
        let shot = format!("--screenshot={}", png.display());
        browse(
            &chromium,
            work.path(),
            &url,
            &[&shot, "--window-size=1280,900"],
        );
        assert!(std::fs::metadata(&png).unwrap().len() > 10_000, "{png:?}");
    }
    server.stop();
    println!(
        "console pages checked in {:?}; screenshots in {}",
        started.elapsed(),
        shots.display()
    );
}
