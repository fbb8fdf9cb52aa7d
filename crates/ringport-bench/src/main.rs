//! ringport-bench: load generator and client simulator for ringport.
//!
//! Every load is bounded in connections and time and aimed at loopback only.
#![forbid(unsafe_code)]

mod cli;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use ringport_bench::{baseline, compare, echo, fonts, measure, report, stats};

use cli::{
    Baseline, Cli, ClientTransport, Command, CommonArgs, EchoArgs, GatewayArgs, ProtocolArg, ViaArg,
};
use echo::EchoConfig;
use measure::{LoadDriver, RunPlan, RunResult};
use report::{Comparison, Report};
use ringport_bench::gateway::{self, GatewayOptions, Protocol, Scenario, Tokens, Via};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Echo(args) => run_echo(args),
        Command::Compare(a) => compare::run(
            &a.ours,
            &a.baseline,
            a.json,
            (&a.ours_name, &a.baseline_name),
        ),
        Command::Idle(a) => run_gateway(GwKind::Idle, a),
        Command::Fanout(a) => run_gateway(GwKind::Fanout, a),
        Command::Churn(a) => run_gateway(GwKind::Churn, a),
        Command::Resume(a) => run_gateway(GwKind::Resume, a),
        Command::Attack(a) => run_attack(a),
    };
    if let Err(e) = result {
        eprintln!("ringport-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run_attack(a: cli::AttackArgs) -> anyhow::Result<()> {
    use ringport_bench::attack;
    if !(a.duration > 0.0 && a.duration <= 600.0) {
        bail!("--duration must be in (0, 600] s");
    }
    let opts = attack::AttackOptions {
        kind: a.kind,
        target: a.target,
        admin: a.admin,
        tokens: a.secret.map_or(Tokens::Anonymous, Tokens::Secret),
        first_user: a.first_user,
        sources: echo::parse_source_addrs(&a.source_addrs).map_err(anyhow::Error::msg)?,
        duration: Duration::from_secs_f64(a.duration),
        connections: a.connections as usize,
        room: a.room,
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = attack::run(&opts, command)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", attack::human(&report));
    }
    Ok(())
}

fn check_loopback(common: &CommonArgs) -> anyhow::Result<()> {
    if !common.target.ip().is_loopback() {
        bail!(
            "--target {} is not on loopback: the bench only loads 127.0.0.0/8 and ::1",
            common.target
        );
    }
    let duration_ok = common.duration > 0.0 && common.duration <= 3600.0;
    if !duration_ok || !(0.0..=600.0).contains(&common.warmup) {
        bail!("--duration must be in (0, 3600] s and --warmup in [0, 600] s");
    }
    if common.connections == 0 || common.connections > 1_000_000 {
        bail!("--connections must be in 1..=1000000");
    }
    Ok(())
}

/// `--source-addrs`, or as many 127.0.0.0/8 addresses as `--connections` needs (said on
/// stderr).
fn source_plan(common: &CommonArgs) -> anyhow::Result<Vec<std::net::IpAddr>> {
    let explicit = match &common.source_addrs {
        Some(spec) => echo::parse_source_addrs(spec).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    let given = !explicit.is_empty();
    let per = ringport_bench::sources::per_address(ringport_bench::sources::ephemeral_ports());
    let plan = ringport_bench::sources::plan(common.connections, explicit, per)
        .map_err(anyhow::Error::msg)?;
    if !given && !plan.is_empty() {
        eprintln!(
            "ringport-bench: {} connections need more than one source address ({per} each): \
             binding them round robin to {}-{}",
            common.connections,
            plan[0],
            plan[plan.len() - 1]
        );
    }
    Ok(plan)
}

fn run_echo(args: EchoArgs) -> anyhow::Result<()> {
    let common = &args.common;
    check_loopback(common)?;
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("--rate must be a positive number of messages per second");
        }
    }
    let sources = source_plan(common)?;
    let cfg = EchoConfig {
        target: common.target,
        connections: common.connections,
        size: args.size as usize,
        depth: args.depth as usize,
        rate: args.rate,
        sources,
        threads: common.threads.max(1),
        idle: args.idle,
    };
    let progress = !common.json && std::io::stderr().is_terminal();
    let plan = |label: &str, pid: Option<u32>| RunPlan {
        connections: cfg.connections,
        warmup: Duration::from_secs_f64(common.warmup),
        duration: Duration::from_secs_f64(common.duration),
        connect_timeout: echo::connect_timeout(cfg.connections),
        server_pid: pid,
        softirq_cpu: args.softirq_cpu,
        progress,
        label: label.to_string(),
    };
    let mut runs = vec![echo_run(
        &cfg,
        args.client,
        &plan("target", args.server_pid),
        common.target,
    )?];
    let mut comparison = None;
    if args.baseline == Some(Baseline::Tokio) {
        let server = baseline::start_tokio_echo(args.server_cpu)?;
        let base = echo_run(
            &cfg,
            args.client,
            &plan("tokio", Some(server.pid())),
            server.addr,
        )?;
        drop(server);
        comparison = Some(compare(&runs[0], &base));
        runs.push(base);
    }
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        runs,
        comparison,
    };
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report::human_table(&report));
    }
    if let Some(dir) = &common.report {
        let files = report::write_report_dir(&report, dir)?;
        if fonts::load_font().is_none() {
            eprintln!("note: charts drawn without text ({})", fonts::SEARCHED);
        }
        if !common.json {
            for f in files {
                println!("wrote {}", f.display());
            }
        }
    }
    let bad: u64 = report.runs.iter().map(|r| r.mismatches).sum();
    if bad > 0 {
        bail!("{bad} connection(s) got back bytes that differ from what was sent");
    }
    Ok(())
}

