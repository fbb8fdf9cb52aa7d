//! Heap bytes per idle authenticated connection joined to one room (issue 16): this binary
//! counts every live heap byte of the process with a counting global allocator, opens
//! `conns()` connections to an in-process gateway in three passes (TCP connect, HELLO with a
//! token, JOIN of one room) and measures the live heap after each pass. The deltas divided by
//! the connection count are the per-connection cost of each step; the test fails if the
//! total exceeds `BUDGET` bytes. Heap, not RSS: the count is the same on every run.
//!
//! `cargo test --release -p ringport --test memory_per_conn -- --nocapture` also prints the
//! profile: per step, the live allocations that grew by at least a tenth of a block per
//! connection, by requested size.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringport::config::Config;
use ringport::serve::DataPlane;
use ringport_proto::{Decoder, Frame, Hello, RoomRequest, Status};

/// Connections measured: enough that per-shard tables amortise, well under the open-file
/// limit (the test's client sockets are ordinary descriptors).
/// Connections measured: 10,000, or 6,000 on the epoll backend, where both ends of every
/// loopback connection are descriptors of this one process (20,000 allowed).
fn conns() -> usize {
    match std::env::var("RINGPORT_IO_BACKEND").as_deref() {
        Ok("epoll") => 6_000,
        _ => 10_000,
    }
}
/// Heap bytes per idle authenticated connection joined to one room this test allows: issue
/// 16's target. 687.6–688.4 measured (2 runs) after the cuts of branch million-4 (session outbox boxed while
/// empty, 8-byte token buckets, 112-byte engine slot, 48-byte registry entries; one run, 10,000
/// connections each; docs/benchmarks.md, "Where an idle connection's bytes go"); 641.7 since the
/// user index, per-user counts and session registry are `DenseMap`s (one run); 624.4–626.7
/// since the gateway's `Conn` is 240 bytes, not 256 (3 runs). At a million
/// the same tables are held to their own budget by `memory_at_scale.rs`. Never raise it for
/// anything but a feature's own bytes.
const BUDGET: i64 = 700;
/// The same on the epoll backend: 760.9–768.9 measured (2 runs, 6,000 connections) after the same
/// cuts (724.2–726.0 with the 240-byte `Conn`, 3 runs), plus a margin for where the tables' last growth falls. What remains above io_uring is
/// the readiness table (docs/benchmarks.md, "epoll's extra bytes per connection").
const EPOLL_BUDGET: i64 = 785;
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const WAIT: Duration = Duration::from_secs(120);

mod counting_alloc;
use counting_alloc::{report_of, snapshot, Snapshot, MEASURING, UNCOUNTED};

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// Prints what grew between two snapshots, per connection; returns bytes per connection.
fn report(step: &str, before: &Snapshot, after: &Snapshot) -> f64 {
    report_of(conns(), step, before, after)
}

fn token(user: &str) -> String {
    ringport::auth::mint(
        user,
        &["*".to_owned()],
        Duration::from_secs(3600),
        SECRET.as_bytes(),
        std::time::SystemTime::now(),
    )
    .unwrap()
}

