//! The gateway scenarios (`idle`, `fanout`, `churn`, `resume`): simulated clients speaking the
//! native protocol ([`client`]) on the ringport-io engine ([`driver`]), a publisher thread
//! ([`publisher`]), delivery ledgers ([`ledger`]) and stamped payloads ([`payload`]). For
//! side-by-side runs the same load can drive Redis pub/sub ([`redis`]) or NATS core
//! ([`nats`]) instead ([`subscriber`]: `--protocol`).
//!
//! What `messages` and `latency` mean in the shared [`RunResult`] depends on the scenario:
//! idle — heartbeats answered and PING round trips; fanout and resume — distinct deliveries
//! and publish → receive time; churn — completed connect/HELLO/JOIN cycles and their time.

pub mod client;
pub mod counters;
pub mod driver;
pub mod ledger;
pub mod nats;
pub mod payload;
pub mod publisher;
pub mod redis;
pub mod subscriber;
pub mod tls;
pub mod tokens;
pub mod ws;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

pub use driver::{GwOutcome, Scenario};
pub use publisher::Via;
pub use subscriber::Protocol;
pub use tokens::Tokens;

use crate::measure::{self, RunPlan, RunResult};

#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub scenario: Scenario,
    /// The server behind `target`: ringport, or Redis/NATS for a comparison.
    pub protocol: Protocol,
    pub target: SocketAddr,
    pub admin: SocketAddr,
    /// Where a protocol publisher connects when not `target` (another node of a cluster).
    pub publish_target: Option<SocketAddr>,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub rooms: usize,
    pub rooms_per_conn: usize,
    pub room_prefix: String,
    pub tokens: Tokens,
    pub sources: Vec<IpAddr>,
    pub threads: usize,
    /// Publisher rate in messages per second (fanout, resume); None = no publisher.
    pub publish_rate: Option<f64>,
    pub size: usize,
    pub via: Via,
    pub server_pid: Option<u32>,
    /// See [`RunPlan::softirq_cpu`].
    pub softirq_cpu: Option<usize>,
    pub progress: bool,
    /// Most connections between connect and ready at once (`crate::pacer`).
    pub connect_window: usize,
    /// `--tls`: the subscribers (and the idle/churn/resume clients) speak TLS to `target`.
    pub tls: Option<tls::TlsTarget>,
}

/// One gateway run: the shared measurements and the gateway's own counters and verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayReport {
    pub command: String,
    pub scenario: String,
    /// The server driven: `ringport`, `ringport-ws`, `redis` or `nats`.
    pub protocol: String,
    /// The subscribers spoke TLS (`--tls`).
    pub tls: bool,
    /// How messages were published: `http`, `client` (ringport), `redis`, `nats`.
    pub publisher: String,
    pub run: RunResult,
    pub gateway: GwOutcome,
    /// expected - distinct deliveries (fanout, resume); negative means more than expected.
    pub lost: Option<i64>,
    pub loss_ratio: Option<f64>,
    /// Plain statements about what went wrong or could not be checked.
    pub findings: Vec<String>,
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Idle => "idle",
        Scenario::Fanout => "fanout",
        Scenario::Churn { .. } => "churn",
        Scenario::Resume { .. } => "resume",
    }
}

/// Where the publisher connects: the admin API for HTTP, else `publish_target` (another
/// node of a cluster) or the connections' own `target`.
fn publisher_addr(
    via: Via,
    target: SocketAddr,
    admin: SocketAddr,
    publish_target: Option<SocketAddr>,
) -> SocketAddr {
    match via {
        Via::Http | Via::Batch => admin,
        Via::Publish | Via::Redis | Via::Nats => publish_target.unwrap_or(target),
    }
}