fn echo_run(
    cfg: &EchoConfig,
    client: ClientTransport,
    plan: &RunPlan,
    target: SocketAddr,
) -> anyhow::Result<RunResult> {
    let cfg = EchoConfig {
        target,
        ..cfg.clone()
    };
    let driver: Box<dyn LoadDriver> = match client {
        ClientTransport::Tokio => Box::new(echo::tokio_client::TokioEcho::new(cfg)?),
        #[cfg(feature = "engine")]
        ClientTransport::Engine => Box::new(echo::engine_client::EngineEcho::new(cfg)?),
        #[cfg(not(feature = "engine"))]
        ClientTransport::Engine => bail!(
            "--client engine: this build has no ringport-io client (the engine has not landed; \
             build with --features engine once it has), use --client tokio"
        ),
    };
    measure::run_load(plan, driver)
        .with_context(|| format!("run {:?} against {target}", plan.label))
}

fn compare(target: &RunResult, base: &RunResult) -> Comparison {
    let cpu = |r: &RunResult| r.server.as_ref().and_then(|s| s.cpu_us_per_message);
    Comparison {
        baseline: base.label.clone(),
        throughput_ratio: stats::ratio(target.messages_per_sec, base.messages_per_sec),
        cpu_per_message_ratio: cpu(target)
            .zip(cpu(base))
            .and_then(|(a, b)| stats::ratio(a, b)),
        p99_ratio: stats::ratio(target.latency.p99_us, base.latency.p99_us),
        spread: None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GwKind {
    Idle,
    Fanout,
    Churn,
    Resume,
}

fn run_gateway(kind: GwKind, a: GatewayArgs) -> anyhow::Result<()> {
    let common = &a.common;
    check_loopback(common)?;
    if !a.admin.ip().is_loopback() {
        bail!("--admin {} is not on loopback", a.admin);
    }
    if let Some(p) = a.publish_target.filter(|p| !p.ip().is_loopback()) {
        bail!("--publish-target {p} is not on loopback");
    }
    let rate_ok = |r: f64| r > 0.0 && r.is_finite() && r <= 10_000_000.0;
    let scenario = match kind {
        GwKind::Idle => Scenario::Idle,
        GwKind::Fanout => Scenario::Fanout,
        GwKind::Churn => {
            let rate = a
                .rate
                .context("churn needs --rate (connections per second)")?;
            Scenario::Churn {
                rate,
                poisson: a.poisson,
            }
        }
        GwKind::Resume => Scenario::Resume {
            rate: a.disconnect_rate,
        },
    };
    if let Some(r) = a.rate {
        if !rate_ok(r) {
            bail!("--rate must be a positive number");
        }
    }
    if !rate_ok(a.disconnect_rate) {
        bail!("--disconnect-rate must be a positive number");
    }
    if a.rooms == 0 || a.rooms > 100_000 {
        bail!("--rooms must be in 1..=100000");
    }
    if a.rooms_per_conn == 0 && !matches!(kind, GwKind::Idle | GwKind::Churn) {
        bail!("--rooms-per-conn 0 (no JOIN) only makes sense for idle and churn");
    }
    if !(gateway::payload::MIN_SIZE..=1 << 20).contains(&a.size) {
        bail!("--size must be in 32..=1048576");
    }
    let publish_rate = match kind {
        GwKind::Fanout | GwKind::Resume => Some(a.rate.unwrap_or(10.0)),
        GwKind::Idle => a.rate,
        GwKind::Churn => None,
    };
    let ours = |p: Protocol| match a.publisher {
        None | Some(ViaArg::Http) => (p, Via::Http),
        Some(ViaArg::Batch) => (p, Via::Batch),
        Some(ViaArg::Client) => (p, Via::Publish),
    };
    let (protocol, via) = match (a.protocol, a.publisher) {
        (ProtocolArg::Ringport, _) => ours(Protocol::Ringport),
        (ProtocolArg::RingportWs, _) => ours(Protocol::RingportWs),
        (ProtocolArg::Redis, None) => (Protocol::Redis, Via::Redis),
        (ProtocolArg::Nats, None) => (Protocol::Nats, Via::Nats),
        (_, Some(_)) => bail!("--publisher applies to --protocol ringport|ringport-ws only"),
    };
    if a.tls && !protocol.is_ringport() {
        bail!("--tls applies to --protocol ringport|ringport-ws only");
    }
    if a.tls && via == Via::Publish {
        bail!("--tls with --publisher client: the publisher has no TLS client; use http or batch");
    }
    let tls = match &a.tls_ca {
        Some(ca) if a.tls => Some(gateway::tls::TlsTarget::from_ca_file(
            ca,
            &a.tls_server_name,
        )?),
        _ => None,
    };
    if !protocol.is_ringport() && kind == GwKind::Resume {
        bail!("resume needs ringport's offsets: --protocol redis|nats runs idle, fanout and churn");
    }
    let tokens = match (&a.token, &a.secret) {
        (Some(t), _) => Tokens::Fixed(t.clone().into_bytes()),
        (None, Some(s)) => Tokens::Secret(s.clone()),
        (None, None) => Tokens::Anonymous,
    };
    let sources = source_plan(common)?;
    let opts = GatewayOptions {
        scenario,
        target: common.target,
        admin: a.admin,
        publish_target: a.publish_target,
        connections: common.connections,
        warmup: Duration::from_secs_f64(common.warmup),
        duration: Duration::from_secs_f64(common.duration),
        rooms: a.rooms,
        rooms_per_conn: a.rooms_per_conn,
        room_prefix: a.room_prefix.clone(),
        tokens,
        sources,
        threads: common.threads,
        publish_rate,
        size: a.size,
        via,
        protocol,
        server_pid: match (a.server_pid, kind) {
            (Some(pid), _) => Some(pid),
            // idle reports the server's RSS and CPU over time: find it from the port.
            (None, GwKind::Idle) => {
                let found = ringport_bench::procfs::pid_listening_on(common.target.port());
                if let Some(pid) = found {
                    eprintln!(
                        "ringport-bench: server pid {pid} (listening on port {})",
                        common.target.port()
                    );
                }
                found
            }
            (None, _) => None,
        },
        softirq_cpu: a.softirq_cpu,
        progress: !common.json && std::io::stderr().is_terminal(),
        connect_window: a.connect_window as usize,
        tls,
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = gateway::run(&opts, command)?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", gateway::human(&report));
    }
    if let Some(dir) = &common.report {
        let files = report::write_gateway_report_dir(&report, dir)?;
        if !common.json {
            for f in files {
                println!("wrote {}", f.display());
            }
        }
    }
    Ok(())
}
