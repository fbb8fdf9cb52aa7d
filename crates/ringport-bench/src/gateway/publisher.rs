//! The publisher of the fan-out and resume scenarios: a thread sending stamped payloads at a
//! fixed rate, round-robin over the rooms, either through the admin HTTP API
//! (`POST /v1/push/room/{room}`, pipelined on one keep-alive connection so a slow answer does
//! not slow the rate), its batch API (`POST /v1/publish/batch`, the messages due each
//! millisecond in one request) or as a protocol client (PUBLISH, answered by PUBLISH_ACK); for the
//! comparison runs, Redis `PUBLISH` ([`super::redis`]) and NATS `PUB` ([`super::nats`]).
//!
//! Sends follow an open-loop schedule: message k is due at start + k / rate. A publisher that
//! falls behind sends late (and the latency of those messages includes the wait).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use ringport_proto::{Decoder, Frame, Hello, Publish, RoomRequest, Status};

use super::payload;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// ringport's admin HTTP API.
    Http,
    /// ringport's admin HTTP batch API (`POST /v1/publish/batch`).
    Batch,
    /// A ringport protocol client's PUBLISH.
    Publish,
    /// Redis `PUBLISH`, pipelined ([`super::redis`]).
    Redis,
    /// NATS core `PUB` ([`super::nats`]).
    Nats,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Batch => "batch",
            Via::Publish => "client",
            Via::Redis => "redis",
            Via::Nats => "nats",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub via: Via,
    /// Admin API (Via::Http), the gateway (Via::Publish) or the Redis/NATS server.
    pub addr: SocketAddr,
    pub rooms: Vec<String>,
    pub rate: f64,
    pub size: usize,
    /// HELLO token (Via::Publish).
    pub token: Vec<u8>,
    /// Stop after this long even if not told to (a bound, not the plan).
    pub max_duration: Duration,
}

/// Counters the publisher threads update.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Requests written.
    pub sent: AtomicU64,
    /// Accepted: HTTP 200 / PUBLISH_ACK OK.
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    /// Sum of the recipient counts the answers carried, and how many answers carried one
    /// (an HTTP push is answered once sequenced, without a count; Redis always says).
    pub recipients: AtomicU64,
    pub recipients_reported: AtomicU64,
    /// Largest lateness of a send against its scheduled time, microseconds (a publisher that
    /// cannot keep the rate, because the server takes requests slower, shows it here).
    pub max_lag_us: AtomicU64,
    /// Accepted messages per room index (for expected deliveries = accepted x members).
    pub accepted_per_room: Mutex<Vec<u64>>,
}

