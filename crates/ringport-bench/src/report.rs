//! Output: the human table, the JSON document, and `--report DIR` (summary.md + PNG charts).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use crate::gateway::GatewayReport;
use crate::measure::{Phase, RunResult, Sample};
use crate::stats::RatioSpread;

/// A comparison of the target against a baseline measured in the same invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub baseline: String,
    /// target / baseline messages per second.
    pub throughput_ratio: Option<f64>,
    /// target / baseline server CPU per message (lower is better for the target).
    pub cpu_per_message_ratio: Option<f64>,
    /// target / baseline p99 latency.
    pub p99_ratio: Option<f64>,
    pub spread: Option<RatioSpread>,
}

/// The whole output of one invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    pub runs: Vec<RunResult>,
    pub comparison: Option<Comparison>,
}

pub fn human_table(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<10} {:>7} {:>12} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>10} {:>10}",
        "run",
        "conns",
        "msgs/s",
        "p50 us",
        "p99 us",
        "p999 us",
        "max us",
        "srv us/msg",
        "srv MiB",
        "bench cpu",
        "errors"
    );
    for r in &report.runs {
        let srv_cpu = r
            .server
            .as_ref()
            .and_then(|s| s.cpu_us_per_message)
            .map_or("-".to_string(), |v| format!("{v:.2}"));
        let srv_rss = r.server.as_ref().map_or("-".to_string(), |s| {
            format!("{:.1}", s.rss_after_kib as f64 / 1024.0)
        });
        let _ = writeln!(
            s,
            "{:<10} {:>7} {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10} {:>9} {:>9.2}s {:>10}",
            r.label,
            r.peak_connections,
            r.messages_per_sec,
            r.latency.p50_us,
            r.latency.p99_us,
            r.latency.p999_us,
            r.latency.max_us,
            srv_cpu,
            srv_rss,
            r.bench_cpu_secs,
            r.connect_failed + r.closed_unexpectedly + r.mismatches
        );
        for (cause, n) in &r.connect_errors {
            let _ = writeln!(s, "{:<10} {n} connect(s) failed: {cause}", "");
        }
        if let Some(b) = r.server.as_ref().and_then(|s| s.rss_bytes_per_connection) {
            let _ = writeln!(s, "{:<10} server RSS per connection: {b:.0} bytes", "");
        }
    }
    if let Some(c) = &report.comparison {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        let _ = writeln!(
            s,
            "ratio vs {}: throughput {}  server cpu/msg {}  p99 {}",
            c.baseline,
            f(c.throughput_ratio),
            f(c.cpu_per_message_ratio),
            f(c.p99_ratio)
        );
    }
    s
}

