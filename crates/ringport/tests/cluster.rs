//! Several gateways over one NATS broker (`--cluster`): pushes, user pushes, broadcasts and
//! client PUBLISHes made on one node reach members on every node; a resume on another node
//! is answered honestly; with the broker gone, local delivery goes on and the drops are
//! counted, and after it returns the nodes subscribe again.
//!
//! Each test starts its own `nats-server` (Debian package; .ci/run installs it) on a free
//! loopback port and in-process gateways on port 0.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::gateway::{metric, test_config, token, Client, TestServer, SECRET, WAIT};
use ringport_proto::{Frame, ResumeOutcome, ResumePoint, Status, StreamName};

/// A nats-server child process, killed on drop.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn bin() -> PathBuf {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
            .expect("nats-server is installed (apt-get install -y nats-server)")
    }

    /// Starts a broker on `port` (a free one when `None`) and waits until it listens.
    fn start(port: Option<u16>) -> Broker {
        let port = port.unwrap_or_else(|| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let child = Command::new(Self::bin())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child, port }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway node of the cluster on `broker`.
fn node(broker: &Broker, id: &str) -> TestServer {
    let mut c = test_config();
    c.auth.secret = Some(SECRET.into());
    c.cluster.servers = Some(broker.url());
    c.cluster.node_id = Some(id.into());
    c.cluster.ping_interval_ms = 200;
    c.cluster.reconnect_max_delay_ms = 200;
    c.cluster.connect_timeout_ms = 500;
    TestServer::start(c)
}

fn scrape(n: &TestServer) -> String {
    n.http("GET", "/metrics", "").body
}

/// A client of `user` on `n` that joined `room`.
fn member(n: &TestServer, user: &str, room: &str) -> Client {
    let mut c = n.welcomed(&token(user, &[room]));
    assert_eq!(c.join(1, room), Status::OK);
    c
}

/// Pushes `payload` through `n`'s HTTP API to `path`; returns the answer body.
fn push(n: &TestServer, path: &str, payload: &str) -> String {
    let r = n.http("POST", path, &format!("{{\"payload\":\"{payload}\"}}"));
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body
}

/// The payloads of the next `n` PUSH frames (PINGs answered), checking offsets increase.
fn pushes(c: &mut Client, n: usize) -> Vec<String> {
    let mut last: Option<(StreamName, u64)> = None;
    (0..n)
        .map(|_| {
            let p = c.push();
            if let Some((s, o)) = &last {
                if *s == p.stream {
                    assert!(p.offset > *o, "offsets increase: {o} then {}", p.offset);
                }
            }
            last = Some((p.stream.clone(), p.offset));
            String::from_utf8(p.payload.to_vec()).unwrap()
        })
        .collect()
}

/// Nothing more arrives on `c` (its PONG comes first).
fn nothing_more(c: &mut Client) {
    let extra = c.until_pong(99);
    assert!(extra.is_empty(), "unexpected frames: {extra:?}");
}

#[test]
fn messages_made_on_any_node_reach_members_on_every_node_once_and_in_order() {
    let broker = Broker::start(None);
    let nodes: Vec<TestServer> = ["a", "b", "c"].iter().map(|id| node(&broker, id)).collect();
    // One member of room "r" per node; user "u" has a connection on b and c.
    let mut members: Vec<Client> = nodes
        .iter()
        .zip(["ua", "u", "u"])
        .map(|(n, user)| member(n, user, "r"))
        .collect();
    // Subscribed: the room, the user and broadcasts (the broker has the SUBs: flushed).
    for (n, want) in nodes.iter().zip([3, 3, 3]) {
        n.wait_metric(&format!("ringport_cluster_subscriptions {want}"));
    }

    for i in 0..20 {
        let answer = push(&nodes[i % 3], "/v1/push/room/r", &format!("m{i}"));
        assert!(!answer.contains("warning"), "{answer}");
    }
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for c in &mut members {
        // Pushes from different nodes may interleave differently per node, but each node
        // delivers every message once, in its offset order.
        let mut got = pushes(c, 20);
        got.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
        assert_eq!(got, want);
    }

    push(&nodes[0], "/v1/push/user/u", "dm");
    push(&nodes[0], "/v1/broadcast", "all");
    assert_eq!(pushes(&mut members[0], 1), ["all"]);
    for c in &mut members[1..] {
        let mut got = pushes(c, 2);
        got.sort();
        assert_eq!(got, ["all", "dm"]);
    }

    // A client PUBLISH on b reaches the members on a and c (and on b itself).
    members[1].publish("r", 1, b"from-b");
    for c in &mut members {
        let got = loop {
            match c.recv() {
                Frame::Push(p) => break p,
                Frame::PublishAck(_) => continue,
                other => panic!("expected PUSH, got {other:?}"),
            }
        };
        assert_eq!(&got.payload[..], b"from-b");
    }
    for c in &mut members {
        nothing_more(c);
    }
    let body = scrape(&nodes[0]);
    assert!(
        metric(&body, "ringport_cluster_forwarded_total") >= 8,
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "ringport_cluster_dropped_total{reason=\"unreachable\"}"
        ),
        0
    );

    // The last member of "r" on c (also user u's only connection there) leaves: c
    // unsubscribes from the room and the user, and keeps broadcasts.
    drop(members.pop());
    nodes[2].wait_metric("ringport_cluster_subscriptions 1");
    nodes[1].wait_metric("ringport_cluster_subscriptions 3");
}

