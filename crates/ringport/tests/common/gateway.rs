//! An in-process gateway on loopback port 0 and a small blocking protocol client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringport::config::Config;
use ringport::gateway::GatewayPlane;
use ringport::http::{AdminServer, WebPages};
use ringport::serve::DataPlane;
use ringport::streams::{HistoryLimits, Streams};
use ringport_proto::{
    CloseReason, Decoder, Frame, Hello, Publish, Push, Resume, ResumePoint, RoomRequest, Status,
    Welcome,
};

/// Generous: the test machine is small and busy (2 cores shared with parallel builds; a read
/// after a broker's freeze and reconnect once took longer than 20 s at load 8). Only a failing
/// test waits this long.
pub const WAIT: Duration = Duration::from_secs(60);

pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A config for tests: 2 shards, small buffers, loopback port 0 everywhere.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.workers = 2;
    c.admin.listen = "127.0.0.1:0".parse().unwrap();
    c.engine.recv_buffers = 256;
    c.engine.ring_entries = 1024;
    c.engine.max_connections_per_shard = 1024;
    c.engine.shutdown_timeout_ms = 1_000;
    c
}

/// A running gateway and its admin API; shut down on drop.
pub struct TestServer {
    plane: Option<GatewayPlane>,
    admin: Option<AdminServer>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
}

impl TestServer {
    pub fn start(config: Config) -> TestServer {
        config.validate().expect("valid test config");
        let plane = ringport::gateway::start(&config).expect("gateway starts");
        let pages = WebPages::new(&config, plane.local_addr().unwrap());
        let admin = AdminServer::start_with_pages(&config.admin, plane.gateway(), pages)
            .expect("admin starts");
        TestServer {
            addr: plane.local_addr().unwrap(),
            admin_addr: admin.local_addr(),
            plane: Some(plane),
            admin: Some(admin),
        }
    }