/// Reads from `s` (TCP, or TLS over it) until a frame arrives; returns it. The buffer is
/// dropped afterwards.
fn read_frame(s: &mut impl Read) -> Frame {
    let decoder = Decoder::new(1 << 20);
    let mut buf = BytesMut::new();
    loop {
        if let Some(f) = decoder.decode(&mut buf).expect("server frame") {
            return f;
        }
        let mut chunk = [0u8; 2048];
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Polls `done` (bounded by `WAIT`).
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn idle_authenticated_joined_connection_fits_the_heap_budget() {
    let _one = MEASURING.lock().unwrap_or_else(|p| p.into_inner());
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.workers = 1;
    config.engine.max_connections_per_shard = (conns() + 1_000) as u32;
    // Every connection is opened before the first HELLO is sent: on a loaded machine that
    // pass alone can outlast the default 10 s handshake deadline (a heap test, not a timing
    // one).
    config.protocol.handshake_timeout_ms = 600_000;
    config.auth.secret = Some(SECRET.into());
    config.validate().expect("valid config");
    let plane = ringport::gateway::start(&config).expect("gateway starts");
    let addr = plane.local_addr().unwrap();
    let engine = plane.engine_gateway().engine().clone();

    // Everything the client side keeps is allocated before the first snapshot.
    let hellos: Vec<Bytes> = (0..conns())
        .map(|i| {
            Frame::Hello(Hello {
                token: Bytes::from(token(&format!("user-{i}"))),
                client_info: "memtest/1".into(),
                resume: None,
            })
            .to_bytes()
            .unwrap()
        })
        .collect();
    let join = Frame::Join(RoomRequest {
        req_id: 1,
        room: "lobby".into(),
    })
    .to_bytes()
    .unwrap();
    let mut streams: Vec<TcpStream> = Vec::with_capacity(conns());
    // One connection through the whole story first, so one-time allocations (the room,
    // lazily built tables) are in the baseline.
    let mut warm = TcpStream::connect(addr).unwrap();
    warm.set_read_timeout(Some(WAIT)).unwrap();
    warm.write_all(
        &Frame::Hello(Hello {
            token: Bytes::from(token("warm-up")),
            client_info: "memtest/1".into(),
            resume: None,
        })
        .to_bytes()
        .unwrap(),
    )
    .unwrap();
    assert!(matches!(read_frame(&mut warm), Frame::Welcome(_)));
    warm.write_all(&join).unwrap();
    assert!(matches!(read_frame(&mut warm), Frame::RoomResult(_)));
    let engine = &engine;
    let open = |n: usize| move || engine.stats(0).open == n as u64;
    wait_until("the warm-up connection", open(1));

    let base = snapshot();
    for i in 0..conns() {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        streams.push(s);
        // Paced: at most 500 connections wait in the listen backlog.
        if i % 500 == 499 {
            wait_until("accepts to catch up", open(i + 2));
        }
    }
    wait_until("every connection accepted", open(conns() + 1));
    let connected = snapshot();

    for (s, hello) in streams.iter_mut().zip(&hellos) {
        s.write_all(hello).unwrap();
        match read_frame(s) {
            Frame::Welcome(_) => {}
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }
    let welcomed = snapshot();

    for s in &mut streams {
        s.write_all(&join).unwrap();
        match read_frame(s) {
            Frame::RoomResult(r) => assert_eq!(r.status, Status::OK),
            other => panic!("expected ROOM_RESULT, got {other:?}"),
        }
    }
    let joined = snapshot();

    println!(
        "{} connections, 1 shard, heap bytes requested from the allocator:",
        conns()
    );
    let a = report(
        "TCP connection (engine slot, gateway Conn, session)",
        &base,
        &connected,
    );
    let b = report(
        "HELLO -> WELCOME (claims, user index, sessions)",
        &connected,
        &welcomed,
    );
    let c = report("JOIN -> ROOM_RESULT (room membership)", &welcomed, &joined);
    let total = (joined.bytes - base.bytes) as f64 / conns() as f64;
    println!("total: {total:.1} heap bytes per connection ({a:.1} + {b:.1} + {c:.1})");

    drop(streams);
    drop(warm);
    plane.shutdown();
    let _ = Box::new(plane).join();
    // The epoll backend keeps a readiness entry per descriptor number (48 bytes) that the
    // io_uring engine does not, and this test's client sockets share the process's
    // descriptor numbers with the server's, so the table is twice the connection count.
    let budget = match std::env::var("RINGPORT_IO_BACKEND").as_deref() {
        Ok("epoll") => EPOLL_BUDGET,
        _ => BUDGET,
    };
    assert!(
        total <= budget as f64,
        "an idle authenticated connection joined to one room holds {total:.1} heap bytes; \
         the budget is {budget}"
    );
}

/// TLS connections measured (the client side's handshakes are the slow part).
const TLS_CONNS: usize = 2_000;
/// Heap bytes per idle TLS connection (authenticated, joined, idle after its handshake) this
/// test allows, server side only: issue 14's target, 4 KiB (measured 3,954 on io_uring and
/// 4,050 on epoll). rustls runs through its unbuffered API (`gateway/tls_session.rs`), so an
/// idle connection holds no receive or send buffer (the buffered API kept 4,096 bytes: 8,163
/// per connection before), only the plaintext connection's state plus rustls' session state.
const TLS_BUDGET: f64 = 4_096.0;

#[test]
fn idle_tls_connection_heap() {
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;
    let _one = MEASURING.lock().unwrap_or_else(|p| p.into_inner());
    // The client side: certificates, rustls clients, their streams: not counted.
    UNCOUNTED.with(|u| u.set(true));
    let dir = std::env::temp_dir().join(format!("ringport-memtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.der().to_vec()))
        .unwrap();
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.workers = 1;
    config.engine.max_connections_per_shard = (TLS_CONNS + 1_000) as u32;
    config.tls.cert_file = Some(dir.join("cert.pem").to_str().unwrap().to_owned());
    config.tls.key_file = Some(dir.join("key.pem").to_str().unwrap().to_owned());
    config.validate().expect("valid config");
    UNCOUNTED.with(|u| u.set(false));
    let plane = ringport::gateway::start(&config).expect("gateway starts");
    UNCOUNTED.with(|u| u.set(true));
    let addr = plane.local_addr().unwrap();
    let engine = plane.engine_gateway().engine().clone();
    let hello = Frame::Hello(Hello {
        token: Bytes::new(),
        client_info: "memtest/1".into(),
        resume: None,
    })
    .to_bytes()
    .unwrap();
    let join = Frame::Join(RoomRequest {
        req_id: 1,
        room: "lobby".into(),
    })
    .to_bytes()
    .unwrap();
    type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;
    let connect = || -> Tls {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::clone(&client), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(&hello).unwrap();
        tls.flush().unwrap();
        tls
    };
    let story = |tls: &mut Tls| {
        assert!(matches!(read_frame(tls), Frame::Welcome(_)));
        tls.write_all(&join).unwrap();
        tls.flush().unwrap();
        assert!(matches!(read_frame(tls), Frame::RoomResult(r) if r.status == Status::OK));
    };
    // Warm-up: the room, lazily built tables, and the server's resumption cache (256
    // sessions) filled, so they are in the baseline.
    let mut warm: Vec<Tls> = (0..300).map(|_| connect()).collect();
    warm.iter_mut().for_each(&story);
    let engine = &engine;
    wait_until("the warm-up connections", || engine.stats(0).open == 300);
    std::thread::sleep(Duration::from_millis(200));

    let base = snapshot();
    let mut streams: Vec<Tls> = Vec::with_capacity(TLS_CONNS);
    for i in 0..TLS_CONNS {
        streams.push(connect());
        if i % 200 == 199 {
            // Paced: handshakes complete (each WELCOME read) before more wait in the backlog.
            streams[i - 199..].iter_mut().for_each(&story);
        }
    }
    wait_until("every connection open", || {
        engine.stats(0).open == (TLS_CONNS + 300) as u64
    });
    // Idle: every answer delivered and read, nothing in flight.
    std::thread::sleep(Duration::from_millis(500));
    let idle = snapshot();
    let per = report_of(
        TLS_CONNS,
        "TLS connection, HELLO, JOIN, idle (1 shard, server side)",
        &base,
        &idle,
    );
    drop(streams);
    drop(warm);
    plane.shutdown();
    let _ = Box::new(plane).join();
    let _ = std::fs::remove_dir_all(&dir);
    UNCOUNTED.with(|u| u.set(false));
    assert!(
        per <= TLS_BUDGET,
        "an idle TLS connection holds {per:.1} heap bytes on the server; the budget is {TLS_BUDGET}"
    );
}
