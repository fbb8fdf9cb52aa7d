//! `fanout --protocol redis|nats` against real servers: a redis-server and a nats-server
//! started here on free loopback ports (installed by `.ci/run` with apt-get). A missing server
//! binary fails the test: the comparison must not silently stop being checked.
//!
//! Each run is short and bounded (1.5 s of load, the bench's own settle limit after it); the
//! checks are counts, not timings: every published message reaches every subscriber of its
//! room exactly once, in order, and the publisher's and the server's counts agree.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringport_bench::gateway::{
    self, GatewayOptions, GatewayReport, Protocol, Scenario, Tokens, Via,
};

/// A server process, killed when dropped.
struct ServerProc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary, from PATH or Debian's /usr/sbin (where nats-server goes).
fn find(bin: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{bin} is not installed (DEBIAN_FRONTEND=noninteractive apt-get install -y {bin})"
            )
        })
}

/// A loopback port free now and not handed to another test of this binary. The tests run in
/// parallel, and the kernel may offer a port again once it is released, before the first
/// server binds it. Two servers given one port would let one test drive the other's server.
fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

/// Starts `bin args` with `{port}` replaced by a free port; waits (bounded) until it listens.
fn start(bin: &str, args: &[&str]) -> ServerProc {
    let port = free_port();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{port}", &port.to_string()))
        .collect();
    let child = Command::new(find(bin))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = ServerProc { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        // A server that could not bind exits: say so rather than wait out the deadline.
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("{bin} exited before listening on {addr}: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{bin} did not listen on {addr} in 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn fanout(protocol: Protocol, via: Via, server: &ServerProc) -> GatewayReport {
    let o = GatewayOptions {
        scenario: Scenario::Fanout,
        protocol,
        target: server.addr,
        admin: server.addr,
        publish_target: None,
        connections: 60,
        warmup: Duration::from_millis(300),
        duration: Duration::from_millis(1500),
        rooms: 3,
        rooms_per_conn: 2,
        room_prefix: "cmp-".into(),
        tokens: Tokens::Anonymous,
        sources: Vec::new(),
        threads: 1,
        publish_rate: Some(300.0),
        size: 64,
        via,
        server_pid: Some(server.child.id()),
        softirq_cpu: None,
        progress: false,
        connect_window: 2048,
        tls: None,
    };
    gateway::run(&o, "test".into()).unwrap()
}

/// What both servers must show: all delivered, once, in order, latency recorded.
fn check_complete(r: &GatewayReport) {
    let g = &r.gateway;
    assert_eq!(g.counters.ready, 60, "{r:#?}");
    assert!(g.published_accepted > 100, "{r:#?}");
    assert_eq!(g.published_rejected, 0, "{r:#?}");
    assert_eq!(g.published_accepted, g.published_sent, "{r:#?}");
    // 60 subscribers, 2 of 3 rooms each: 40 members per room.
    assert_eq!(g.deliveries.members, vec![40, 40, 40], "{r:#?}");
    assert_eq!(g.expected, g.published_accepted * 40, "{r:#?}");
    assert_eq!(g.deliveries.unique, g.expected, "{r:#?}");
    assert_eq!(r.lost, Some(0), "{r:#?}");
    assert_eq!(g.deliveries.duplicates, 0, "{r:#?}");
    assert_eq!(g.deliveries.late, 0, "{r:#?}");
    assert_eq!(g.deliveries.holes, 0, "{r:#?}");
    assert_eq!(
        g.counters.protocol_errors + g.counters.server_closes,
        0,
        "{r:#?}"
    );
    assert!(r.run.messages > 0 && r.run.latency.max_us > 0.0, "{r:#?}");
    assert!(r.run.server.is_some(), "server CPU read from /proc: {r:#?}");
    assert!(r.findings.is_empty(), "{:?}", r.findings);
}

#[test]
fn redis_pubsub_delivers_every_message_and_agrees_with_publish_counts() {
    let server = start(
        "redis-server",
        &[
            "--bind",
            "127.0.0.1",
            "--port",
            "{port}",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    );
    let r = fanout(Protocol::Redis, Via::Redis, &server);
    assert_eq!(r.protocol, "redis");
    check_complete(&r);
    // PUBLISH answers with the number of receivers: Redis's count equals ours.
    assert_eq!(
        r.gateway.server_recipients,
        Some(r.gateway.expected),
        "{r:#?}"
    );
}

#[test]
fn nats_core_delivers_every_message() {
    let server = start("nats-server", &["-a", "127.0.0.1", "-p", "{port}"]);
    let r = fanout(Protocol::Nats, Via::Nats, &server);
    assert_eq!(r.protocol, "nats");
    check_complete(&r);
}