/// Runs one scenario end to end.
pub fn run(opts: &GatewayOptions, command: String) -> anyhow::Result<GatewayReport> {
    let rooms: Vec<String> = (0..opts.rooms.max(1))
        .map(|i| format!("{}{i}", opts.room_prefix))
        .collect();
    let publisher = opts.publish_rate.map(|rate| publisher::PublisherConfig {
        via: opts.via,
        addr: publisher_addr(opts.via, opts.target, opts.admin, opts.publish_target),
        rooms: rooms.clone(),
        rate,
        size: opts.size,
        token: opts.tokens.for_user(usize::MAX),
        max_duration: opts.warmup + opts.duration + Duration::from_secs(5),
    });
    let churn = matches!(opts.scenario, Scenario::Churn { .. });
    let cfg = driver::GwConfig {
        target: opts.target,
        connections: if churn { 0 } else { opts.connections },
        rooms,
        rooms_per_conn: opts.rooms_per_conn,
        tokens: opts.tokens.clone(),
        sources: opts.sources.clone(),
        threads: opts.threads.max(1),
        scenario: opts.scenario,
        protocol: opts.protocol,
        publisher,
        table_cap: crate::echo::engine_client::table_cap(),
        connect_window: opts.connect_window,
        tls: opts.tls.clone(),
    };
    let load = driver::GwLoad::new(cfg)?;
    let outcome = load.outcome.clone();
    let plan = RunPlan {
        connections: if churn { 0 } else { opts.connections },
        warmup: opts.warmup,
        duration: opts.duration,
        connect_timeout: crate::echo::connect_timeout(opts.connections),
        server_pid: opts.server_pid,
        softirq_cpu: opts.softirq_cpu,
        progress: opts.progress,
        label: scenario_name(opts.scenario).into(),
    };
    let run = measure::run_load(&plan, Box::new(load))
        .with_context(|| format!("{} against {}", plan.label, opts.target))?;
    let gateway = outcome.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut report = GatewayReport {
        command,
        scenario: plan.label.clone(),
        protocol: opts.protocol.name().into(),
        tls: opts.tls.is_some(),
        publisher: opts.via.name().into(),
        lost: None,
        loss_ratio: None,
        findings: Vec::new(),
        run,
        gateway,
    };
    findings(opts, &mut report);
    Ok(report)
}

fn findings(opts: &GatewayOptions, r: &mut GatewayReport) {
    let g = &r.gateway;
    let c = &g.counters;
    let mut f = Vec::new();
    if opts.publish_rate.is_some() {
        let lost = g.expected as i64 - g.deliveries.unique as i64;
        r.lost = Some(lost);
        r.loss_ratio = (g.expected > 0).then(|| lost as f64 / g.expected as f64);
        if g.published_rejected > 0 {
            f.push(format!(
                "the server refused {} of {} publishes",
                g.published_rejected, g.published_sent
            ));
        }
        if g.publisher_max_lag_ms > 100.0 {
            f.push(format!(
                "the publisher could not keep {} msg/s: a publish went out up to {:.0} ms late \
                 (the server took requests slower than offered; latency includes that wait)",
                g.publish_rate, g.publisher_max_lag_ms
            ));
        }
        if let Some(e) = &g.publisher_error {
            f.push(format!("publisher error: {e}"));
        }
    }
    if c.handshake_failed > 0 {
        f.push(format!(
            "{} connections closed before WELCOME/ROOM_RESULT",
            c.handshake_failed
        ));
    }
    if c.join_refused > 0 {
        f.push(format!("{} JOINs refused", c.join_refused));
    }
    if c.tls_errors > 0 {
        f.push(format!(
            "{} TLS transports failed (handshake refused, bad record or close_notify)",
            c.tls_errors
        ));
    }
    if c.protocol_errors > 0 {
        f.push(format!("{} undecodable server streams", c.protocol_errors));
    }
    if let Scenario::Resume { .. } = opts.scenario {
        let asked = c.resume_answered + c.resume_unanswered;
        if c.resume_unanswered > 0 {
            f.push(format!(
                "server did not answer resume: {} of {} resume entries got no RESUME_RESULT; \
                 offsets missed while disconnected count as unreported loss",
                c.resume_unanswered, asked
            ));
        }
        if let Some(v) = &g.resume {
            f.push(if v.ok() {
                "resume check passed: every offset arrived exactly once or was reported NOT_RECOVERED".into()
            } else {
                format!(
                    "resume check FAILED: {} offsets silently lost, {} duplicates, {} reported lost but delivered",
                    v.unreported_missing, v.duplicates, v.reported_but_delivered
                )
            });
        }
    }
    r.findings = f;
}

/// One row per sampled second: connect rate, ready connections, RSS and CPU of both sides.
pub fn timeline_table(run: &RunResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>7} {:>8} {:>9} {:>10} {:>8} {:>12} {:>10} {:>12} {:>10}",
        "t s",
        "phase",
        "ready",
        "ready/s",
        "failed",
        "bench MiB",
        "bench %",
        "server MiB",
        "server %"
    );
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
    for x in &run.timeline {
        let phase = match x.phase {
            measure::Phase::Connect => "connect",
            measure::Phase::Warmup => "warmup",
            measure::Phase::Measure => "measure",
        };
        let _ = writeln!(
            s,
            "{:>7.1} {:>8} {:>9} {:>10.0} {:>8} {:>12.1} {:>10.1} {:>12} {:>10}",
            x.t,
            phase,
            x.connections,
            x.opened_per_sec,
            x.connect_failed,
            x.bench_rss_kib as f64 / 1024.0,
            x.bench_cpu_pct,
            opt(x.server_rss_kib.map(|k| k as f64 / 1024.0), 1),
            opt(x.server_cpu_pct, 1),
        );
    }
    s
}

