//! Helpers shared by the end-to-end tests: building batches and reading partitions back.

use runnel_log::batch::{self, BatchBuilder};
use runnel_log::{Partition, Record};

/// (key, value, timestamp) of a record to write.
pub type TestRecord = (Option<Vec<u8>>, Option<Vec<u8>>, i64);

/// Encodes records into one batch.
pub fn batch_of(records: &[TestRecord]) -> Vec<u8> {
    let mut b = BatchBuilder::new(4096);
    for (k, v, ts) in records {
        b.push(*ts, k.as_deref(), v.as_deref(), &[]);
    }
    b.finish()
}

/// Reads every record from `from` to the high watermark, or the first error.
pub fn read_all(p: &Partition, from: u64) -> runnel_log::Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < p.high_watermark() {
        let f = p.read(offset, 64 * 1024)?;
        if f.batches.is_empty() {
            break;
        }
        for b in batch::split_batches(&f.batches) {
            out.extend(
                batch::records(&b)?
                    .into_iter()
                    .filter(|r| r.offset >= offset),
            );
        }
        offset = f.next_offset;
    }
    Ok(out)
}

/// Base offsets of the segment files of a partition directory.
pub fn segment_files(p: &Partition) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(p.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Sends the library's logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Sets the modification time of every segment file under `dir` (as if written at `ms`).
pub fn set_segment_mtimes(dir: &std::path::Path, ms: i64) {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    for entry in walk(dir) {
        if entry.extension().is_some_and(|e| e == "log") {
            std::fs::File::options()
                .write(true)
                .open(&entry)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Waits up to a minute for `ok`, then fails naming `what`.
pub fn wait_for(what: &str, ok: impl FnMut() -> bool) {
    wait_for_up_to(what, std::time::Duration::from_secs(60), ok);
}

/// [`wait_for`] with another limit.
pub fn wait_for_up_to(what: &str, limit: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
}

/// A `runnel` child process, killed when dropped (a failing test leaves nothing running that
/// holds the test's pipes open).
pub struct Runnel {
    child: std::process::Child,
}

impl Runnel {
    /// Starts `runnel args` and reads its stdout until a line starting with each of
    /// `prefixes` appeared; returns the rest of each such line, in `prefixes`' order.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S], prefixes: &[&str]) -> (Self, Vec<String>) {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let this = Self { child };
        let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
        while found.iter().any(Option::is_none) {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "runnel exited before printing {prefixes:?}"
            );
            for (i, p) in prefixes.iter().enumerate() {
                if let Some(rest) = line.trim().strip_prefix(p) {
                    found[i] = Some(rest.to_string());
                }
            }
        }
        // The rest of stdout is drained so the child never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        (this, found.into_iter().map(Option::unwrap).collect())
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "runnel exited with {status}");
    }
}

impl Drop for Runnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET http://addr/path`: the status and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    let status: u16 = raw.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// The sum of a Prometheus text exposition's samples of `name` whose labels contain every
/// `key="value"` of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|p| rest.contains(p)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}
