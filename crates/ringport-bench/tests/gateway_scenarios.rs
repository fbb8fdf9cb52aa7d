//! Each gateway scenario runs briefly against a real in-process gateway on loopback, and its
//! counters agree with the server's /metrics. A fake gateway that drops every 1000th push
//! offset is reported with exactly that loss.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringport::config::Config;
use ringport::gateway::GatewayPlane;
use ringport::http::AdminServer;
use ringport::serve::DataPlane;
use ringport_bench::gateway::{self, GatewayOptions, Protocol, Scenario, Tokens, Via};
use ringport_proto::{
    Event, Frame, Push, PushClass, Session, SessionConfig, State, Status, StreamName, WelcomeParams,
};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

struct Server {
    plane: Option<GatewayPlane>,
    admin: Option<AdminServer>,
    addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl Server {
    fn start(tweak: impl FnOnce(&mut Config)) -> Server {
        let mut c = Config::default();
        c.server.listen = "127.0.0.1:0".parse().unwrap();
        c.server.workers = 2;
        c.admin.listen = "127.0.0.1:0".parse().unwrap();
        c.engine.recv_buffers = 256;
        c.engine.ring_entries = 1024;
        c.engine.max_connections_per_shard = 2048;
        c.engine.shutdown_timeout_ms = 1_000;
        c.auth.secret = Some(SECRET.into());
        tweak(&mut c);
        c.validate().expect("valid test config");
        let plane = ringport::gateway::start(&c).expect("gateway starts");
        let admin = AdminServer::start(&c.admin, plane.gateway()).expect("admin starts");
        Server {
            addr: plane.local_addr().unwrap(),
            admin_addr: admin.local_addr(),
            plane: Some(plane),
            admin: Some(admin),
        }
    }

    fn metrics(&self) -> String {
        let mut s = TcpStream::connect(self.admin_addr).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    }

    /// Sum of every sample of `family` (all label sets) in /metrics.
    fn metric(&self, family: &str) -> u64 {
        sum_metric(&self.metrics(), family)
    }

    /// Polls until `family` sums to `want` (the data plane publishes counters lazily).
    fn wait_metric(&self, family: &str, want: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(family);
            if v == want || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn sum_metric(body: &str, family: &str) -> u64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(a) = self.admin.take() {
            let _ = a.shutdown();
        }
        if let Some(p) = self.plane.take() {
            p.shutdown();
            let _ = Box::new(p).join();
        }
    }
}

fn opts(scenario: Scenario, target: SocketAddr, admin: SocketAddr) -> GatewayOptions {
    GatewayOptions {
        scenario,
        target,
        admin,
        publish_target: None,
        connections: 40,
        warmup: Duration::from_millis(200),
        duration: Duration::from_millis(1500),
        rooms: 2,
        rooms_per_conn: 1,
        room_prefix: "t-".into(),
        tokens: Tokens::Secret(SECRET.into()),
        sources: Vec::new(),
        threads: 2,
        publish_rate: None,
        size: 64,
        via: Via::Http,
        protocol: Protocol::Ringport,
        server_pid: None,
        softirq_cpu: None,
        progress: false,
        connect_window: 2048,
        tls: None,
    }
}

#[test]
fn fanout_deliveries_match_the_servers_count() {
    let server = Server::start(|_| {});
    let mut o = opts(Scenario::Fanout, server.addr, server.admin_addr);
    o.publish_rate = Some(200.0);
    let r = gateway::run(&o, "test".into()).unwrap();
    let g = &r.gateway;
    assert_eq!(r.run.peak_connections, 40);
    assert!(g.published_accepted > 100, "{g:?}");
    assert_eq!(g.deliveries.members, vec![20, 20]);
    assert_eq!(g.expected, g.published_accepted * 20);
    // HTTP pushes are answered once sequenced, without a recipient count (that needs
    // `?wait=delivered`); the server's own count is compared below, from /metrics.
    assert_eq!(
        g.server_recipients, None,
        "no recipients in a sequenced answer"
    );
    assert_eq!(g.deliveries.unique, g.expected, "{:?}", r.findings);
    assert_eq!(r.lost, Some(0));
    assert_eq!(g.deliveries.duplicates + g.deliveries.late, 0);
    assert_eq!(
        server.wait_metric("ringport_deliveries_total", g.deliveries.unique),
        g.deliveries.unique,
        "bench deliveries == server ringport_deliveries_total"
    );
    assert_eq!(server.metric("ringport_connections_accepted_total"), 40);
    assert!(r.run.latency.samples > 0 && r.run.latency.p99_us > 0.0);
}

#[test]
fn idle_heartbeats_and_handshakes_match_the_servers_frames() {
    let server = Server::start(|c| {
        c.protocol.heartbeat_interval_ms = 200;
        c.protocol.heartbeat_probe_interval_ms = 100;
    });
    let mut o = opts(Scenario::Idle, server.addr, server.admin_addr);
    // A tiny pacing window (2 per shard): every connection still gets through.
    o.connect_window = 4;
    let r = gateway::run(&o, "test".into()).unwrap();
    let c = &r.gateway.counters;
    assert_eq!((c.connects, c.welcomed, c.ready), (40, 40, 40));
    assert_eq!(
        c.connect_window, 4,
        "the window never exceeds --connect-window"
    );
    // The report over time: the bench's own RSS and CPU every second.
    assert!(
        r.run.timeline.iter().all(|s| s.bench_rss_kib > 0),
        "{:?}",
        r.run.timeline
    );
    assert!(gateway::human(&r).contains("ready/s"));
    // 40 connections x ~1.7 s / 0.2 s each.
    assert!(c.pings_sent >= 40 * 5, "{c:?}");
    assert_eq!(c.pings_sent, c.pongs_received);
    assert_eq!(c.server_closes, 0);
    assert_eq!(server.metric("ringport_connections_accepted_total"), 40);
    // Every frame we sent: HELLO + JOIN per connection, our PINGs, PONGs to server PINGs.
    let ours = 2 * 40 + c.pings_sent + c.server_pings;
    let frames_in = server.wait_metric("ringport_frames_total{direction=\"in\"}", ours);
    assert_eq!(
        frames_in, ours,
        "frames the server received == frames the bench sent"
    );
    assert!(r.run.latency.samples > 0, "PING round trips recorded");
}

#[test]
fn churn_handshakes_match_the_servers_accepts() {
    churn_matches_the_server(false);
}

/// `--poisson`: the same number of cycles on average (a Poisson process at 200/s over the
/// 1.7 s run: ~340, standard deviation ~18), all completed.
#[test]
fn churn_at_random_times_matches_the_servers_accepts() {
    churn_matches_the_server(true);
}

fn churn_matches_the_server(poisson: bool) {
    let server = Server::start(|_| {});
    let o = opts(
        Scenario::Churn {
            rate: 200.0,
            poisson,
        },
        server.addr,
        server.admin_addr,
    );
    let r = gateway::run(&o, "test".into()).unwrap();
    let c = &r.gateway.counters;
    assert!(c.churn_cycles >= 250, "{c:?}");
    assert_eq!(c.connects, c.churn_cycles, "every cycle completed: {c:?}");
    assert_eq!(c.handshake_failed, 0);
    assert_eq!(
        server.wait_metric("ringport_connections_accepted_total", c.connects),
        c.connects
    );
    assert_eq!(
        server.wait_metric("ringport_connections_closed_total", c.connects),
        c.connects,
        "every churned connection closed on the server too"
    );
    // The measure phase (1.5 s of 1.7) at 200/s: about 300 handshakes timed.
    assert!(r.run.messages >= 200, "{:?}", r.run.messages);
    assert!(r.run.latency.samples >= 200, "{:?}", r.run.latency);
}

#[test]
fn resume_verifies_every_offset_after_random_disconnects() {
    let server = Server::start(|_| {});
    let mut o = opts(
        Scenario::Resume { rate: 20.0 },
        server.addr,
        server.admin_addr,
    );
    o.publish_rate = Some(100.0);
    let r = gateway::run(&o, "test".into()).unwrap();
    let c = &r.gateway.counters;
    assert!(c.disconnects >= 20, "{c:?}");
    let v = r.gateway.resume.expect("resume verdict");
    assert_eq!(v.duplicates, 0);
    // The gateway keeps history and answers every resume entry.
    assert!(c.resume_answered > 0, "{c:?}");
    assert_eq!(c.resume_unanswered, 0, "{c:?}");
    assert!(v.ok(), "{v:?}");
    assert_eq!(
        server.wait_metric("ringport_connections_accepted_total", c.connects),
        c.connects
    );
}

/// A TLS-only gateway (plaintext refused) with a certificate for `localhost` made here, and
/// the bench's trust in it (`--tls-ca` of that certificate's PEM).
fn tls_server(dir: &std::path::Path) -> (Server, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let server = Server::start(|c| {
        c.tls.cert_file = Some(cert_file.to_str().unwrap().to_owned());
        c.tls.key_file = Some(key_file.to_str().unwrap().to_owned());
        c.tls.allow_plaintext = false;
    });
    (server, cert_file)
}

#[test]
fn fanout_and_resume_over_tls_native_and_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = tls_server(dir.path());
    let target = gateway::tls::TlsTarget::from_ca_file(&ca, "localhost").unwrap();
    let mut handshakes = 0;
    for protocol in [Protocol::Ringport, Protocol::RingportWs] {
        let mut o = opts(Scenario::Fanout, server.addr, server.admin_addr);
        o.protocol = protocol;
        o.publish_rate = Some(200.0);
        o.tls = Some(target.clone());
        let r = gateway::run(&o, "test".into()).unwrap();
        let g = &r.gateway;
        assert!(r.tls && gateway::human(&r).contains("over TLS"));
        assert_eq!(r.run.peak_connections, 40, "{protocol:?} {:?}", r.findings);
        assert_eq!(g.counters.tls_errors, 0, "{:?}", r.findings);
        assert!(g.published_accepted > 100, "{g:?}");
        assert_eq!(
            g.deliveries.unique, g.expected,
            "{protocol:?} {:?}",
            r.findings
        );
        assert_eq!(g.deliveries.duplicates + g.deliveries.late, 0);
        handshakes += 40;
        // The server refuses plaintext: these were TLS handshakes, counted by the server.
        assert_eq!(
            server.wait_metric("ringport_tls_handshakes_total", handshakes),
            handshakes
        );
    }
    // Resume over TLS: every abort is a new TLS transport with the same session.
    let mut o = opts(
        Scenario::Resume { rate: 20.0 },
        server.addr,
        server.admin_addr,
    );
    o.publish_rate = Some(100.0);
    o.tls = Some(target);
    let r = gateway::run(&o, "test".into()).unwrap();
    let c = &r.gateway.counters;
    assert!(c.disconnects >= 20, "{c:?}");
    assert_eq!((c.tls_errors, c.resume_unanswered), (0, 0), "{c:?}");
    assert!(r.gateway.resume.expect("resume verdict").ok());
    assert_eq!(server.metric("ringport_tls_plaintext_refused_total"), 0);
}