/// The human-readable summary.
pub fn human(r: &GatewayReport) -> String {
    let run = &r.run;
    let g = &r.gateway;
    let c = &g.counters;
    let l = &run.latency;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "scenario            {} ({}{}, publisher {})",
        r.scenario,
        r.protocol,
        if r.tls { " over TLS" } else { "" },
        r.publisher
    );
    let _ = writeln!(
        s,
        "connections         peak {} ready, {} connects, {} connect failures {:?}",
        run.peak_connections, c.connects, run.connect_failed, run.connect_errors
    );
    let _ = writeln!(
        s,
        "measured            {:.2} s (connect phase {:.2} s)",
        run.measured_secs, run.connect_secs
    );
    let what = match r.scenario.as_str() {
        "idle" => "heartbeat round trips",
        "churn" => "handshakes (connect → WELCOME → ROOM_RESULT)",
        _ => "deliveries (publish → receive)",
    };
    let _ = writeln!(
        s,
        "{what}: {} ({:.0}/s)",
        run.messages, run.messages_per_sec
    );
    let _ = writeln!(
        s,
        "latency us          p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
        l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
    );
    let _ = writeln!(
        s,
        "heartbeats          {} PINGs sent, {} PONGs back, {} server PINGs answered",
        c.pings_sent, c.pongs_received, c.server_pings
    );
    if g.published_sent > 0 {
        let _ = writeln!(
            s,
            "published           {} sent, {} accepted, server-reported recipients {}",
            g.published_sent,
            g.published_accepted,
            g.server_recipients.map_or_else(
                || "n/a (answers carry no count)".to_owned(),
                |n| n.to_string()
            )
        );
        let d = &g.deliveries;
        let _ = writeln!(
            s,
            "deliveries          {} distinct of {} expected; lost {} ({:.4}%); duplicates {}; out of order {}; holes {}",
            d.unique,
            g.expected,
            r.lost.unwrap_or(0),
            r.loss_ratio.unwrap_or(0.0) * 100.0,
            d.duplicates,
            d.late,
            d.holes
        );
    }
    if c.disconnects > 0 || c.resume_answered + c.resume_unanswered > 0 {
        let _ = writeln!(
            s,
            "resume              {} induced disconnects, {} answered, {} unanswered",
            c.disconnects, c.resume_answered, c.resume_unanswered
        );
    }
    let _ = writeln!(s, "bench CPU           {:.2} s", run.bench_cpu_secs);
    if c.window_cuts > 0 || r.scenario == "idle" {
        let _ = writeln!(
            s,
            "connect pacing      window {} at the end, cut {} times (slow or failed handshakes)",
            c.connect_window, c.window_cuts
        );
    }
    if r.scenario == "idle" {
        s.push_str(&timeline_table(run));
    }
    if let Some(sv) = &run.server {
        let _ = writeln!(
            s,
            "server CPU          {:.2} s ({} us per {})",
            sv.cpu_secs,
            sv.cpu_us_per_message
                .map_or("-".into(), |v| format!("{v:.2}")),
            if r.scenario == "idle" {
                "heartbeat"
            } else {
                "message"
            }
        );
        let _ = writeln!(
            s,
            "server RSS          {} KiB before, {} KiB after, {} bytes per connection",
            sv.rss_before_kib,
            sv.rss_after_kib,
            sv.rss_bytes_per_connection
                .map_or("-".into(), |v| format!("{v:.0}"))
        );
    }
    for f in &r.findings {
        let _ = writeln!(s, "note: {f}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_protocol_publisher_connects_to_the_publish_target_when_given() {
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let (target, admin, other) = (addr(1), addr(2), addr(3));
        assert_eq!(publisher_addr(Via::Publish, target, admin, None), target);
        assert_eq!(
            publisher_addr(Via::Publish, target, admin, Some(other)),
            other
        );
        assert_eq!(publisher_addr(Via::Nats, target, admin, Some(other)), other);
        // The HTTP publishers always go to the admin API they were given.
        assert_eq!(publisher_addr(Via::Http, target, admin, Some(other)), admin);
        assert_eq!(publisher_addr(Via::Batch, target, admin, None), admin);
    }
}
