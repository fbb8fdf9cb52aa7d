//! TLS on the client port, against the real gateway with certificates made at test time
//! (`rcgen`): native and WebSocket clients over TLS, the client refusing a wrong name and an
//! expired certificate, the handshake deadline, client certificates, TLS-only ports, the
//! SIGHUP certificate reload and a TLS consumer that stops reading.

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::gateway::{metric, test_config, TestServer, WAIT};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use ringport::config::{ClientAuth, Config};
use ringport_proto::{Frame, Hello, RoomRequest, Status};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate signed by a [`Ca`], with its key.
struct Leaf {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A server certificate for `names`; `expired`: valid 2020 to 2021 only.
    fn server(&self, names: &[&str], expired: bool) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut p = CertificateParams::new(names).unwrap();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        self.sign(p)
    }

    /// A client certificate for device `name`.
    fn client(&self, name: &str) -> Leaf {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(p)
    }

    fn sign(&self, p: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf { cert, key }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

impl Leaf {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.der().clone()]
    }
    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

/// A directory of PEM files for one test, removed on drop.
struct Files(PathBuf);

impl Files {
    fn new(test: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("ringport-tls-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Files(dir)
    }

    /// Writes `leaf` as cert.pem / key.pem.
    fn write(&self, leaf: &Leaf) {
        std::fs::write(self.path("cert.pem"), leaf.cert.pem()).unwrap();
        std::fs::write(self.path("key.pem"), leaf.key.serialize_pem()).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn config(&self) -> Config {
        let mut c = test_config();
        c.tls.cert_file = Some(s(&self.path("cert.pem")));
        c.tls.key_file = Some(s(&self.path("key.pem")));
        c
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn client_config(ca: &Ca, identity: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let b = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        None => b.with_no_client_auth(),
        Some(l) => b.with_client_auth_cert(l.chain(), l.key_der()).unwrap(),
    })
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the TLS handshake, verifying the server as `name`.
fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> Result<Tls, String> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| e.to_string())?;
    }
    Ok(tls)
}

/// The native protocol over any stream.
struct Native<S> {
    stream: S,
    buf: BytesMut,
    decoder: ringport_proto::Decoder,
}

impl<S: Read + Write> Native<S> {
    fn new(stream: S) -> Self {
        Native {
            stream,
            buf: BytesMut::new(),
            decoder: ringport_proto::Decoder::new(16 << 20),
        }
    }

    fn send(&mut self, f: &Frame) {
        self.stream.write_all(&f.to_bytes().unwrap()).unwrap();
        self.stream.flush().unwrap();
    }

    /// The next frame that is not a PING; `None` at end of stream (or an error).
    fn next(&mut self) -> Option<Frame> {
        loop {
            match self.decoder.decode(&mut self.buf).expect("server frame") {
                Some(Frame::Ping { nonce }) => self.send(&Frame::Pong { nonce }),
                Some(f) => return Some(f),
                None => {
                    let mut chunk = [0u8; 16 * 1024];
                    match self.stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    }
                }
            }
        }
    }

    fn recv(&mut self) -> Frame {
        self.next().expect("connection open")
    }

    fn hello(&mut self) -> Frame {
        self.send(&Frame::Hello(Hello {
            token: Bytes::new(),
            client_info: "tls-test/1".into(),
            resume: None,
        }));
        self.recv()
    }

    fn join(&mut self, room: &str) {
        self.send(&Frame::Join(RoomRequest {
            req_id: 1,
            room: room.into(),
        }));
        assert!(matches!(self.recv(), Frame::RoomResult(r) if r.status == Status::OK));
    }
}

