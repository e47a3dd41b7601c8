//! Crash test: a child process appends with durability `always` from several threads and prints
//! each acknowledgement; the parent kills it with SIGKILL at random moments, reopens the log and
//! checks that every acknowledged record is there with its exact bytes, that offsets are dense,
//! and that the next run appends at the right offset.

use crate::support::{batch_of, read_all};
use rand::{Rng, SeedableRng};
use runnel_log::{Durability, Log, TopicConfig, TopicPartition};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "RUNNEL_CRASH_CHILD_DIR";
const KILLS: usize = 24;

/// The value of record `i` of the batch identified by `seed`: its content and length depend on
/// both, so a record misplaced or from a torn batch cannot pass for another.
fn value(seed: u64, i: usize) -> Vec<u8> {
    let len = 20 + ((seed as usize * 31 + i * 7) % 400);
    let mut v = format!("{seed}:{i}:").into_bytes();
    v.resize(len, b'a' + (seed % 26) as u8);
    v
}

/// The child process of `acknowledged_appends_survive_sigkill`, which runs it (ignored, so
/// that it is not counted as a test of its own).
#[test]
#[ignore = "the child process of acknowledged_appends_survive_sigkill, run by it"]
fn crash_child() {
    let dir = std::env::var(CHILD_ENV)
        .expect("run by acknowledged_appends_survive_sigkill, which sets RUNNEL_CRASH_CHILD_DIR");
    let log = Log::open(&dir).unwrap();
    if log.topic("crash").is_err() {
        log.create_topic(
            "crash",
            TopicConfig {
                durability: Durability::Always,
                segment_bytes: 64 * 1024,
                ..Default::default()
            },
        )
        .unwrap();
    }
    let p = log.partition(&TopicPartition::new("crash", 0)).unwrap();
    let run: u64 = std::env::var("RUNNEL_CRASH_RUN").unwrap().parse().unwrap();
    let out = std::sync::Mutex::new(std::io::stdout());
    // libtest has printed `test crash::crash_child ... ` without a newline: start a fresh line.
    writeln!(out.lock().unwrap(), "\nstart {}", p.high_watermark()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (p, out) = (&p, &out);
            s.spawn(move || {
                for n in 0u64.. {
                    let seed = run * 1_000_000_000 + t * 100_000_000 + n;
                    let count = 1 + (seed % 13) as usize;
                    let recs: Vec<_> = (0..count)
                        .map(|i| (None, Some(value(seed, i)), 1))
                        .collect();
                    let base = p.append(batch_of(&recs)).unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ack {base} {count} {seed}").unwrap();
                    o.flush().unwrap();
                }
            });
        }
    });
}

/// What the child prints: where it starts, then one line per acknowledged append.
enum Line {
    Start(u64),
    Ack { base: u64, count: u64, seed: u64 },
}

impl Line {
    /// Finds the marker anywhere in the line, in case the test harness prefixed it.
    fn parse(line: &str) -> Option<Self> {
        if let Some(i) = line.find("start ") {
            return line[i + 6..].trim().parse().ok().map(Line::Start);
        }
        let i = line.find("ack ")?;
        let mut fields = line[i + 4..]
            .split(' ')
            .map(|x| x.trim().parse::<u64>().ok());
        Some(Line::Ack {
            base: fields.next()??,
            count: fields.next()??,
            seed: fields.next()??,
        })
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // offset -> (seed, index in batch) for every acknowledged record so far.
    let mut acked: BTreeMap<u64, (u64, usize)> = BTreeMap::new();
    let mut end_after_recovery = 0u64;
    for run in 0..KILLS as u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("RUNNEL_CRASH_RUN", run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = std::sync::mpsc::channel::<Line>();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(parsed) = Line::parse(&line) {
                    let _ = lines.send(parsed);
                }
            }
        });
        // The kill timer starts at the first acknowledgement, so a slow start on a loaded
        // machine cannot make a run that tests nothing.
        let mut events = Vec::new();
        loop {
            let event = received
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("run {run}: the child acknowledged nothing"));
            let is_ack = matches!(event, Line::Ack { .. });
            events.push(event);
            if is_ack {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(10..300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        events.extend(received.try_iter());

        let start = events
            .iter()
            .find_map(|e| match e {
                Line::Start(offset) => Some(*offset),
                Line::Ack { .. } => None,
            })
            .expect("the child prints its start offset first");
        assert_eq!(
            start, end_after_recovery,
            "run {run}: the child starts at the recovered end"
        );
        let acks: Vec<(u64, u64, u64)> = events
            .iter()
            .filter_map(|e| match e {
                Line::Ack { base, count, seed } => Some((*base, *count, *seed)),
                Line::Start(_) => None,
            })
            .collect();
        assert!(
            acks.iter().all(|a| a.0 >= start),
            "run {run}: an append went below the log end"
        );
        for (base, count, seed) in acks {
            for i in 0..count as usize {
                assert!(
                    acked.insert(base + i as u64, (seed, i)).is_none(),
                    "offset given twice"
                );
            }
        }

        let log = Log::open(dir.path()).unwrap();
        let p = log.partition(&TopicPartition::new("crash", 0)).unwrap();
        let records = read_all(&p, 0).unwrap();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "offsets dense after recovery");
        }
        for (&offset, &(seed, i)) in &acked {
            let r = records.get(offset as usize).unwrap_or_else(|| {
                panic!(
                    "run {run}: acknowledged offset {offset} lost (log ends at {})",
                    records.len()
                )
            });
            assert_eq!(
                r.value.as_deref(),
                Some(&value(seed, i)[..]),
                "offset {offset} bytes differ"
            );
        }
        end_after_recovery = p.high_watermark();
    }
    assert!(
        acked.len() > 1000,
        "only {} records acknowledged over {KILLS} runs",
        acked.len()
    );
}
