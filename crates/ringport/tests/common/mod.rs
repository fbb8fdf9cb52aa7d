//! Shared test helpers: a mock [`Gateway`], a tiny blocking HTTP/1.1 client, and (in
//! [`gateway`]) an in-process gateway with a protocol client.
#![allow(dead_code)]

pub mod cluster;
pub mod gateway;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use ringport::http::{
    ConnectionCounts, ConnectionInfo, ConnectionState, Gateway, GatewayError, GatewayStats,
    History, Presence, Push, PushOutcome, PushTarget, Receipts, Reply, RoomInfo, RoomList,
    RoomMember,
};
use ringport::metrics::Registry;

/// The arguments every test's `ringport serve` child process starts with: clients on
/// `listen`, the admin API on an ephemeral port, two workers, JSON logs (the tests read the
/// `ringport ready` line for the bound addresses) and a small receive-buffer pool (many
/// servers share the machine while the tests run).
pub fn serve_args(listen: &str) -> Vec<&str> {
    vec![
        "serve",
        "--listen",
        listen,
        "--admin",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--log-format",
        "json",
        "--set",
        "engine.recv_buffers=256",
    ]
}

/// A two-thread tokio runtime for tests that drive the SDK.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Records pushes and kicks; connection 7 exists, everything else does not.
#[derive(Default)]
pub struct MockGateway {
    pub calls: Mutex<Vec<(String, Push)>>,
    pub kicked: Mutex<Vec<(u64, Option<String>)>>,
    pub unavailable: Mutex<bool>,
}

impl MockGateway {
    fn record(&self, target: String, push: Push) -> Result<PushOutcome, GatewayError> {
        if *self.unavailable.lock().unwrap() {
            return Err(GatewayError::Unavailable("shutting down".into()));
        }
        let mut calls = self.calls.lock().unwrap();
        calls.push((target.clone(), push));
        Ok(PushOutcome {
            stream: target,
            epoch: 1,
            offset: calls.len() as u64,
            recipients: Some(3),
            warning: None,
        })
    }
}

impl Gateway for MockGateway {
    fn push_room(&self, room: String, push: Push) -> Reply<'_, PushOutcome> {
        Box::pin(async move { self.record(format!("room:{room}"), push) })
    }
    fn push_user(&self, user: String, push: Push) -> Reply<'_, PushOutcome> {
        Box::pin(async move { self.record(format!("user:{user}"), push) })
    }
    fn broadcast(&self, push: Push) -> Reply<'_, PushOutcome> {
        Box::pin(async move { self.record("broadcast".into(), push) })
    }
    fn room_info(&self, room: String, sample: usize) -> Reply<'_, RoomInfo> {
        Box::pin(async move {
            let members = (0..3)
                .map(|i| RoomMember {
                    connection: i.to_string(),
                    user: Some(format!("u{i}")),
                })
                .take(sample)
                .collect();
            Ok(RoomInfo {
                room,
                online: 3,
                members,
                cluster: None,
            })
        })
    }
    fn top_rooms(&self, limit: usize) -> Reply<'_, RoomList> {
        Box::pin(async move {
            Ok(RoomList::top(
                [("a".to_owned(), 2), ("b".to_owned(), 3)],
                limit,
            ))
        })
    }
    fn stats(&self) -> Reply<'_, GatewayStats> {
        Box::pin(async {
            Ok(GatewayStats {
                shards: 2,
                connections: ConnectionCounts {
                    handshaking: 1,
                    active: 5,
                    sleeping: 2,
                },
                rooms: 4,
                users: 6,
                uptime_seconds: 10,
                io_backend: "uring".into(),
                io_backend_reason: "configured".into(),
                cluster: None,
            })
        })
    }
    fn connection(&self, id: u64) -> Reply<'_, Option<ConnectionInfo>> {
        Box::pin(async move {
            Ok((id == 7).then(|| ConnectionInfo {
                id: id.to_string(),
                remote_addr: Some("10.0.0.1:5555".into()),
                user: Some("u7".into()),
                rooms: vec!["lobby".into()],
                state: ConnectionState::Active,
                connected_since_ms: 1_700_000_000_000,
                last_activity_ms: 1_700_000_001_000,
                bytes_in: 10,
                bytes_out: 20,
                messages_in: 1,
                messages_out: 2,
                queued_bytes: 0,
            }))
        })
    }
    fn receipts(&self, user: String) -> Reply<'_, Receipts> {
        Box::pin(async move {
            Ok(Receipts {
                user,
                epoch: 9,
                tail: 12,
                acked_offset: 10,
                acked_count: 4,
            })
        })
    }
    fn kick(&self, id: u64, reason: Option<String>) -> Reply<'_, bool> {
        Box::pin(async move {
            self.kicked.lock().unwrap().push((id, reason));
            Ok(id == 7)
        })
    }
    fn history(&self, target: PushTarget, _since: u64, _limit: usize) -> Reply<'_, History> {
        Box::pin(async move {
            Ok(History {
                stream: format!("{target:?}"),
                ..History::default()
            })
        })
    }
    fn presence(&self, room: String, _after: Option<String>, _limit: usize) -> Reply<'_, Presence> {
        Box::pin(async move {
            Ok(Presence {
                room,
                ..Presence::default()
            })
        })
    }
    fn render_metrics(&self, out: &mut String) {
        Registry::new(1).0.render(out);
    }
}

/// A parsed response.
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut content_type = String::new();
    let mut chunked = false;
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-type") {
                content_type = v.trim().to_owned();
            }
            if k.eq_ignore_ascii_case("transfer-encoding") && v.trim() == "chunked" {
                chunked = true;
            }
        }
    }
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Response {
        status,
        content_type,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One keep-alive HTTP/1.1 connection that writes requests ahead of reading answers
/// (pipelining); answers come back in request order.
pub struct Pipelined {
    reader: std::io::BufReader<TcpStream>,
    writer: TcpStream,
}

impl Pipelined {
    pub fn connect(addr: SocketAddr) -> Pipelined {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_nodelay(true).unwrap();
        Pipelined {
            writer: s.try_clone().unwrap(),
            reader: std::io::BufReader::new(s),
        }
    }

    /// A second handle on the socket for writing from another thread.
    pub fn writer(&self) -> TcpStream {
        self.writer.try_clone().unwrap()
    }

    /// The bytes of one request (keep-alive).
    pub fn encode(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        req
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) {
        let req = Pipelined::encode(method, path, headers, body);
        self.writer.write_all(req.as_bytes()).unwrap();
    }

    /// Reads the next answer (`Content-Length` framed, as hyper answers JSON).
    pub fn answer(&mut self) -> Response {
        use std::io::BufRead;
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let (mut len, mut content_type) = (0usize, String::new());
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header line");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                } else if k.eq_ignore_ascii_case("content-type") {
                    content_type = v.trim().to_owned();
                }
            }
        }
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body).expect("body");
        Response {
            status,
            content_type,
            body: String::from_utf8(body).unwrap(),
        }
    }

    /// One request and its answer.
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        self.send(method, path, headers, body);
        self.answer()
    }
}

/// SDK options for tests: quick reconnects, room for every message a test sends.
pub fn sdk_options() -> ringport_client::Options {
    ringport_client::Options {
        backoff: ringport_client::Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(300),
            multiplier: 2.0,
            jitter: 0.5,
        },
        handshake_timeout: Duration::from_secs(5),
        outbound_queue: 4_096,
        event_capacity: 65_536,
        ..ringport_client::Options::default()
    }
}