#[test]
fn a_certificate_for_another_name_fails_every_tls_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = tls_server(dir.path());
    let mut o = opts(Scenario::Idle, server.addr, server.admin_addr);
    o.tls = Some(gateway::tls::TlsTarget::from_ca_file(&ca, "ringport.example").unwrap());
    o.duration = Duration::from_millis(300);
    let r = gateway::run(&o, "test".into()).unwrap();
    let c = &r.gateway.counters;
    assert_eq!(r.run.peak_connections, 0);
    assert_eq!((c.welcomed, c.tls_errors), (0, 40), "{c:?}");
    assert!(
        r.findings
            .iter()
            .any(|f| f.contains("TLS transports failed")),
        "{:?}",
        r.findings
    );
    // And a file with no certificate in it is refused up front.
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    assert!(
        gateway::tls::TlsTarget::from_ca_file(&dir.path().join("empty.pem"), "localhost").is_err()
    );
}

/// A tiny gateway: WELCOME everyone, JOIN anything, and fan every PUBLISH out to the room's
/// members, except that offsets divisible by 1000 are never sent (but still consumed). The
/// protocol is the server `Session` of `ringport_proto`; only the decisions are the fake's.
fn fake_gateway() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let members: Members = Arc::default();
    let published = Arc::new(AtomicU64::new(0));
    let p = published.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().take(64) {
            let Ok(s) = s else { break };
            let (members, published) = (members.clone(), p.clone());
            std::thread::spawn(move || fake_conn(s, members, published));
        }
    });
    (addr, published)
}

