//! Prometheus' text exposition format (version 0.0.4), written by hand: a family is a
//! `# HELP` and `# TYPE` line followed by its samples, label values escaped as the format
//! says (`\\`, `\"`, `\n`). Families are written whole, one after another, so a family's
//! samples are never interleaved with another's (parsers require that).

use runnel_log::stats::HistogramSnapshot;
use std::fmt::Write as _;

/// The kind of a family, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// Label pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    /// Starts family `name` (with the `runnel_` prefix already in it).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> Family<'_> {
        let _ = writeln!(self.text, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
        Family {
            out: &mut self.text,
            name: name.to_string(),
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// The samples of one family.
pub struct Family<'a> {
    out: &'a mut String,
    name: String,
}

impl Family<'_> {
    /// A counter's or gauge's sample.
    pub fn sample(&mut self, labels: Labels<'_>, value: f64) -> &mut Self {
        let name = self.name.clone();
        self.line(&name, labels, None, value);
        self
    }

    /// A histogram's `_bucket` (one per bound and `+Inf`), `_sum` and `_count` samples.
    pub fn histogram(&mut self, labels: Labels<'_>, h: &HistogramSnapshot) -> &mut Self {
        let bucket = format!("{}_bucket", self.name);
        for (bound, count) in h.bounds.iter().zip(&h.cumulative) {
            self.line(&bucket, labels, Some(&bound.to_string()), *count as f64);
        }
        self.line(&bucket, labels, Some("+Inf"), h.count as f64);
        let (sum, count) = (format!("{}_sum", self.name), format!("{}_count", self.name));
        self.line(&sum, labels, None, h.sum_seconds);
        self.line(&count, labels, None, h.count as f64);
        self
    }

    fn line(&mut self, name: &str, labels: Labels<'_>, le: Option<&str>, value: f64) {
        self.out.push_str(name);
        let pairs = labels.iter().copied().chain(le.map(|b| ("le", b)));
        let mut first = true;
        for (k, v) in pairs {
            self.out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(self.out, "{k}=\"{}\"", escape(v));
        }
        if !first {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Integers without a fraction (how counters read best), others as Rust prints them.
fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_written_with_help_type_escaped_labels_and_histogram_buckets() {
        let mut e = Exposition::default();
        e.family("runnel_x_total", Kind::Counter, "Things.")
            .sample(&[("topic", "a\"b\\c\nd")], 3.0)
            .sample(&[], 0.5);
        let h = runnel_log::stats::Histogram::new();
        h.observe(std::time::Duration::from_millis(2));
        e.family("runnel_y_seconds", Kind::Histogram, "Latency.")
            .histogram(&[("api", "Fetch")], &h.snapshot());
        let text = e.finish();
        assert!(text.starts_with(
            "# HELP runnel_x_total Things.\n# TYPE runnel_x_total counter\nrunnel_x_total{topic=\"a\\\"b\\\\c\\nd\"} 3\nrunnel_x_total 0.5\n"
        ), "{text}");
        assert!(
            text.contains("runnel_y_seconds_bucket{api=\"Fetch\",le=\"0.001\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("runnel_y_seconds_bucket{api=\"Fetch\",le=\"0.0025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("runnel_y_seconds_bucket{api=\"Fetch\",le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("runnel_y_seconds_count{api=\"Fetch\"} 1\n"),
            "{text}"
        );
    }
}
