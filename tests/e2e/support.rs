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
pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
}