    /// As [`start`](Self::start), with the stream registry kept for inspection.
    pub fn start_with_streams(config: Config) -> (TestServer, std::sync::Arc<Streams>) {
        config.validate().expect("valid test config");
        let streams = std::sync::Arc::new(Streams::new(
            HistoryLimits::from_config(&config.history),
            64,
        ));
        let plane =
            ringport::gateway::start_with_sink(&config, streams.clone()).expect("gateway starts");
        let admin = AdminServer::start(&config.admin, plane.gateway()).expect("admin starts");
        let server = TestServer {
            addr: plane.local_addr().unwrap(),
            admin_addr: admin.local_addr(),
            plane: Some(plane),
            admin: Some(admin),
        };
        (server, streams)
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// What SIGHUP does: re-reads the TLS certificate files.
    pub fn reload_tls(&self) -> Result<(), String> {
        self.plane.as_ref().expect("running").gateway().reload_tls()
    }

    /// An authenticated (or anonymous, with `token = ""`) client.
    pub fn welcomed(&self, token: &str) -> Client {
        let mut c = self.client();
        match c.hello(token) {
            Frame::Welcome(_) => c,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    /// The engine behind the gateway (tests post closures to shards with it).
    pub fn engine(&self) -> ringport_io::EngineHandle<ringport::gateway::GatewayHandler> {
        let plane = self.plane.as_ref().expect("running");
        plane.engine_gateway().engine().clone()
    }

    /// An anonymous session that joined room `name` and closed: its `(session_id, epoch)`.
    pub fn session_in_room(&self, name: &str) -> (u64, u32) {
        let mut c = self.client();
        let w = c.welcome("");
        c.send(&Frame::Join(RoomRequest {
            req_id: 1,
            room: name.into(),
        }));
        let epoch = match c.recv() {
            Frame::RoomResult(r) => r.epoch,
            other => panic!("expected ROOM_RESULT, got {other:?}"),
        };
        c.send(&Frame::Close {
            reason: CloseReason::NORMAL,
            text: String::new(),
        });
        while c.next().is_some() {}
        (w.session_id, epoch)
    }

    pub fn http(&self, method: &str, path: &str, body: &str) -> super::Response {
        super::request(self.admin_addr, method, path, &[], body)
    }

    /// Polls `/metrics` until `line` (a full sample line) is present, or panics.
    pub fn wait_metric(&self, line: &str) -> String {
        wait_metric_at(self.admin_addr, line)
    }
}

/// Per-IP limits for loopback peers, every refusal answered, and one close for abuse costing
/// its address more than a whole burst of new connections (1,000 at 1 a second): after one,
/// the address owes a full burst (1,000 s) whatever a test's timing.
pub fn abuse_costs_a_burst(l: &mut ringport::config::LimitsConfig) {
    l.exempt_loopback = false;
    l.refusals_answered_per_ip_per_sec = 0;
    l.handshakes_per_ip_per_sec = 1;
    l.handshake_burst_per_ip = 1000;
    l.handshakes_per_abusive_close = 5000;
}

/// Polls `/metrics` of the admin API at `admin` until `line` (a full sample line) is
/// present, or panics.
pub fn wait_metric_at(admin: SocketAddr, line: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let body = super::request(admin, "GET", "/metrics", &[], "").body;
        if body.lines().any(|l| l == line) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "metric {line:?} never showed:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(admin) = self.admin.take() {
            let _ = admin.shutdown();
        }
        if let Some(plane) = self.plane.take() {
            plane.shutdown();
            let _ = Box::new(plane).join();
        }
    }
}

/// A blocking client speaking the native protocol over std `TcpStream`.
pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::over(TcpStream::connect(addr).expect("connect"))
    }

    fn over(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
            decoder: Decoder::new(16 << 20),
        }
    }

    /// Connects from source address `ip` (any of 127.0.0.0/8 on loopback), to look like
    /// a distinct peer.
    pub fn connect_from(addr: SocketAddr, ip: std::net::IpAddr) -> Client {
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .expect("socket");
        s.bind(&SocketAddr::new(ip, 0).into()).expect("bind source");
        s.connect(&addr.into()).expect("connect");
        Client::over(s.into())
    }

    pub fn send(&mut self, frame: &Frame) {
        let bytes = frame.to_bytes().unwrap();
        self.stream.write_all(&bytes).unwrap();
    }

    /// The next frame, `None` at end of stream; panics on timeout or a decode error.
    pub fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf).expect("server frame") {
                return Some(f);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next frame that is not a server PING (answered with PONG).
    pub fn recv(&mut self) -> Frame {
        loop {
            match self.next().expect("connection closed") {
                Frame::Ping { nonce } => self.send(&Frame::Pong { nonce }),
                f => return f,
            }
        }
    }

    pub fn hello(&mut self, token: &str) -> Frame {
        self.send(&Frame::Hello(Hello {
            token: Bytes::copy_from_slice(token.as_bytes()),
            client_info: "test/1".into(),
            resume: None,
        }));
        self.recv()
    }

    /// Sends a HELLO that resumes `session_id` with `streams` (the answer is not read).
    pub fn hello_resume(&mut self, token: &str, session_id: u64, streams: Vec<ResumePoint>) {
        self.send(&Frame::Hello(Hello {
            token: Bytes::copy_from_slice(token.as_bytes()),
            client_info: "test/1".into(),
            resume: Some(Resume {
                session_id,
                streams,
            }),
        }));
    }

    pub fn welcome(&mut self, token: &str) -> Welcome {
        match self.hello(token) {
            Frame::Welcome(w) => w,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    pub fn join(&mut self, req_id: u32, room: &str) -> Status {
        self.send(&Frame::Join(RoomRequest {
            req_id,
            room: room.into(),
        }));
        match self.recv() {
            Frame::RoomResult(r) if r.req_id == req_id => r.status,
            other => panic!("expected ROOM_RESULT {req_id}, got {other:?}"),
        }
    }

    pub fn publish(&mut self, room: &str, seq: u64, payload: &[u8]) {
        self.send(&Frame::Publish(Publish {
            room: room.into(),
            seq,
            payload: Bytes::copy_from_slice(payload),
        }));
    }

    /// Sends PING `nonce` and returns every frame that arrives before its PONG.
    pub fn until_pong(&mut self, nonce: u64) -> Vec<Frame> {
        self.send(&Frame::Ping { nonce });
        let mut seen = Vec::new();
        loop {
            match self.recv() {
                Frame::Pong { nonce: n } if n == nonce => return seen,
                f => seen.push(f),
            }
        }
    }

    pub fn push(&mut self) -> Push {
        match self.recv() {
            Frame::Push(p) => p,
            other => panic!("expected PUSH, got {other:?}"),
        }
    }

    /// Reads until CLOSE (skipping anything else) and then end of stream.
    pub fn expect_close(&mut self) -> (CloseReason, String) {
        loop {
            match self.next() {
                Some(Frame::Close { reason, text }) => {
                    // The server closes TCP after its CLOSE.
                    while self.next().is_some() {}
                    return (reason, text);
                }
                Some(_) => {}
                None => panic!("connection ended without CLOSE"),
            }
        }
    }
}

/// Mints a token for `user` admitting `rooms`, valid for an hour.
pub fn token(user: &str, rooms: &[&str]) -> String {
    let rooms: Vec<String> = rooms.iter().map(|r| (*r).to_owned()).collect();
    ringport::auth::mint(
        user,
        &rooms,
        Duration::from_secs(3600),
        SECRET.as_bytes(),
        std::time::SystemTime::now(),
    )
    .unwrap()
}

/// The value of one sample line `name{labels} value` in a metrics body.
pub fn metric(body: &str, sample: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {sample}"))
        .parse::<f64>()
        .unwrap() as u64
}

/// Pushes to a reading client at its pace: `read_one(&mut reader, i)` runs for `i` in
/// `1..=n` on a thread of its own while `push()` runs `n` times here, each at most `lead`
/// pushes ahead of what the reader has read. So the reader's send queue stays small (never
/// the largest, never near a high-water mark) however slowly a loaded machine runs its
/// thread. Returns the reader once it has read all `n`.
pub fn push_at_readers_pace<R: Send + 'static>(
    n: usize,
    lead: usize,
    mut reader: R,
    read_one: impl Fn(&mut R, usize) + Send + 'static,
    mut push: impl FnMut(),
) -> R {
    let (read_tx, read_rx) = std::sync::mpsc::channel();
    let reading = std::thread::spawn(move || {
        for i in 1..=n {
            read_one(&mut reader, i);
            let _ = read_tx.send(i);
        }
        reader
    });
    let mut read = 0;
    for i in 0..n {
        while read + lead < i {
            read = read_rx
                .recv_timeout(WAIT)
                .expect("the reader keeps reading");
        }
        push();
    }
    reading.join().expect("the reader got every push")
}