pub struct Publisher {
    stop: Arc<AtomicBool>,
    pub stats: Arc<PublisherStats>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Publisher {
    pub fn start(cfg: PublisherConfig) -> anyhow::Result<Publisher> {
        if cfg.rooms.is_empty() || !(cfg.rate > 0.0 && cfg.rate.is_finite()) {
            bail!("publisher needs rooms and a positive rate");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(PublisherStats {
            accepted_per_room: Mutex::new(vec![0; cfg.rooms.len()]),
            ..PublisherStats::default()
        });
        let stream = TcpStream::connect(cfg.addr)
            .with_context(|| format!("publisher connecting to {}", cfg.addr))?;
        stream.set_nodelay(true)?;
        let threads = match cfg.via {
            Via::Http => start_http(cfg, stream, stop.clone(), stats.clone())?,
            Via::Batch => start_batch(cfg, stream, stop.clone(), stats.clone())?,
            Via::Publish => start_publish(cfg, stream, stop.clone(), stats.clone())?,
            Via::Redis => super::redis::start_publisher(cfg, stream, stop.clone(), stats.clone())?,
            Via::Nats => super::nats::start_publisher(cfg, stream, stop.clone(), stats.clone())?,
        };
        Ok(Publisher {
            stop,
            stats,
            threads,
        })
    }

    /// Stops sending and waits (bounded) for outstanding answers.
    pub fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut first_err = None;
        for t in self.threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(anyhow::anyhow!("publisher thread panicked"));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Runs `send(k, more_due)` on the open-loop schedule until stopped or out of time.
/// `more_due` says message k+1 is already due too: a publisher behind its schedule may gather
/// the due messages into one write (as any pipelining client does) and write when it is false.
pub(super) fn paced(
    cfg: &PublisherConfig,
    stop: &AtomicBool,
    lag: &AtomicU64,
    mut send: impl FnMut(u64, bool) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let (rate, max) = (cfg.rate, cfg.max_duration);
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < max {
        let due = start + interval.mul_f64(k as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(5)));
            continue;
        }
        lag.fetch_max((now - due).as_micros() as u64, Ordering::Relaxed);
        let more_due = start + interval.mul_f64((k + 1) as f64) <= now;
        send(k, more_due)?;
        k += 1;
    }
    Ok(k)
}

/// Bytes a publisher gathers at most before it writes, even while more messages are due.
pub(super) const GATHER_MAX: usize = 64 * 1024;

fn start_http(
    cfg: PublisherConfig,
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    stats: Arc<PublisherStats>,
) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<()>>>> {
    let host = cfg.addr.to_string();
    let (rooms, size) = (cfg.rooms.clone(), cfg.size);
    let encode = move |k: u64, room: usize| {
        let p = payload::encode(k, size);
        let body = format!(
            "{{\"payload\":\"{}\"}}",
            std::str::from_utf8(&p).expect("ascii payload")
        );
        format!(
            "POST /v1/push/room/{} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            rooms[room],
            body.len()
        )
        .into_bytes()
    };
    let read = |r: &mut BufReader<TcpStream>| {
        let (status, body) = read_http_response(r)?;
        Ok(if status == 200 {
            Answer::Accepted {
                recipients: recipients(&body),
            }
        } else {
            Answer::Rejected
        })
    };
    start_pipelined(cfg, stream, stop, stats, "admin API", encode, read)
}

/// What the server answered to one pipelined request.
pub(super) enum Answer {
    /// Taken; `recipients` as the server reported them, if it did.
    Accepted {
        recipients: Option<u64>,
    },
    Rejected,
}

/// Request/answer publishing pipelined on one connection whose answers come in request order
/// (HTTP/1.1 keep-alive, Redis): a paced writer thread sends `encode(k, room)` for message k,
/// a reader thread takes `read` answers and credits them to the room they went to. At most
/// rate/10 (8..256) requests are outstanding, so a server that answers slower than the rate
/// makes the publisher late (reported as lag) instead of queueing minutes of requests.
pub(super) fn start_pipelined(
    cfg: PublisherConfig,
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    stats: Arc<PublisherStats>,
    server: &'static str,
    mut encode: impl FnMut(u64, usize) -> Vec<u8> + Send + 'static,
    read: impl FnMut(&mut BufReader<TcpStream>) -> std::io::Result<Answer> + Send + 'static,
) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<()>>>> {
    let reader = stream.try_clone()?;
    reader.set_read_timeout(Some(Duration::from_millis(200)))?;
    let done_sending = Arc::new(AtomicBool::new(false));
    // Which room each outstanding request went to, in order.
    let pending = Arc::new(Mutex::new(std::collections::VecDeque::<usize>::new()));
    let w = {
        let (stats, pending, done) = (stats.clone(), pending.clone(), done_sending.clone());
        std::thread::spawn(move || {
            let mut stream = stream;
            let depth = ((cfg.rate / 10.0) as usize).clamp(8, 256);
            // Requests gathered while more are due, written together.
            let mut out = Vec::new();
            let mut write = |out: &mut Vec<u8>| -> anyhow::Result<()> {
                stream
                    .write_all(out)
                    .with_context(|| format!("writing to the {server}"))?;
                out.clear();
                Ok(())
            };
            let r = paced(&cfg, &stop, &stats.max_lag_us, |k, more| {
                let room = (k as usize) % cfg.rooms.len();
                let req = encode(k, room);
                let wait_from = Instant::now();
                while pending.lock().unwrap_or_else(|e| e.into_inner()).len() >= depth {
                    // Gathered requests go out before waiting for their answers.
                    if !out.is_empty() {
                        write(&mut out)?;
                    }
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    if wait_from.elapsed() > Duration::from_secs(30) {
                        bail!("{server} stopped answering (pipeline of {depth} full for 30 s)");
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(room);
                out.extend_from_slice(&req);
                stats.sent.fetch_add(1, Ordering::Relaxed);
                if !more || out.len() >= GATHER_MAX {
                    write(&mut out)?;
                }
                Ok(())
            });
            let last = if out.is_empty() {
                Ok(())
            } else {
                write(&mut out)
            };
            done.store(true, Ordering::Relaxed);
            r.and(last).map(|_| ())
        })
    };
    let r = read_answers(
        reader,
        pending,
        done_sending,
        server,
        read,
        move |room: usize, answer| match answer {
            Answer::Accepted { recipients } => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = recipients {
                    stats.recipients.fetch_add(n, Ordering::Relaxed);
                    stats.recipients_reported.fetch_add(1, Ordering::Relaxed);
                }
                stats
                    .accepted_per_room
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())[room] += 1;
            }
            Answer::Rejected => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
        },
    );
    Ok(vec![w, r])
}

/// The reader of a pipelined publisher: takes answers in request order, handing each with
/// its request's entry of `pending` to `credit`, until sending stopped and nothing is
/// outstanding; once sending stopped it waits at most 10 s for the last answers.
fn read_answers<T, A>(
    reader: TcpStream,
    pending: Arc<Mutex<std::collections::VecDeque<T>>>,
    done_sending: Arc<AtomicBool>,
    server: &'static str,
    mut read: impl FnMut(&mut BufReader<TcpStream>) -> std::io::Result<A> + Send + 'static,
    mut credit: impl FnMut(T, A) + Send + 'static,
) -> JoinHandle<anyhow::Result<()>>
where
    T: Default + Send + 'static,
{
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut idle_since: Option<Instant> = None;
        loop {
            let outstanding = pending.lock().unwrap_or_else(|e| e.into_inner()).len();
            if done_sending.load(Ordering::Relaxed) && outstanding == 0 {
                return Ok(());
            }
            match read(&mut reader) {
                Ok(answer) => {
                    idle_since = None;
                    let entry = pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .pop_front()
                        .unwrap_or_default();
                    credit(entry, answer);
                }
                Err(e) if is_timeout(&e) => {
                    // Bounded wait for the last answers once sending stopped.
                    if done_sending.load(Ordering::Relaxed) {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(10) {
                            bail!("{server} left {outstanding} requests unanswered for 10 s");
                        }
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("reading the {server}'s answer")),
            }
        }
    })
}