#[test]
fn a_resume_on_another_node_is_answered_epoch_changed_never_a_silent_hole() {
    let broker = Broker::start(None);
    let a = node(&broker, "a");
    let b = node(&broker, "b");
    let tok = token("u", &["r"]);
    let mut on_a = a.client();
    let w = on_a.welcome(&tok);
    assert_eq!(on_a.join(1, "r"), Status::OK);
    let mut keep_b = member(&b, "v", "r");
    a.wait_metric("ringport_cluster_subscriptions 3");
    b.wait_metric("ringport_cluster_subscriptions 3");
    push(&a, "/v1/push/room/r", "one");
    let first = on_a.push();
    assert_eq!(pushes(&mut keep_b, 1), ["one"]);
    drop(on_a);
    push(&a, "/v1/push/room/r", "two");
    assert_eq!(pushes(&mut keep_b, 1), ["two"]);

    // The client lands on b with a's (epoch, offset): b numbers in its own epoch, so it
    // says the position cannot be recovered there.
    let mut on_b = b.client();
    on_b.hello_resume(
        &tok,
        w.session_id,
        vec![ResumePoint {
            stream: StreamName::Room("r".into()),
            epoch: first.epoch,
            last_offset: first.offset,
        }],
    );
    assert!(matches!(on_b.recv(), Frame::Welcome(_)));
    match on_b.recv() {
        Frame::ResumeResult(r) => {
            assert_eq!(r.outcome, ResumeOutcome::EpochChanged, "{r:?}");
            assert_eq!(r.old_epoch, first.epoch);
            assert_ne!(r.new_epoch, first.epoch);
        }
        other => panic!("expected RESUME_RESULT, got {other:?}"),
    }
}

#[test]
fn with_the_broker_gone_local_delivery_goes_on_and_drops_are_counted() {
    let broker = Broker::start(None);
    let port = broker.port;
    let a = node(&broker, "a");
    let b = node(&broker, "b");
    let mut on_a = member(&a, "ua", "r");
    let mut on_b = member(&b, "ub", "r");
    a.wait_metric("ringport_cluster_subscriptions 3");
    b.wait_metric("ringport_cluster_subscriptions 3");
    push(&a, "/v1/push/room/r", "before");
    assert_eq!(pushes(&mut on_a, 1), ["before"]);
    assert_eq!(pushes(&mut on_b, 1), ["before"]);

    // Frozen broker: the nodes notice (unanswered pings) and stop handing it messages;
    // pushes are answered at once and reach local members.
    broker.signal("-STOP");
    a.wait_metric("ringport_cluster_connected{node=\"a\"} 0");
    let started = Instant::now();
    for i in 0..50 {
        let answer = push(&a, "/v1/push/room/r", &format!("s{i}"));
        assert!(
            answer.contains("could not reach the other nodes"),
            "{answer}"
        );
    }
    assert!(
        started.elapsed() < WAIT,
        "pushes were not held up by the broker"
    );
    let got = pushes(&mut on_a, 50);
    assert_eq!(got, (0..50).map(|i| format!("s{i}")).collect::<Vec<_>>());
    let body = scrape(&a);
    assert!(
        metric(
            &body,
            "ringport_cluster_dropped_total{reason=\"unreachable\"}"
        ) >= 50,
        "{body}"
    );
    assert!(metric(&body, "ringport_cluster_disconnects_total") >= 1);

    // Killed and started again on the same port: both nodes reconnect and subscribe again.
    broker.signal("-CONT");
    drop(broker);
    let broker = Broker::start(Some(port));
    a.wait_metric("ringport_cluster_connected{node=\"a\"} 1");
    b.wait_metric("ringport_cluster_connected{node=\"b\"} 1");
    // Re-subscription is the client's: poll with fresh pushes until one crosses.
    let deadline = Instant::now() + WAIT;
    let mut i = 0;
    loop {
        push(&a, "/v1/push/room/r", &format!("after{i}"));
        assert_eq!(pushes(&mut on_a, 1), [format!("after{i}")]);
        let seen = on_b.until_pong(1000 + i);
        if seen.iter().any(
            |f| matches!(f, Frame::Push(p) if p.payload[..] == *format!("after{i}").as_bytes()),
        ) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no push crossed after the broker came back"
        );
        std::thread::sleep(Duration::from_millis(50));
        i += 1;
    }
    drop(broker);
}

#[test]
fn the_cluster_metrics_are_documented() {
    let broker = Broker::start(None);
    let a = node(&broker, "a");
    let body = scrape(&a);
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations.md"
    ))
    .unwrap();
    let mut families = 0;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("# HELP ringport_cluster_") else {
            continue;
        };
        let (name, help) = rest.split_once(' ').unwrap();
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `ringport_cluster_{name}` |")))
            .unwrap_or_else(|| panic!("docs/operations.md lacks ringport_cluster_{name}"));
        assert!(
            row.ends_with(&format!("| {help} |")),
            "HELP of {name}: {row}"
        );
        families += 1;
    }
    assert_eq!(families, 6);
    // A single node has none of them.
    let single = TestServer::start(test_config());
    assert!(!scrape(&single).contains("ringport_cluster_"));
}