fn metrics(server: &TestServer) -> String {
    server.http("GET", "/metrics", "").body
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn push_text(f: Frame) -> Vec<u8> {
    match f {
        Frame::Push(p) => p.payload.to_vec(),
        other => panic!("expected PUSH, got {other:?}"),
    }
}

#[test]
fn native_client_over_tls_exchanges_hello_join_push() {
    let ca = Ca::new("ca");
    let files = Files::new("native");
    files.write(&ca.server(&["localhost"], false));
    let server = TestServer::start(files.config());
    let before = metric(&metrics(&server), "ringport_tls_handshakes_total");

    let tls = tls_connect(server.addr, client_config(&ca, None), "localhost").expect("handshake");
    let mut c = Native::new(tls);
    assert!(matches!(c.hello(), Frame::Welcome(_)));
    c.join("news");
    // A plaintext client on the same port, in the same room.
    let mut plain = server.welcomed("");
    assert_eq!(plain.join(1, "news"), Status::OK);

    for i in 0..3 {
        let r = server.http(
            "POST",
            "/v1/push/room/news",
            &format!(r#"{{"payload":"m{i}"}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for i in 0..3 {
        assert_eq!(push_text(c.recv()), format!("m{i}").into_bytes());
        assert_eq!(push_text(plain.recv()), format!("m{i}").into_bytes());
    }
    // The TLS counters are process-wide: other tests of this binary add to them too.
    let m = metrics(&server);
    assert!(metric(&m, "ringport_tls_handshakes_total") > before);
    assert!(metric(&m, "ringport_tls_connections_open") >= 1);
}

#[test]
fn websocket_client_over_tls_exchanges_hello_join_push() {
    use ringport_ws::{encode_frame, handshake, Decoder, Incoming, OpCode, Role};
    let ca = Ca::new("ca");
    let files = Files::new("wss");
    files.write(&ca.server(&["localhost"], false));
    let server = TestServer::start(files.config());
    let mut tls =
        tls_connect(server.addr, client_config(&ca, None), "localhost").expect("handshake");

    let key = handshake::client_key([3; 16]);
    let req = handshake::client_request(
        "localhost",
        ringport_ws::DEFAULT_PATH,
        ringport_ws::SUBPROTOCOL,
        &key,
    );
    tls.write_all(&req).unwrap();
    let mut buf = BytesMut::new();
    let fill = |tls: &mut Tls, buf: &mut BytesMut| {
        let mut chunk = [0u8; 16 * 1024];
        let n = tls.read(&mut chunk).expect("read");
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    };
    loop {
        match handshake::check_response(&buf, &key, ringport_ws::SUBPROTOCOL, 8192).expect("101") {
            Some(n) => {
                let _ = buf.split_to(n);
                break;
            }
            None => fill(&mut tls, &mut buf),
        }
    }
    let send = |tls: &mut Tls, f: Frame| {
        let mut out = BytesMut::new();
        encode_frame(
            OpCode::Binary,
            true,
            &f.to_bytes().unwrap(),
            Some([1, 2, 3, 4]),
            &mut out,
        );
        tls.write_all(&out).unwrap();
    };
    let mut dec = Decoder::new(Role::Client, 1 << 20);
    let mut recv = |tls: &mut Tls, buf: &mut BytesMut| -> Frame {
        loop {
            match dec.next(buf).expect("valid frames") {
                Some(Incoming::Data { payload, end }) => {
                    assert!(end, "one frame per message");
                    let mut b = BytesMut::from(&payload[..]);
                    let f = ringport_proto::Decoder::new(1 << 20)
                        .decode(&mut b)
                        .unwrap()
                        .unwrap();
                    if !matches!(f, Frame::Ping { .. }) {
                        return f;
                    }
                }
                Some(_) => {}
                None => fill(tls, buf),
            }
        }
    };
    send(
        &mut tls,
        Frame::Hello(Hello {
            token: Bytes::new(),
            client_info: "wss-test/1".into(),
            resume: None,
        }),
    );
    assert!(matches!(recv(&mut tls, &mut buf), Frame::Welcome(_)));
    send(
        &mut tls,
        Frame::Join(RoomRequest {
            req_id: 1,
            room: "live".into(),
        }),
    );
    assert!(matches!(recv(&mut tls, &mut buf), Frame::RoomResult(r) if r.status == Status::OK));
    let r = server.http("POST", "/v1/push/room/live", r#"{"payload":"over wss"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(push_text(recv(&mut tls, &mut buf)), b"over wss");
    assert!(metric(&metrics(&server), "ringport_websocket_connections_open") >= 1);
}

#[test]
fn client_refuses_a_wrong_name_and_an_expired_certificate() {
    let ca = Ca::new("ca");
    let files = Files::new("refuse");
    files.write(&ca.server(&["localhost"], false));
    let server = TestServer::start(files.config());
    let Err(e) = tls_connect(server.addr, client_config(&ca, None), "other.example") else {
        panic!("a certificate for localhost is refused for other.example");
    };
    assert!(
        e.contains("NotValidForName") || e.contains("not valid for name"),
        "{e}"
    );
    // The client's alert ends the connection on the server (counted as a TLS error).
    eventually("the refused handshake to be counted", || {
        metric(
            &metrics(&server),
            "ringport_tls_errors_total{reason=\"protocol\"}",
        ) >= 1
    });
    drop(server);

    let expired = Files::new("expired");
    expired.write(&ca.server(&["localhost"], true));
    let server = TestServer::start(expired.config());
    let Err(e) = tls_connect(server.addr, client_config(&ca, None), "localhost") else {
        panic!("an expired certificate is refused");
    };
    assert!(e.contains("Expired") || e.contains("expired"), "{e}");
    // A certificate from another CA is refused too.
    let other = Ca::new("other");
    assert!(tls_connect(server.addr, client_config(&other, None), "localhost").is_err());
}

#[test]
fn slow_tls_handshake_is_closed_at_the_handshake_deadline() {
    let ca = Ca::new("ca");
    let files = Files::new("slow");
    files.write(&ca.server(&["localhost"], false));
    let mut config = files.config();
    config.protocol.handshake_timeout_ms = 300;
    let server = TestServer::start(config);
    let before = metric(&metrics(&server), "ringport_tls_handshake_timeouts_total");

    // Silent: no byte, so not even known to be TLS; closed at the deadline like any client.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    // A partial ClientHello: a handshake record header announcing 512 bytes, and 5 of them.
    let mut partial = TcpStream::connect(server.addr).unwrap();
    partial.set_read_timeout(Some(WAIT)).unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
        .unwrap();
    let started = Instant::now();
    for s in [&mut silent, &mut partial] {
        let mut rest = Vec::new();
        // EOF or reset: either way the server closed it; never a WAIT timeout.
        match s.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    assert!(
        started.elapsed() < WAIT,
        "closed by the deadline, not by the test's timeout"
    );
    eventually("the TLS handshake timeout to be counted", || {
        metric(&metrics(&server), "ringport_tls_handshake_timeouts_total") > before
    });
    assert!(
        metric(
            &metrics(&server),
            "ringport_connections_closed_total{reason=\"handshake_timeout\"}"
        ) >= 2
    );
}

/// A TLS consumer that stops reading. Its records cannot be cut at a frame boundary (each
/// record's sequence number is bound into the next), so once its queue passes
/// `engine.send_high_water` its whole backlog is dropped and the connection closed at once,
/// counted as a slow consumer: the server does not hold the backlog until
/// `engine.close_linger_ms` ends. (What the kernel already buffered still reaches the client,
/// slowly through its 4 KiB window, then the stream ends without a CLOSE: not read here.)
#[test]
fn a_slow_tls_consumer_is_closed_at_once_and_counted() {
    let ca = Ca::new("ca");
    let files = Files::new("slow-consumer");
    files.write(&ca.server(&["localhost"], false));
    let mut config = files.config();
    config.engine.send_high_water = 1 << 20;
    // Far longer than the test waits: the backlog must not be freed by the linger.
    config.engine.close_linger_ms = 300_000;
    config.history.max_messages_per_stream = 1;
    let server = TestServer::start(config);
    let tls = tls_connect(server.addr, client_config(&ca, None), "localhost").expect("handshake");
    socket2::SockRef::from(&tls.sock)
        .set_recv_buffer_size(4096)
        .unwrap();
    let mut c = Native::new(tls);
    assert!(matches!(c.hello(), Frame::Welcome(_)));
    c.join("feed");
    let slow = "ringport_connections_closed_total{reason=\"slow_consumer\"}";
    let before = metric(&metrics(&server), slow);
    // 200 x 60 KB = 12 MB: more than the high-water mark plus what the kernel buffers
    // (net.ipv4.tcp_wmem's 4 MiB at most on the server's side, 4 KiB on the client's).
    let body = format!(r#"{{"payload":"{}"}}"#, "z".repeat(60_000));
    for _ in 0..200 {
        let r = server.http("POST", "/v1/push/room/feed", &body);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    eventually("the slow TLS consumer's close to be counted", || {
        metric(&metrics(&server), slow) > before
    });
    // The server holds no backlog for it any more (before: until the linger ended).
    let engine = server.engine();
    eventually("the shed TLS backlog to be freed", || {
        let queued: u64 = engine.stats_all().iter().map(|s| s.queued_bytes).sum();
        queued <= 64 * 1024
    });
    drop(c);
}

/// The memory budget, not one consumer's own queue, sheds a slow TLS consumer: the largest
/// send queue goes first, and over TLS its backlog (far more than the 64 KiB a goodbye may
/// wait behind, records cannot be cut) is dropped whole and the connection ended at once,
/// without a CLOSE. It is counted as a memory-budget hit and a `local` close (not a slow
/// consumer: its queue stayed under `engine.send_high_water`), and a TLS client that reads
/// keeps its connection and gets every push.
#[test]
fn over_the_memory_budget_the_largest_tls_queue_is_shed_and_tls_readers_keep_theirs() {
    let ca = Ca::new("ca");
    let files = Files::new("memory-budget");
    files.write(&ca.server(&["localhost"], false));
    let mut config = files.config();
    config.server.memory_budget_bytes = 4 << 20;
    config.engine.send_high_water = 256 << 20;
    // Far longer than the test waits: the backlog must not be freed by the linger.
    config.engine.close_linger_ms = 300_000;
    config.history.max_messages_per_stream = 1;
    let server = TestServer::start(config);
    let connect =
        || tls_connect(server.addr, client_config(&ca, None), "localhost").expect("handshake");
    let slow_tls = connect();
    socket2::SockRef::from(&slow_tls.sock)
        .set_recv_buffer_size(4096)
        .unwrap();
    let mut slow = Native::new(slow_tls);
    assert!(matches!(slow.hello(), Frame::Welcome(_)));
    slow.join("feed");
    let mut reader = Native::new(connect());
    assert!(matches!(reader.hello(), Frame::Welcome(_)));
    reader.join("feed");
    let closed = |reason: &str| {
        metric(
            &metrics(&server),
            &format!("ringport_connections_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    let budget_hits = "ringport_limit_hits_total{limit=\"memory_budget\"}";
    let (local_before, slow_before) = (closed("local"), closed("slow_consumer"));
    assert_eq!(metric(&metrics(&server), budget_hits), 0);
    const N: usize = 200;
    // The pushes follow the reader (at most LEAD ahead of what it has read), so its queue
    // never becomes the largest, however slowly a loaded machine runs its thread.
    const LEAD: usize = 4;
    let body = format!(r#"{{"payload":"{}"}}"#, "z".repeat(60_000));
    let mut reader = common::gateway::push_at_readers_pace(
        N,
        LEAD,
        reader,
        |r, i| assert_eq!(push_text(r.recv()).len(), 60_000, "push {i}"),
        || {
            let r = server.http("POST", "/v1/push/room/feed", &body);
            assert_eq!(r.status, 200, "{}", r.body);
        },
    );
    // 200 x 60 KB = 12 MB for the consumer that does not read: over the 4 MiB budget.
    eventually("the memory budget to shed a connection", || {
        metric(&metrics(&server), budget_hits) >= 1
    });
    reader.send(&Frame::Ping { nonce: 9 });
    assert_eq!(
        reader.recv(),
        Frame::Pong { nonce: 9 },
        "the reader keeps its connection"
    );
    server.wait_metric("ringport_connections_open{state=\"active\"} 1");
    eventually("the shed connection's close to be counted", || {
        closed("local") > local_before
    });
    assert_eq!(
        closed("slow_consumer"),
        slow_before,
        "the budget shed it, not the high-water mark"
    );
    // Its backlog is freed now, not when the linger ends.
    let engine = server.engine();
    eventually("the shed TLS backlog to be freed", || {
        let queued: u64 = engine.stats_all().iter().map(|s| s.queued_bytes).sum();
        queued <= 64 * 1024
    });
    // (What the kernel already buffered still reaches it, slowly through its 4 KiB window,
    // then its stream ends without a CLOSE: not read here, as in the test above.)
    drop(slow);
}

#[test]
fn client_certificates_required_and_optional() {
    let ca = Ca::new("server-ca");
    let devices = Ca::new("device-ca");
    let files = Files::new("mtls");
    files.write(&ca.server(&["localhost"], false));
    std::fs::write(files.path("devices.pem"), devices.cert.pem()).unwrap();
    let mut config = files.config();
    config.tls.client_ca_file = Some(s(&files.path("devices.pem")));
    config.tls.client_auth = ClientAuth::Required;
    let server = TestServer::start(config.clone());

    let device = devices.client("sensor-17");
    let tls = tls_connect(server.addr, client_config(&ca, Some(&device)), "localhost")
        .expect("a device certificate is accepted");
    let mut c = Native::new(tls);
    assert!(matches!(c.hello(), Frame::Welcome(_)));

    // Without a certificate, or with one from another CA: refused by the server (TLS 1.3
    // reports it after the client's side of the handshake, on the first read).
    let stranger = ca.client("stranger");
    for identity in [None, Some(&stranger)] {
        let refused = match tls_connect(server.addr, client_config(&ca, identity), "localhost") {
            Err(_) => true,
            Ok(tls) => Native::new(tls).hello_or_end().is_none(),
        };
        assert!(refused, "refused without a valid client certificate");
    }
    eventually("the refusals to be counted", || {
        metric(
            &metrics(&server),
            "ringport_tls_errors_total{reason=\"client_certificate\"}",
        ) >= 2
    });
    drop(server);

    config.tls.client_auth = ClientAuth::Optional;
    let server = TestServer::start(config);
    let tls = tls_connect(server.addr, client_config(&ca, None), "localhost").expect("optional");
    assert!(matches!(Native::new(tls).hello(), Frame::Welcome(_)));
    let tls = tls_connect(server.addr, client_config(&ca, Some(&device)), "localhost").unwrap();
    assert!(matches!(Native::new(tls).hello(), Frame::Welcome(_)));
}

impl<S: Read + Write> Native<S> {
    /// HELLO, and the answer; `None` if the connection ends (or errs) instead.
    fn hello_or_end(&mut self) -> Option<Frame> {
        let hello = Frame::Hello(Hello {
            token: Bytes::new(),
            client_info: "tls-test/1".into(),
            resume: None,
        });
        self.stream.write_all(&hello.to_bytes().unwrap()).ok()?;
        self.stream.flush().ok()?;
        self.next()
    }
}

/// Bytes that break TLS (a handshake record whose body is no ClientHello) cost the address
/// `limits.handshakes_per_abusive_close` new-connection tokens, as broken native bytes do
/// (issue 10): a garbage flood over TLS cannot reconnect for a fresh session each time.
#[test]
fn bytes_that_break_tls_cost_the_address_its_reconnects() {
    let ca = Ca::new("ca");
    let files = Files::new("broken");
    files.write(&ca.server(&["localhost"], false));
    let mut config = files.config();
    common::gateway::abuse_costs_a_burst(&mut config.limits);
    let server = TestServer::start(config);
    let count = |limit: &str| {
        metric(
            &metrics(&server),
            &format!("ringport_limit_hits_total{{limit=\"{limit}\"}}"),
        )
    };
    let from = std::net::IpAddr::from([127, 0, 30, 1]);
    let read_to_end = |c: &mut common::gateway::Client| {
        c.stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut rest = Vec::new();
        // The server closes; a reset after its alert is an end too.
        let _ = c.stream.read_to_end(&mut rest);
    };
    let (abusive, refused) = (count("abusive_close"), count("handshake_rate"));
    let mut broken = common::gateway::Client::connect_from(server.addr, from);
    broken
        .stream
        .write_all(&[
            0x16, 0x03, 0x01, 0x00, 0x08, 0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3,
        ])
        .unwrap();
    read_to_end(&mut broken);
    eventually("the broken TLS connection charged", || {
        count("abusive_close") > abusive
    });
    // The address's next connection is refused: its new-connection tokens are spent.
    read_to_end(&mut common::gateway::Client::connect_from(
        server.addr,
        from,
    ));
    eventually("the next connection refused", || {
        count("handshake_rate") > refused
    });
    // Another address is served.
    let tls = tls_connect(server.addr, client_config(&ca, None), "localhost").unwrap();
    assert!(matches!(Native::new(tls).hello(), Frame::Welcome(_)));
}

#[test]
fn tls_only_port_closes_plaintext_connections() {
    let ca = Ca::new("ca");
    let files = Files::new("only");
    files.write(&ca.server(&["localhost"], false));
    let mut config = files.config();
    config.tls.allow_plaintext = false;
    let server = TestServer::start(config);
    let mut plain = server.client();
    plain.send(&Frame::Hello(Hello {
        token: Bytes::new(),
        client_info: "plain/1".into(),
        resume: None,
    }));
    assert!(plain.next().is_none(), "closed without an answer");
    assert_eq!(
        metric(&metrics(&server), "ringport_tls_plaintext_refused_total"),
        1
    );
    let tls = tls_connect(server.addr, client_config(&ca, None), "localhost").unwrap();
    assert!(matches!(Native::new(tls).hello(), Frame::Welcome(_)));
}

#[test]
fn reload_keeps_connections_and_serves_the_new_certificate() {
    let ca = Ca::new("ca");
    let files = Files::new("reload");
    let first = ca.server(&["localhost"], false);
    files.write(&first);
    let server = TestServer::start(files.config());
    let before = metric(
        &metrics(&server),
        "ringport_tls_certificate_reloads_total{result=\"ok\"}",
    );
    let tls = tls_connect(server.addr, client_config(&ca, None), "localhost").unwrap();
    let mut old = Native::new(tls);
    assert!(matches!(old.hello(), Frame::Welcome(_)));
    old.join("r");

    let second = ca.server(&["localhost", "gw.example"], false);
    files.write(&second);
    server.reload_tls().expect("reload");
    // A broken file is refused and the certificate in force stays.
    std::fs::write(files.path("key.pem"), "not a key").unwrap();
    assert!(server.reload_tls().is_err());
    let m = metrics(&server);
    assert_eq!(
        metric(&m, "ringport_tls_certificate_reloads_total{result=\"ok\"}"),
        before + 1
    );
    assert!(
        metric(
            &m,
            "ringport_tls_certificate_reloads_total{result=\"failed\"}"
        ) >= 1
    );

    let fresh = tls_connect(server.addr, client_config(&ca, None), "gw.example")
        .expect("the new certificate names gw.example");
    let seen = fresh.conn.peer_certificates().unwrap()[0].clone();
    assert_eq!(
        seen,
        *second.cert.der(),
        "new handshakes get the new certificate"
    );
    let mut fresh = Native::new(fresh);
    assert!(matches!(fresh.hello(), Frame::Welcome(_)));
    fresh.join("r");

    // The connection from before the reload is still served.
    let r = server.http("POST", "/v1/push/room/r", r#"{"payload":"after reload"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(push_text(old.recv()), b"after reload");
    assert_eq!(push_text(fresh.recv()), b"after reload");
    assert_eq!(
        old.stream.conn.peer_certificates().unwrap()[0],
        *first.cert.der()
    );
}

#[test]
fn sdk_connects_over_tls_and_wss_and_checks_the_name() {
    use ringport_client::{Client, Event};
    let ca = Ca::new("ca");
    let files = Files::new("sdk");
    files.write(&ca.server(&["localhost"], false));
    let server = TestServer::start(files.config());
    let port = server.addr.port();
    let mut roots = ringport_client::rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let mut opts = common::sdk_options();
    opts.tls = Some(ringport_client::tls_config(roots));
    opts.max_reconnect_attempts = Some(0);
    common::runtime().block_on(async move {
        for url in [
            format!("tls://localhost:{port}"),
            format!("wss://localhost:{port}/ringport"),
        ] {
            let (client, mut rx) = Client::connect(url.clone(), "", opts.clone())
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            client.join("sdk").await.expect("joined");
            client.publish("sdk", url.clone()).await.expect("acked");
            tokio::time::timeout(WAIT, async {
                loop {
                    match rx.recv().await.expect("running") {
                        Event::Message(m) if m.payload[..] == *url.as_bytes() => break,
                        _ => {}
                    }
                }
            })
            .await
            .expect("own message back");
            client.close().await;
        }
        // The certificate names localhost, not 127.0.0.1; and without roots there is no TLS.
        let wrong = Client::connect(format!("tls://127.0.0.1:{port}"), "", opts.clone()).await;
        assert!(wrong.is_err(), "a certificate for another name is refused");
        let mut bare = opts.clone();
        bare.tls = None;
        let no_roots = Client::connect(format!("wss://localhost:{port}"), "", bare).await;
        assert!(no_roots.is_err());
    });
}