/// Writes `summary.md` and the charts into `dir`; returns the files written.
pub fn write_report_dir(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let font = crate::fonts::load_font();
    let mut written = Vec::new();
    let charts = [
        ("throughput.png", "messages per second", Metric::Throughput),
        ("latency.png", "latency per second (us)", Metric::Latency),
        ("connections.png", "open connections", Metric::Connections),
    ];
    for (file, title, metric) in charts {
        let path = dir.join(file);
        draw_chart(report, &path, title, metric, font.is_some())
            .with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }
    let mut md = String::new();
    let _ = writeln!(md, "# ringport-bench report\n\n`{}`\n", report.command);
    let _ = writeln!(md, "```text\n{}```\n", human_table(report));
    if font.is_none() {
        let _ = writeln!(
            md,
            "Charts have no text: no TrueType font was found ({}).\n",
            crate::fonts::SEARCHED
        );
    }
    for (file, title, _) in charts {
        let _ = writeln!(md, "## {title}\n\n![{title}]({file})\n");
    }
    let _ = writeln!(
        md,
        "## Runs (JSON)\n\n```json\n{}\n```",
        serde_json::to_string_pretty(report)?
    );
    let path = dir.join("summary.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    Ok(written)
}

/// Writes a gateway run's report into `dir` (`--report DIR` of `ringport-bench idle`,
/// `fanout`, ...): `<scenario>.json`, the timeline charts (connections, RSS, CPU) and
/// `summary.md` with the headline numbers ([`gateway_numbers`]), the run's table and the
/// charts. Returns the files written.
pub fn write_gateway_report_dir(r: &GatewayReport, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join(format!("{}.json", r.scenario));
    std::fs::write(&json, serde_json::to_string_pretty(r)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let charts = write_timeline_charts(
        &Report {
            command: r.command.clone(),
            runs: vec![r.run.clone()],
            comparison: None,
        },
        dir,
    )?;
    let mut md = format!(
        "# ringport-bench {}\n\n`{}`\n\n{}\n```text\n{}```\n",
        r.scenario,
        r.command,
        gateway_numbers(r),
        crate::gateway::human(r)
    );
    let mut written = vec![json];
    for (path, title) in charts {
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
        let _ = write!(
            md,
            "\n## {title}\n\n![{title}]({})\n",
            file.unwrap_or_default()
        );
        written.push(path);
    }
    let summary = dir.join("summary.md");
    std::fs::write(&summary, md).with_context(|| format!("writing {}", summary.display()))?;
    written.push(summary);
    Ok(written)
}

/// CPU seconds of one side over `phase`, from the per-second samples (`None`: not sampled).
fn phase_cpu_secs(
    run: &RunResult,
    phase: Phase,
    pct: impl Fn(&Sample) -> Option<f64>,
) -> Option<f64> {
    let mut secs = None;
    let mut prev_t = 0.0;
    for s in &run.timeline {
        let dt = (s.t - prev_t).max(0.0);
        prev_t = s.t;
        if s.phase == phase {
            if let Some(p) = pct(s) {
                *secs.get_or_insert(0.0) += p / 100.0 * dt;
            }
        }
    }
    secs
}

/// The headline numbers of a gateway run as a Markdown table: connections ready, the connect
/// rate, RSS per connection and CPU of the server and the bench, heartbeats and deliveries.
pub fn gateway_numbers(r: &GatewayReport) -> String {
    let run = &r.run;
    let c = &r.gateway.counters;
    let peak = run.peak_connections;
    let per_conn = |kib: f64| {
        if peak > 0 {
            format!("{:.0} bytes per connection", kib * 1024.0 / peak as f64)
        } else {
            "no connection".to_owned()
        }
    };
    let connect_secs = phase_cpu_secs(run, Phase::Connect, |_| Some(100.0)).unwrap_or(0.0);
    let mut md = String::from("| | |\n|---|---|\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(md, "| {k} | {v} |");
    };
    row(
        "ready",
        format!(
            "**{peak}** of {} ({} connect failures, {} unexpected closes)",
            run.connections_requested, run.connect_failed, run.closed_unexpectedly
        ),
    );
    let fastest = run
        .timeline
        .iter()
        .filter(|s| s.phase == Phase::Connect)
        .map(|s| s.opened_per_sec)
        .fold(0.0, f64::max);
    row(
        "connect phase",
        format!(
            "{:.1} s: **{:.0} ready/s** on average, {fastest:.0} in the fastest second",
            run.connect_secs,
            peak as f64 / run.connect_secs.max(1e-9)
        ),
    );
    row(
        "server RSS",
        match &run.server {
            Some(s) => format!(
                "{} KiB before, {} KiB at the end: **{}**",
                s.rss_before_kib,
                s.rss_after_kib,
                per_conn(s.rss_after_kib as f64 - s.rss_before_kib as f64)
            ),
            None => "not measured (no --server-pid)".to_owned(),
        },
    );
    let bench_peak = run
        .timeline
        .iter()
        .map(|s| s.bench_rss_kib)
        .max()
        .unwrap_or(0);
    row(
        "bench RSS",
        format!(
            "{} KiB before, {bench_peak} KiB at most: {}",
            run.bench_rss_before_kib,
            per_conn(bench_peak as f64 - run.bench_rss_before_kib as f64)
        ),
    );
    let cpu = |secs: Option<f64>, over: f64| match secs {
        Some(s) => format!("{s:.1} s ({:.0}% of a core)", s * 100.0 / over.max(1e-9)),
        None => "not sampled".to_owned(),
    };
    let server_measure = run
        .server
        .as_ref()
        .map(|s| s.cpu_secs + s.softirq_cpu_secs.unwrap_or(0.0));
    row(
        "server CPU",
        format!(
            "connect phase {}; measure phase {}{}",
            cpu(
                phase_cpu_secs(run, Phase::Connect, |s| s.server_cpu_pct),
                connect_secs
            ),
            cpu(server_measure, run.measured_secs),
            match run.server.as_ref().and_then(|s| s.softirq_cpu_secs) {
                Some(k) => format!(", ksoftirqd of its core included ({k:.1} s)"),
                None => String::new(),
            }
        ),
    );
    row(
        "bench CPU",
        format!(
            "connect phase {}; measure phase {}",
            cpu(
                phase_cpu_secs(run, Phase::Connect, |s| Some(s.bench_cpu_pct)),
                connect_secs
            ),
            cpu(Some(run.bench_cpu_secs), run.measured_secs)
        ),
    );
    row(
        "heartbeats",
        format!(
            "{} PINGs sent, {} PONGs back",
            c.pings_sent, c.pongs_received
        ),
    );
    row(
        "deliveries",
        if c.pushes > 0 {
            format!(
                "{} pushes received, the last at {} µs (Unix time)",
                c.pushes, c.last_push_unix_us
            )
        } else {
            "none".to_owned()
        },
    );
    md
}

/// The charts of a gateway run's timeline (`--report DIR`): connections ready, RSS and CPU of
/// both sides per second; returns the files written (each with its title).
pub fn write_timeline_charts(
    report: &Report,
    dir: &Path,
) -> anyhow::Result<Vec<(PathBuf, &'static str)>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = crate::fonts::load_font().is_some();
    let mut written = Vec::new();
    for (file, title, metric) in [
        ("connections.png", "ready connections", Metric::Connections),
        ("rss.png", "resident memory (MiB)", Metric::Rss),
        ("cpu.png", "CPU (% of one core)", Metric::Cpu),
    ] {
        let path = dir.join(file);
        draw_chart(report, &path, title, metric, text)
            .with_context(|| format!("drawing {}", path.display()))?;
        written.push((path, title));
    }
    Ok(written)
}

#[derive(Clone, Copy)]
enum Metric {
    Throughput,
    Latency,
    Connections,
    Rss,
    Cpu,
}

fn draw_chart(
    report: &Report,
    path: &Path,
    title: &str,
    metric: Metric,
    text: bool,
) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    // One series per run (and per percentile for latency).
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in &report.runs {
        let pts = |f: &dyn Fn(&crate::measure::Sample) -> f64| -> Vec<(f64, f64)> {
            r.timeline
                .iter()
                .filter(|s| {
                    !matches!(metric, Metric::Latency | Metric::Throughput)
                        || s.phase != Phase::Connect
                })
                .map(|s| (s.t, f(s)))
                .collect()
        };
        match metric {
            Metric::Throughput => series.push((r.label.clone(), pts(&|s| s.messages_per_sec))),
            Metric::Connections => series.push((r.label.clone(), pts(&|s| s.connections as f64))),
            Metric::Rss => {
                series.push((
                    format!("{} bench", r.label),
                    pts(&|s| s.bench_rss_kib as f64 / 1024.0),
                ));
                if r.timeline.iter().any(|s| s.server_rss_kib.is_some()) {
                    series.push((
                        format!("{} server", r.label),
                        pts(&|s| s.server_rss_kib.unwrap_or(0) as f64 / 1024.0),
                    ));
                }
            }
            Metric::Cpu => {
                series.push((format!("{} bench", r.label), pts(&|s| s.bench_cpu_pct)));
                if r.timeline.iter().any(|s| s.server_cpu_pct.is_some()) {
                    series.push((
                        format!("{} server", r.label),
                        pts(&|s| s.server_cpu_pct.unwrap_or(0.0)),
                    ));
                }
            }
            Metric::Latency => {
                series.push((format!("{} p50", r.label), pts(&|s| s.latency.p50_us)));
                series.push((format!("{} p99", r.label), pts(&|s| s.latency.p99_us)));
                series.push((format!("{} p999", r.label), pts(&|s| s.latency.p999_us)));
            }
        }
    }
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = all.map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(80);
    } else {
        builder.x_label_area_size(5).y_label_area_size(5);
    }
    let mut chart = builder.build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    if text {
        chart
            .configure_mesh()
            .x_desc("seconds")
            .label_style(("sans-serif", 14))
            .draw()?;
    } else {
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_y_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()?;
    }
    for (i, (name, pts)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let s = chart.draw_series(LineSeries::new(pts, color.stroke_width(2)))?;
        if text {
            s.label(name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LatencySummary;

    fn run(label: &str) -> RunResult {
        let latency = LatencySummary {
            samples: 10,
            p50_us: 20.0,
            p90_us: 30.0,
            p99_us: 40.0,
            p999_us: 50.0,
            max_us: 60.0,
            mean_us: 22.0,
        };
        let timeline = (0..5)
            .map(|i| Sample {
                t: i as f64,
                phase: if i == 0 {
                    Phase::Connect
                } else {
                    Phase::Measure
                },
                connections: 10,
                opened_per_sec: 0.0,
                connect_failed: 0,
                messages_per_sec: 1000.0 + i as f64,
                mib_per_sec: 0.5,
                latency,
                bench_rss_kib: 1000 + i,
                bench_cpu_pct: 10.0,
                server_rss_kib: Some(2000 + i),
                server_cpu_pct: Some(50.0),
            })
            .collect();
        RunResult {
            label: label.into(),
            connections_requested: 10,
            peak_connections: 10,
            connect_failed: 0,
            connect_errors: Default::default(),
            closed_unexpectedly: 0,
            mismatches: 0,
            connect_secs: 0.1,
            measured_secs: 4.0,
            messages: 4000,
            messages_per_sec: 1000.0,
            bytes_sent: 1,
            bytes_received: 1,
            mib_per_sec_received: 0.5,
            latency,
            bench_cpu_secs: 0.5,
            bench_rss_before_kib: 900,
            server: None,
            timeline,
        }
    }

    #[test]
    fn report_dir_gets_summary_and_three_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let report = Report {
            command: "ringport-bench echo".into(),
            runs: vec![run("target"), run("tokio")],
            comparison: None,
        };
        let files = write_report_dir(&report, dir.path()).unwrap();
        assert_eq!(files.len(), 4);
        for f in &files {
            let len = std::fs::metadata(f).unwrap().len();
            assert!(len > 100, "{} is {len} bytes", f.display());
        }
        let png = std::fs::read(dir.path().join("throughput.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(md.contains("![open connections](connections.png)"));
        assert!(md.contains("\"peak_connections\": 10"));
    }

    #[test]
    fn timeline_charts_are_three_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let report = Report {
            command: "ringport-bench idle".into(),
            runs: vec![run("idle")],
            comparison: None,
        };
        let files = write_timeline_charts(&report, dir.path()).unwrap();
        assert_eq!(files.len(), 3);
        for (f, _) in &files {
            let png = std::fs::read(f).unwrap();
            assert_eq!(&png[1..4], b"PNG", "{}", f.display());
        }
    }

    #[test]
    fn gateway_report_dir_has_the_numbers_and_three_charts() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = GatewayReport {
            command: "ringport-bench idle --connections 10".into(),
            scenario: "idle".into(),
            protocol: "ringport".into(),
            tls: false,
            publisher: "http".into(),
            run: run("idle"),
            gateway: Default::default(),
            lost: None,
            loss_ratio: None,
            findings: Vec::new(),
        };
        r.run.server = Some(crate::measure::ServerUsage {
            pid: 1,
            cpu_secs: 1.5,
            softirq_cpu_secs: Some(0.5),
            cpu_us_per_message: None,
            rss_before_kib: 1000,
            rss_after_kib: 1010,
            rss_bytes_per_connection: Some(1024.0),
        });
        r.gateway.counters.pushes = 10;
        r.gateway.counters.last_push_unix_us = 1_700_000_000_000_000;
        let files = write_gateway_report_dir(&r, dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "idle.json",
                "connections.png",
                "rss.png",
                "cpu.png",
                "summary.md"
            ]
        );
        for f in &files[1..4] {
            assert_eq!(&std::fs::read(f).unwrap()[1..4], b"PNG", "{}", f.display());
        }
        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        // 10 ready in the 0.1 s connect phase; RSS 1000 -> 1010 KiB over 10 connections.
        assert!(
            md.contains("| ready | **10** of 10 (0 connect failures, 0 unexpected closes) |"),
            "{md}"
        );
        assert!(md.contains("**100 ready/s** on average"), "{md}");
        assert!(
            md.contains("1000 KiB before, 1010 KiB at the end: **1024 bytes per connection**"),
            "{md}"
        );
        // The bench: 900 KiB before, at most 1004 KiB (the timeline's last second).
        assert!(
            md.contains("900 KiB before, 1004 KiB at most: 10650 bytes per connection"),
            "{md}"
        );
        // Measure phase: 1.5 s + 0.5 s of ksoftirqd over 4 s; the connect phase is the first
        // sample (t = 0: no time elapsed before it).
        assert!(
            md.contains(
                "measure phase 2.0 s (50% of a core), ksoftirqd of its core included (0.5 s)"
            ),
            "{md}"
        );
        assert!(
            md.contains("10 pushes received, the last at 1700000000000000 µs"),
            "{md}"
        );
        assert!(md.contains("![resident memory (MiB)](rss.png)"));
        assert!(md.contains("![CPU (% of one core)](cpu.png)"));
        assert!(md.contains("scenario            idle"), "the run's table");
    }

    #[test]
    fn table_has_a_row_per_run_and_the_ratios() {
        let report = Report {
            command: String::new(),
            runs: vec![run("target"), run("tokio")],
            comparison: Some(Comparison {
                baseline: "tokio".into(),
                throughput_ratio: Some(1.5),
                cpu_per_message_ratio: None,
                p99_ratio: Some(0.5),
                spread: None,
            }),
        };
        let t = human_table(&report);
        assert_eq!(t.lines().count(), 4);
        assert!(t.contains("throughput 1.500"));
    }
}