pub(super) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Reads one HTTP/1.1 response with a Content-Length body: (status, body).
fn read_http_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String)> {
    let mut line = String::new();
    read_first_line(r, &mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        line.clear();
        read_line_patiently(r, &mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    let mut got = 0;
    while got < len {
        match r.read(&mut body[got..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The first line of an answer: a read timeout before any byte of it is returned (harmless,
/// nothing consumed); once it has begun, the rest is awaited over timeouts.
pub(super) fn read_first_line(
    r: &mut BufReader<TcpStream>,
    line: &mut String,
) -> std::io::Result<()> {
    match r.read_line(line) {
        Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
        Err(e) if !is_timeout(&e) || line.is_empty() => return Err(e),
        _ => {}
    }
    if !line.ends_with('\n') {
        read_line_patiently(r, line)?;
    }
    Ok(())
}

/// `read_line` that keeps going over read timeouts (mid-response).
fn read_line_patiently(r: &mut BufReader<TcpStream>, line: &mut String) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match r.read_line(line) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) if line.ends_with('\n') => return Ok(()),
            Ok(_) => {}
            Err(e) if is_timeout(&e) && Instant::now() < deadline => {}
            Err(e) => return Err(e),
        }
    }
}

/// `{"recipients": N, ...}` → N; `None` for an answer without a count.
fn recipients(body: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["recipients"].as_u64())
}

fn start_publish(
    cfg: PublisherConfig,
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    stats: Arc<PublisherStats>,
) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<()>>>> {
    // Handshake and joins, blocking, before the threads start.
    let mut conn = FrameStream::new(stream)?;
    conn.send(&Frame::Hello(Hello {
        token: Bytes::from(cfg.token.clone()),
        client_info: "ringport-bench-publisher/1".into(),
        resume: None,
    }))?;
    match conn.recv()? {
        Frame::Welcome(_) => {}
        other => bail!("publisher: expected WELCOME, got {other:?}"),
    }
    for (i, room) in cfg.rooms.iter().enumerate() {
        conn.send(&Frame::Join(RoomRequest {
            req_id: i as u32,
            room: room.clone(),
        }))?;
        loop {
            match conn.recv()? {
                Frame::RoomResult(r) if r.status == Status::OK => break,
                Frame::RoomResult(r) => bail!("publisher: JOIN {room} refused: {:?}", r.status),
                Frame::Ping { nonce } => conn.send(&Frame::Pong { nonce })?,
                _ => {}
            }
        }
    }
    let writer = Arc::new(Mutex::new(conn.stream.try_clone()?));
    conn.stream
        .set_read_timeout(Some(Duration::from_millis(200)))?;
    let done_sending = Arc::new(AtomicBool::new(false));
    let rooms = cfg.rooms.len();
    let w = {
        let (stats, writer, done) = (stats.clone(), writer.clone(), done_sending.clone());
        std::thread::spawn(move || {
            let mut buf = BytesMut::new();
            let write = |buf: &mut BytesMut| -> anyhow::Result<()> {
                writer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write_all(buf)
                    .context("publisher write")?;
                buf.clear();
                Ok(())
            };
            let r = paced(&cfg, &stop, &stats.max_lag_us, |k, more| {
                let room = (k as usize) % cfg.rooms.len();
                Frame::Publish(Publish {
                    room: cfg.rooms[room].clone(),
                    seq: k,
                    payload: Bytes::from(payload::encode(k, cfg.size)),
                })
                .encode(&mut buf)?;
                stats.sent.fetch_add(1, Ordering::Relaxed);
                if !more || buf.len() >= GATHER_MAX {
                    write(&mut buf)?;
                }
                Ok(())
            });
            let last = if buf.is_empty() {
                Ok(())
            } else {
                write(&mut buf)
            };
            done.store(true, Ordering::Relaxed);
            r.and(last).map(|_| ())
        })
    };
    let r = std::thread::spawn(move || {
        let mut idle_since: Option<Instant> = None;
        loop {
            let answered =
                stats.accepted.load(Ordering::Relaxed) + stats.rejected.load(Ordering::Relaxed);
            if done_sending.load(Ordering::Relaxed)
                && answered >= stats.sent.load(Ordering::Relaxed)
            {
                return Ok(());
            }
            match conn.try_recv() {
                Ok(Some(Frame::PublishAck(a))) => {
                    idle_since = None;
                    if a.status == Status::OK {
                        stats.accepted.fetch_add(1, Ordering::Relaxed);
                        stats
                            .accepted_per_room
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())[(a.seq as usize) % rooms] += 1;
                    } else {
                        stats.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Some(Frame::Ping { nonce })) => {
                    let b = Frame::Pong { nonce }.to_bytes()?;
                    writer
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .write_all(&b)?;
                }
                Ok(Some(Frame::Close { reason, text })) => {
                    bail!("publisher closed by the server: {reason:?} {text}")
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    if done_sending.load(Ordering::Relaxed) {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(10) {
                            bail!("publisher: PUBLISH_ACKs missing after 10 s");
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    });
    Ok(vec![w, r])
}

/// A blocking frame reader/writer over a std TcpStream.
struct FrameStream {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
}

impl FrameStream {
    fn new(stream: TcpStream) -> anyhow::Result<FrameStream> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(FrameStream {
            stream,
            buf: BytesMut::new(),
            decoder: Decoder::new(16 << 20),
        })
    }

    fn send(&mut self, f: &Frame) -> anyhow::Result<()> {
        self.stream.write_all(&f.to_bytes()?)?;
        Ok(())
    }

    fn recv(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some(f) = self.try_recv()? {
                return Ok(f);
            }
        }
    }

    /// One frame, or None after a read timeout.
    fn try_recv(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(f));
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("publisher: server closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The batch publisher (`--publisher batch`): the messages due on the open-loop schedule are
/// gathered into one `POST /v1/publish/batch` per `BATCH_TICK` (at most `MAX_BATCH` items),
/// pipelined on one keep-alive connection like the single-push publisher; each item's result
/// (`offset` = accepted, `error` = refused) is credited to its room.
fn start_batch(
    cfg: PublisherConfig,
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    stats: Arc<PublisherStats>,
) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<()>>>> {
    const BATCH_TICK: Duration = Duration::from_millis(1);
    const MAX_BATCH: u64 = 1000;
    const DEPTH: usize = 16;
    let host = cfg.addr.to_string();
    let reader = stream.try_clone()?;
    reader.set_read_timeout(Some(Duration::from_millis(200)))?;
    let done_sending = Arc::new(AtomicBool::new(false));
    // The rooms of each outstanding request's items, in order.
    let pending = Arc::new(Mutex::new(std::collections::VecDeque::<Vec<usize>>::new()));
    let w = {
        let (stats, pending, done) = (stats.clone(), pending.clone(), done_sending.clone());
        std::thread::spawn(move || {
            let mut stream = stream;
            let start = Instant::now();
            let interval = Duration::from_secs_f64(1.0 / cfg.rate);
            let mut k = 0u64;
            let r = (|| {
                while !stop.load(Ordering::Relaxed) && start.elapsed() < cfg.max_duration {
                    let now = Instant::now();
                    let due = (now - start).as_secs_f64() * cfg.rate;
                    let due = (due as u64 + 1).min(k + MAX_BATCH);
                    if due <= k {
                        std::thread::sleep(BATCH_TICK);
                        continue;
                    }
                    let first_due = start + interval.mul_f64(k as f64);
                    stats.max_lag_us.fetch_max(
                        now.saturating_duration_since(first_due).as_micros() as u64,
                        Ordering::Relaxed,
                    );
                    let wait_from = Instant::now();
                    while pending.lock().unwrap_or_else(|e| e.into_inner()).len() >= DEPTH {
                        if stop.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        if wait_from.elapsed() > Duration::from_secs(30) {
                            bail!(
                                "admin API stopped answering (pipeline of {DEPTH} full for 30 s)"
                            );
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    let mut body = String::from("{\"items\":[");
                    let mut rooms = Vec::with_capacity((due - k) as usize);
                    for m in k..due {
                        let room = (m as usize) % cfg.rooms.len();
                        let p = payload::encode(m, cfg.size);
                        if m > k {
                            body.push(',');
                        }
                        body.push_str(&format!(
                            "{{\"room\":\"{}\",\"payload\":\"{}\"}}",
                            cfg.rooms[room],
                            std::str::from_utf8(&p).expect("ascii payload")
                        ));
                        rooms.push(room);
                    }
                    body.push_str("]}");
                    let n = rooms.len() as u64;
                    pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_back(rooms);
                    let req = format!(
                        "POST /v1/publish/batch HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    stream
                        .write_all(req.as_bytes())
                        .context("writing to the admin API")?;
                    stats.sent.fetch_add(n, Ordering::Relaxed);
                    k = due;
                }
                Ok(())
            })();
            done.store(true, Ordering::Relaxed);
            r
        })
    };
    let credit = move |rooms: Vec<usize>, (status, body): (u16, String)| {
        let results = (status == 200)
            .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
            .flatten();
        let results = results.as_ref().and_then(|v| v["results"].as_array());
        let mut per_room = stats
            .accepted_per_room
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (i, room) in rooms.into_iter().enumerate() {
            let ok = results
                .and_then(|r| r.get(i))
                .is_some_and(|item| item.get("offset").is_some());
            if ok {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                per_room[room] += 1;
            } else {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let r = read_answers(
        reader,
        pending,
        done_sending,
        "admin API",
        read_http_response,
        credit,
    );
    Ok(vec![w, r])
}
