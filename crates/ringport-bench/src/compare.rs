//! `ringport-bench compare`: median ratio and min–max spread over alternating runs, read from
//! the `--json` outputs of `ringport-bench echo` (scripts/bench-echo.sh uses it).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::stats::{median, ratio_spread, RatioSpread};

/// The numbers of one run file that comparisons use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunNumbers {
    pub messages_per_sec: f64,
    pub server_cpu_us_per_message: Option<f64>,
    pub p99_us: f64,
    pub server_rss_bytes_per_connection: Option<f64>,
}

pub fn read_run(path: &Path) -> anyhow::Result<RunNumbers> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let run = &v["runs"][0];
    let num = |v: &serde_json::Value| v.as_f64();
    Ok(RunNumbers {
        messages_per_sec: num(&run["messages_per_sec"]).context("no runs[0].messages_per_sec")?,
        server_cpu_us_per_message: num(&run["server"]["cpu_us_per_message"]),
        p99_us: num(&run["latency"]["p99_us"]).unwrap_or(f64::NAN),
        server_rss_bytes_per_connection: num(&run["server"]["rss_bytes_per_connection"]),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub ours: Vec<RunNumbers>,
    pub baseline: Vec<RunNumbers>,
    pub median_msgs_per_sec: (Option<f64>, Option<f64>),
    pub median_cpu_us_per_message: (Option<f64>, Option<f64>),
    /// ours / baseline messages per second, run i against run i.
    pub throughput_ratio: Option<RatioSpread>,
    /// ours / baseline server CPU per message (below 1: ours uses less CPU per message).
    pub cpu_per_message_ratio: Option<RatioSpread>,
    pub rss_per_connection_ratio: Option<RatioSpread>,
}

fn column(runs: &[RunNumbers], f: impl Fn(&RunNumbers) -> Option<f64>) -> Vec<f64> {
    runs.iter().map(|r| f(r).unwrap_or(f64::NAN)).collect()
}

pub fn compare(ours: Vec<RunNumbers>, baseline: Vec<RunNumbers>) -> Comparison {
    let tput = |r: &RunNumbers| Some(r.messages_per_sec);
    let cpu = |r: &RunNumbers| r.server_cpu_us_per_message;
    let rss = |r: &RunNumbers| r.server_rss_bytes_per_connection;
    Comparison {
        median_msgs_per_sec: (
            median(&column(&ours, tput)),
            median(&column(&baseline, tput)),
        ),
        median_cpu_us_per_message: (median(&column(&ours, cpu)), median(&column(&baseline, cpu))),
        throughput_ratio: ratio_spread(&column(&ours, tput), &column(&baseline, tput)),
        cpu_per_message_ratio: ratio_spread(&column(&ours, cpu), &column(&baseline, cpu)),
        rss_per_connection_ratio: ratio_spread(&column(&ours, rss), &column(&baseline, rss)),
        ours,
        baseline,
    }
}

pub fn human(c: &Comparison, ours: &str, baseline: &str) -> String {
    let mut s = String::new();
    let opt = |v: Option<f64>, p: usize| v.map_or("-".into(), |v| format!("{v:.p$}"));
    let _ = writeln!(
        s,
        "{:<5} {:>14} {:>14} {:>14} {:>14}",
        "run",
        format!("{ours} msg/s"),
        format!("{baseline} msg/s"),
        format!("{ours} us/msg"),
        format!("{baseline} us/msg")
    );
    for (i, (o, b)) in c.ours.iter().zip(&c.baseline).enumerate() {
        let _ = writeln!(
            s,
            "{:<5} {:>14.0} {:>14.0} {:>14} {:>14}",
            i + 1,
            o.messages_per_sec,
            b.messages_per_sec,
            opt(o.server_cpu_us_per_message, 3),
            opt(b.server_cpu_us_per_message, 3)
        );
    }
    let spread = |name: &str, r: &Option<RatioSpread>| match r {
        Some(r) => format!(
            "{name} {ours}/{baseline}: median {:.3} (min {:.3}, max {:.3}, {} pairs)\n",
            r.median, r.min, r.max, r.pairs
        ),
        None => format!("{name} {ours}/{baseline}: no data\n"),
    };
    s += &spread("throughput", &c.throughput_ratio);
    s += &spread("server cpu per message", &c.cpu_per_message_ratio);
    // RSS per connection is left to the JSON: next to an echo load it is mostly noise; the
    // idle-memory script measures it on its own.
    s
}

pub fn run(
    ours: &[PathBuf],
    baseline: &[PathBuf],
    json: bool,
    names: (&str, &str),
) -> anyhow::Result<()> {
    let read = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|p| read_run(p))
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let c = compare(read(ours)?, read(baseline)?);
    if json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print!("{}", human(&c, names.0, names.1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_echo_json_and_compares_pairwise() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, mps: f64, cpu: f64| {
            let p = dir.path().join(name);
            let doc = serde_json::json!({"runs": [{"messages_per_sec": mps, "latency": {"p99_us": 10.0},
                "server": {"cpu_us_per_message": cpu, "rss_bytes_per_connection": null}}]});
            std::fs::write(&p, doc.to_string()).unwrap();
            p
        };
        let ours = [
            write("a1", 300.0, 1.0),
            write("a2", 200.0, 2.0),
            write("a3", 330.0, 1.0),
        ];
        let base = [
            write("b1", 100.0, 2.0),
            write("b2", 100.0, 2.0),
            write("b3", 110.0, 4.0),
        ];
        let read = |p: &[PathBuf]| p.iter().map(|p| read_run(p).unwrap()).collect::<Vec<_>>();
        let c = compare(read(&ours), read(&base));
        let t = c.throughput_ratio.unwrap();
        assert_eq!((t.median, t.min, t.max, t.pairs), (3.0, 2.0, 3.0, 3));
        let cpu = c.cpu_per_message_ratio.unwrap();
        assert_eq!((cpu.median, cpu.min, cpu.max), (0.5, 0.25, 1.0));
        assert!(c.rss_per_connection_ratio.is_none());
        assert_eq!(c.median_msgs_per_sec, (Some(300.0), Some(100.0)));
        assert!(human(&c, "ringport", "tokio").contains("median 3.000"));
    }
}
