//! Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! One [`TextWriter`] appends to a `String`; each family is a `# HELP` and `# TYPE` line
//! followed by its samples. Label values are escaped (`\\`, `"`, newline); histograms are
//! written as cumulative `_bucket{le=...}` lines ending in `le="+Inf"`, then `_sum` and `_count`.

use std::fmt::Write as _;

/// The content type `/metrics` answers with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// A histogram's state: bucket upper bounds and per-bucket (non-cumulative) counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Upper bounds, ascending, in the recorded unit.
    pub bounds: &'static [u64],
    /// `bounds.len() + 1` counts; the last is the overflow bucket (`+Inf`).
    pub counts: Vec<u64>,
    /// Sum of recorded values, in the recorded unit.
    pub sum: u64,
}

impl HistogramSnapshot {
    pub fn empty(bounds: &'static [u64]) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0,
        }
    }

    /// Adds another snapshot with the same bounds.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        debug_assert_eq!(self.bounds, other.bounds);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Appends families and samples to a string.
pub struct TextWriter<'a> {
    out: &'a mut String,
}

impl<'a> TextWriter<'a> {
    pub fn new(out: &'a mut String) -> TextWriter<'a> {
        TextWriter { out }
    }

    /// Starts a family: `# HELP` and `# TYPE`.
    pub fn family(&mut self, name: &str, help: &str, kind: MetricType) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One integer sample.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// One floating-point sample.
    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        push_f64(self.out, value);
        self.out.push('\n');
    }

    /// A histogram's buckets, sum and count; recorded values are divided by `divisor` (e.g.
    /// 1e6 to turn recorded microseconds into seconds; division keeps `le` labels exact).
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &HistogramSnapshot,
        divisor: f64,
    ) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let mut le = String::new();
            match h.bounds.get(i) {
                Some(bound) => push_f64(&mut le, *bound as f64 / divisor),
                None => le.push_str("+Inf"),
            }
            self.out.push_str(&bucket);
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        self.out.push(' ');
        push_f64(self.out, h.sum as f64 / divisor);
        self.out.push('\n');
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {cumulative}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_label(self.out, v);
            self.out.push('"');
        }
        self.out.push('}');
    }
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_and_gauge_lines() {
        let mut s = String::new();
        let mut w = TextWriter::new(&mut s);
        w.family("x_total", "Things.\nMore", MetricType::Counter);
        w.sample("x_total", &[], 3);
        w.sample("x_total", &[("reason", "a\"b\\c\nd"), ("shard", "0")], 1);
        w.family("g", "A gauge.", MetricType::Gauge);
        w.sample_f64("g", &[("shard", "1")], 0.25);
        w.sample_f64("g", &[], f64::NAN);
        assert_eq!(
            s,
            "# HELP x_total Things.\\nMore\n# TYPE x_total counter\nx_total 3\n\
             x_total{reason=\"a\\\"b\\\\c\\nd\",shard=\"0\"} 1\n\
             # HELP g A gauge.\n# TYPE g gauge\ng{shard=\"1\"} 0.25\ng NaN\n"
        );
    }

    #[test]
    fn histogram_is_cumulative_and_scaled() {
        static BOUNDS: [u64; 2] = [100, 1000];
        let h = HistogramSnapshot {
            bounds: &BOUNDS,
            counts: vec![2, 3, 1],
            sum: 4200,
        };
        let mut s = String::new();
        let mut w = TextWriter::new(&mut s);
        w.family("lat_seconds", "Latency.", MetricType::Histogram);
        w.histogram("lat_seconds", &[("kind", "room")], &h, 1e6);
        assert_eq!(
            s,
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{kind=\"room\",le=\"0.0001\"} 2\n\
             lat_seconds_bucket{kind=\"room\",le=\"0.001\"} 5\n\
             lat_seconds_bucket{kind=\"room\",le=\"+Inf\"} 6\n\
             lat_seconds_sum{kind=\"room\"} 0.0042\n\
             lat_seconds_count{kind=\"room\"} 6\n"
        );
    }

    #[test]
    fn merge_adds() {
        static BOUNDS: [u64; 1] = [10];
        let mut a = HistogramSnapshot::empty(&BOUNDS);
        let b = HistogramSnapshot {
            bounds: &BOUNDS,
            counts: vec![1, 2],
            sum: 30,
        };
        a.merge(&b);
        a.merge(&b);
        assert_eq!(a.counts, vec![2, 4]);
        assert_eq!(a.sum, 60);
        assert_eq!(a.count(), 6);
    }
}