/// One fake connection: its session and a handle on its socket for writing.
type FakeConn = Arc<Mutex<(Session, TcpStream)>>;
type Members = Arc<Mutex<Vec<FakeConn>>>;

/// Writes what the session queued; false once the connection should end.
fn flush(c: &mut (Session, TcpStream)) -> bool {
    while let Some(b) = c.0.poll_transmit() {
        if c.1.write_all(&b).is_err() {
            return false;
        }
    }
    !matches!(c.0.state(), State::Draining | State::Closed)
}

fn fake_conn(mut s: TcpStream, members: Members, published: Arc<AtomicU64>) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let config = Arc::new(SessionConfig {
        max_payload: 1 << 20,
        ..SessionConfig::default()
    });
    let me: FakeConn = Arc::new(Mutex::new((
        Session::new(config, 0),
        s.try_clone().unwrap(),
    )));
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 8192];
    let mut fanout = Vec::new();
    let mut joined = false;
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut c = me.lock().unwrap();
        c.0.handle_input(&mut buf, 0);
        while let Some(ev) = c.0.poll_event() {
            match ev {
                Event::Hello { .. } => {
                    let params = WelcomeParams {
                        session_id: 1,
                        epoch: 1,
                        inbox_tail: 0,
                        broadcast_epoch: 1,
                        broadcast_tail: 0,
                        user: String::new(),
                        server_time_ms: 0,
                    };
                    c.0.accept(params, 0).unwrap();
                }
                Event::Join { req_id, .. } => {
                    c.0.reply_room(req_id, Status::OK, Some((1, 0))).unwrap();
                    joined = true;
                }
                // Published (and acknowledged) below, without this connection's lock.
                Event::Publish { room, seq, payload } => fanout.push((room, seq, payload)),
                _ => {}
            }
        }
        if !flush(&mut c) {
            return;
        }
        drop(c);
        // Lock order: the member list (which also orders offsets), then one connection.
        let mut m = members.lock().unwrap();
        if std::mem::take(&mut joined) {
            m.push(me.clone());
        }
        for (room, seq, payload) in fanout.drain(..) {
            let offset = published.fetch_add(1, Ordering::Relaxed) + 1;
            let mut c = me.lock().unwrap();
            c.0.reply_publish(seq, Status::OK).unwrap();
            flush(&mut c);
            drop(c);
            if offset % 1000 == 0 {
                continue;
            }
            let stream = StreamName::Room(room);
            let push = Frame::Push(Push {
                stream: stream.clone(),
                epoch: 1,
                offset,
                urgent: false,
                payload,
            })
            .to_bytes()
            .unwrap();
            for member in m.iter() {
                let mut other = member.lock().unwrap();
                other
                    .0
                    .offer_push(PushClass::Room, &stream, offset, push.clone());
                flush(&mut other);
            }
        }
    }
}

#[test]
fn a_server_that_drops_one_push_in_a_thousand_is_reported_with_that_loss() {
    let (addr, published) = fake_gateway();
    let mut o = opts(Scenario::Fanout, addr, addr);
    o.connections = 5;
    o.rooms = 1;
    o.via = Via::Publish;
    o.publish_rate = Some(2500.0);
    o.warmup = Duration::ZERO;
    o.duration = Duration::from_millis(1500);
    let r = gateway::run(&o, "test".into()).unwrap();
    let g = &r.gateway;
    let n = published.load(Ordering::Relaxed);
    assert!(n >= 2000, "published {n}");
    assert_eq!(g.published_accepted, n);
    // The publisher is a member too (it joined to publish) but is not one of ours.
    assert_eq!(g.deliveries.members, vec![5]);
    let dropped = n / 1000;
    assert_eq!(g.expected, n * 5);
    assert_eq!(r.lost, Some((dropped * 5) as i64), "{:?}", g.deliveries);
    assert_eq!(g.deliveries.duplicates, 0);
    assert!(g.deliveries.holes <= dropped * 5);
    assert!(g.deliveries.holes >= (dropped.saturating_sub(1)) * 5);
}
