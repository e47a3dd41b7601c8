//! Output helpers shared by the commands: tables on stdout (a closed pipe, as in `| head`, is
//! not an error), progress bars on stderr only when it is a terminal, and the formatting of
//! sizes, durations and rates.

use anyhow::Result;
use comfy_table::{CellAlignment, Table, presets};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// True for the error a write gets once the reader of a pipe has gone away.
pub fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// Prints `text` and a newline on stdout; a closed pipe ends the output quietly.
pub fn print(text: impl std::fmt::Display) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if !is_broken_pipe(&e) => Err(e.into()),
        _ => Ok(()),
    }
}

/// The median of `v` (the upper one of an even count); sorts `v`.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A table with `headers`; the columns listed in `right` are right-aligned (numbers).
pub fn table(headers: &[&str], right: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    t.set_header(headers.to_vec());
    for &i in right {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// A progress bar over `len` units (records or bytes), hidden unless stderr is a terminal.
pub fn bar(len: u64, template: &str, message: &str) -> ProgressBar {
    styled(ProgressBar::new(len), template, message)
}

/// A spinner for work of unknown length, hidden unless stderr is a terminal.
pub fn spinner(template: &str, message: &str) -> ProgressBar {
    styled(ProgressBar::no_length(), template, message)
}

fn styled(pb: ProgressBar, template: &str, message: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(template)
        .expect("progress templates are constants")
        .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(message.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// `1.50 MiB`.
pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

/// A retention-style duration in its largest exact unit: `7d`, `36h`, `90s`, `250ms`.
pub fn millis(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    UNITS
        .iter()
        .find(|(unit, _)| ms > 0 && ms.is_multiple_of(*unit))
        .map_or_else(
            || format!("{ms}ms"),
            |(unit, name)| format!("{}{name}", ms / unit),
        )
}

/// A short latency: `850 µs`, `12.3 ms`, `1.20 s`.
pub fn latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `1 record`, `2 records`.
pub fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// `1000000 records to rides in 1.23 s (812345 records/s, 120.3 MB/s)`.
pub fn throughput(records: u64, noun: &str, topic: &str, bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    format!(
        "{} to {topic} in {:.2} s ({:.0} records/s, {:.1} MB/s)",
        count(records, noun),
        elapsed.as_secs_f64(),
        records as f64 / secs,
        bytes as f64 / secs / 1e6
    )
}

/// Ends a progress bar, leaving `message` in its place on the terminal.
pub fn finish(pb: &ProgressBar, message: String) {
    if pb.is_hidden() {
        return;
    }
    pb.set_style(ProgressStyle::with_template("  {msg}").expect("constant template"));
    pb.finish_with_message(message);
}
