//! Starts the tokio-echo baseline on port 0 and runs the echo measurement against it for about
//! a second, bounded in connections and time, on loopback only.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ringport_bench::echo::{tokio_client::TokioEcho, EchoConfig};
use ringport_bench::measure::{run_load, LoadDriver, Phase, RunPlan};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tokio_echo() -> (Server, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokio-echo"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tokio-echo");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("`listening on ADDR` on stdout line 1")
        .parse()
        .unwrap();
    (Server(child), addr)
}

fn config(target: std::net::SocketAddr) -> EchoConfig {
    EchoConfig {
        target,
        connections: 8,
        size: 512,
        depth: 2,
        rate: None,
        sources: vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()],
        threads: 1,
        idle: false,
    }
}

fn plan(pid: u32) -> RunPlan {
    RunPlan {
        connections: 8,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(5),
        server_pid: Some(pid),
        softirq_cpu: Some(0),
        progress: false,
        label: "tokio".into(),
    }
}

fn check(driver: Box<dyn LoadDriver>, pid: u32) {
    let r = run_load(&plan(pid), driver).expect("run");
    assert_eq!(r.peak_connections, 8);
    assert_eq!(r.connect_failed, 0);
    assert_eq!(r.mismatches, 0, "echoed bytes must match");
    assert_eq!(r.closed_unexpectedly, 0);
    assert!(r.messages > 100, "only {} messages in a second", r.messages);
    assert!(r.latency.samples >= r.messages);
    assert!(r.latency.p50_us > 0.0 && r.latency.p50_us <= r.latency.p99_us);
    assert!(r.latency.p99_us <= r.latency.max_us);
    assert!(r.timeline.iter().any(|s| s.phase == Phase::Measure));
    let server = r.server.expect("server usage from /proc");
    assert!(server.rss_after_kib > 0);
    assert!(server.cpu_us_per_message.is_some());
    assert!(
        server.softirq_cpu_secs.is_some_and(|s| s >= 0.0),
        "ksoftirqd/0 sampled"
    );
}

#[test]
fn tokio_client_measures_tokio_echo() {
    let (server, addr) = start_tokio_echo();
    let driver = TokioEcho::new(config(addr)).unwrap();
    check(Box::new(driver), server.0.id());
}

#[test]
fn open_loop_run_sends_at_the_requested_rate() {
    let (server, addr) = start_tokio_echo();
    let cfg = EchoConfig {
        rate: Some(800.0),
        ..config(addr)
    };
    let r = run_load(&plan(server.0.id()), Box::new(TokioEcho::new(cfg).unwrap())).unwrap();
    assert_eq!(r.mismatches, 0);
    // 800/s for ~1 s of measurement: allow scheduling slack on a busy machine.
    assert!(
        (500.0..=1100.0).contains(&r.messages_per_sec),
        "{} msgs/s at --rate 800",
        r.messages_per_sec
    );
}

#[cfg(feature = "engine")]
#[test]
fn engine_client_measures_tokio_echo() {
    let (server, addr) = start_tokio_echo();
    let driver = ringport_bench::echo::engine_client::EngineEcho::new(config(addr)).unwrap();
    check(Box::new(driver), server.0.id());
}
