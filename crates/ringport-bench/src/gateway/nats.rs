//! NATS core for the comparison runs (`fanout --protocol nats`): a subscriber state machine
//! ([`NatsSub`]: `CONNECT`, `SUB` every room, `PING`; ready at the `PONG`, then `MSG`s) and a
//! `PUB` publisher, over the part of the NATS client protocol they need ([`parse`]).
//!
//! Why not the `async-nats` crate: the bench's subscribers are sans-IO state machines driven
//! by the ringport-io engine client (thousands of connections as direct descriptors on one
//! shard thread, one latency recorder per shard). An `async_nats::Client` owns its connection
//! and runs its own tokio tasks (reader, writer, ping timer) per client, so 2,000 NATS
//! subscribers would be 2,000 clients on a different client I/O model than ringport's and
//! Redis's, and the comparison would measure the clients too. The subset the bench needs —
//! five server operations and four client ones — is cheaper to own (below, with tests).
//!
//! NATS core has no publish acknowledgement. The publisher runs without `verbose` (no `+OK`
//! per `PUB`, as real publishers do) and sends a `PING` every 100 ms and after its last `PUB`:
//! the server handles a connection's input in order, so a `PONG` proves every `PUB` before its
//! `PING` was taken, and only then are they counted as accepted.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::client::Event;
use super::payload;
use super::publisher::{is_timeout, paced, read_first_line, PublisherConfig, PublisherStats};
use super::subscriber::{feed, record_delivery, Channels};

/// Longest protocol line accepted (NATS's own default `max_control_line` is 4 KiB; INFO
/// may be longer on big clusters).
const MAX_LINE: usize = 64 * 1024;
/// Largest message payload accepted (NATS's default `max_payload` is 1 MiB).
const MAX_PAYLOAD: usize = 64 << 20;
/// How often the publisher asks the server to confirm what it sent (a PING).
const CONFIRM_EVERY: Duration = Duration::from_millis(100);
/// How long the publisher waits, after its last PUB, for confirmations that stopped coming (a
/// server far behind answers its PINGs only after the fan-out before them).
const CONFIRM_WAIT: Duration = Duration::from_secs(30);
/// CONNECT options of every bench connection: no `+OK` per operation.
const CONNECT: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"ringport-bench\",\"lang\":\"rust\",\"version\":\"1\"}\r\n";

/// One server operation, borrowing from the input.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerOp<'a> {
    Info,
    Msg {
        subject: &'a [u8],
        sid: u64,
        payload: &'a [u8],
    },
    Ping,
    Pong,
    Ok,
    Err(&'a [u8]),
}

/// The input is not the NATS protocol.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// Parses one server operation from the start of `buf`: `Ok(None)` when it is not complete
/// yet, otherwise the operation and the bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(ServerOp<'_>, usize)>, Malformed> {
    let Some(cr) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > MAX_LINE {
            Err(Malformed)
        } else {
            Ok(None)
        };
    };
    let line = &buf[..cr];
    let next = cr + 2;
    let (op, args) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let is = |name: &[u8]| op.eq_ignore_ascii_case(name);
    let parsed = if is(b"MSG") {
        // MSG <subject> <sid> [reply-to] <#bytes>
        let f: Vec<&[u8]> = args
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|s| !s.is_empty())
            .collect();
        if !(3..=4).contains(&f.len()) {
            return Err(Malformed);
        }
        let sid = number(f[1])?;
        let len = number(f[f.len() - 1])? as usize;
        if len > MAX_PAYLOAD {
            return Err(Malformed);
        }
        let end = next + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(Malformed);
        }
        let op = ServerOp::Msg {
            subject: f[0],
            sid,
            payload: &buf[next..end],
        };
        return Ok(Some((op, end + 2)));
    } else if is(b"INFO") {
        ServerOp::Info
    } else if is(b"PING") {
        ServerOp::Ping
    } else if is(b"PONG") {
        ServerOp::Pong
    } else if is(b"+OK") {
        ServerOp::Ok
    } else if is(b"-ERR") {
        ServerOp::Err(args)
    } else {
        return Err(Malformed);
    };
    Ok(Some((parsed, next)))
}

fn number(s: &[u8]) -> Result<u64, Malformed> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Malformed)
}

/// One NATS core subscriber, sans-IO.
#[derive(Debug)]
pub struct NatsSub {
    /// Subjects (the bench's rooms; room i has subscription id i + 1), ledgers, input.
    pub ch: Channels,
    /// INFO seen on this transport.
    welcomed: bool,
    /// The PONG after our SUBs arrived: every subscription is in place.
    ready: bool,
}

impl NatsSub {
    pub fn new(rooms: Vec<String>) -> NatsSub {
        NatsSub {
            ch: Channels::new(rooms),
            welcomed: false,
            ready: false,
        }
    }

    /// A fresh transport: CONNECT, one SUB per room, and a PING whose PONG says they are in
    /// place.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        self.ch.reset();
        self.welcomed = false;
        self.ready = false;
        out.extend_from_slice(CONNECT);
        for (i, room) in self.ch.rooms.iter().enumerate() {
            out.extend_from_slice(format!("SUB {room} {}\r\n", i + 1).as_bytes());
        }
        out.extend_from_slice(b"PING\r\n");
    }

    pub fn on_bytes(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
        now_ns: u64,
    ) {
        self.ch.now_ns = now_ns;
        let mut pending = std::mem::take(&mut self.ch.pending);
        feed(&mut pending, data, |src| self.consume(src, out, events));
        self.ch.pending = pending;
    }

    /// Handles every complete operation at the start of `src`; returns the bytes they took.
    fn consume(&mut self, src: &[u8], out: &mut Vec<u8>, events: &mut Vec<Event>) -> usize {
        let mut at = 0;
        while !self.ch.done {
            let op = match parse(&src[at..]) {
                Ok(Some((op, n))) => {
                    at += n;
                    op
                }
                Ok(None) => break,
                Err(Malformed) => {
                    self.ch.malformed(events);
                    break;
                }
            };
            match op {
                ServerOp::Msg {
                    subject,
                    sid,
                    payload,
                } => {
                    let room = match self.ch.rooms.get((sid as usize).wrapping_sub(1)) {
                        Some(r) => r.clone(),
                        None => String::from_utf8_lossy(subject).into_owned(),
                    };
                    record_delivery(&mut self.ch.streams, &room, payload, events, self.ch.now_ns);
                }
                ServerOp::Info if !self.welcomed => {
                    self.welcomed = true;
                    events.push(Event::Welcomed);
                }
                ServerOp::Ping => {
                    out.extend_from_slice(b"PONG\r\n");
                    events.push(Event::ServerPing);
                }
                ServerOp::Pong if !self.ready => {
                    self.ready = true;
                    events.push(Event::Ready { failed: 0 });
                }
                ServerOp::Err(_) => self.ch.refused(events),
                ServerOp::Info | ServerOp::Pong | ServerOp::Ok => {}
            }
        }
        at
    }
}

/// The publisher: `PUB room payload` at the rate, with a `PING` every [`CONFIRM_EVERY`] and
/// after the last one; each `PONG` confirms the `PUB`s before its `PING` (see the module
/// docs). The payload's sequence number is per room (message k goes to room k % rooms as its
/// (k / rooms)-th message), which the subscribers' ledgers check.
pub fn start_publisher(
    cfg: PublisherConfig,
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    stats: Arc<PublisherStats>,
) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<()>>>> {
    // Handshake, blocking, before the threads start: CONNECT + PING → PONG.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    writer.write_all(CONNECT)?;
    writer.write_all(b"PING\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .context("NATS publisher handshake")?;
        match line.trim_end() {
            "PONG" => break,
            "" => bail!("NATS server closed the publisher's connection"),
            l if l.starts_with("-ERR") => bail!("NATS publisher refused: {l}"),
            _ => {}
        }
    }
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))?;
    let writer = Arc::new(Mutex::new(writer));
    // Per PING in flight, in order: the PUBs per room it will confirm.
    let unconfirmed: Arc<Mutex<VecDeque<Vec<u64>>>> = Arc::default();
    let done_sending = Arc::new(AtomicBool::new(false));
    let rooms = cfg.rooms.len();
    let w = {
        let (stats, writer) = (stats.clone(), writer.clone());
        let (unconfirmed, done) = (unconfirmed.clone(), done_sending.clone());
        std::thread::spawn(move || {
            let mut batch = vec![0u64; rooms];
            let mut last_ping = Instant::now();
            let mut buf = Vec::new();
            // Queue the batch, then write its PING (in this order, under the writer lock, so
            // the reader never sees a PONG before its batch).
            let confirm = |batch: &mut Vec<u64>, buf: &mut Vec<u8>| -> anyhow::Result<()> {
                let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                let counts = std::mem::replace(batch, vec![0; rooms]);
                unconfirmed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(counts);
                buf.extend_from_slice(b"PING\r\n");
                w.write_all(buf).context("writing to the NATS server")?;
                buf.clear();
                Ok(())
            };
            let r = paced(&cfg, &stop, &stats.max_lag_us, |k, more| {
                let room = (k as usize) % rooms;
                let body = payload::encode(k / rooms as u64, cfg.size);
                buf.extend_from_slice(
                    format!("PUB {} {}\r\n", cfg.rooms[room], body.len()).as_bytes(),
                );
                buf.extend_from_slice(&body);
                buf.extend_from_slice(b"\r\n");
                batch[room] += 1;
                stats.sent.fetch_add(1, Ordering::Relaxed);
                if last_ping.elapsed() >= CONFIRM_EVERY {
                    last_ping = Instant::now();
                    confirm(&mut batch, &mut buf)?;
                } else if !more || buf.len() >= super::publisher::GATHER_MAX {
                    writer
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .write_all(&buf)
                        .context("writing to the NATS server")?;
                    buf.clear();
                }
                Ok(())
            });
            let last = confirm(&mut batch, &mut buf);
            done.store(true, Ordering::Relaxed);
            r.and(last).map(|_| ())
        })
    };
    let r = std::thread::spawn(move || {
        let mut waiting_since: Option<Instant> = None;
        loop {
            let pending = unconfirmed.lock().unwrap_or_else(|e| e.into_inner()).len();
            if done_sending.load(Ordering::Relaxed) && pending == 0 {
                return Ok(());
            }
            let mut line = String::new();
            match read_first_line(&mut reader, &mut line) {
                Ok(()) => {}
                Err(e) if is_timeout(&e) => {
                    if done_sending.load(Ordering::Relaxed) {
                        let since = *waiting_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > CONFIRM_WAIT {
                            bail!(
                                "NATS server left {pending} publisher PINGs unanswered for {} s",
                                CONFIRM_WAIT.as_secs()
                            );
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e).context("reading from the NATS server"),
            }
            match line.trim_end() {
                "PING" => writer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write_all(b"PONG\r\n")?,
                "PONG" => {
                    waiting_since = None;
                    let Some(counts) = unconfirmed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .pop_front()
                    else {
                        continue;
                    };
                    stats
                        .accepted
                        .fetch_add(counts.iter().sum(), Ordering::Relaxed);
                    let mut per_room = stats
                        .accepted_per_room
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    for (a, c) in per_room.iter_mut().zip(counts) {
                        *a += c;
                    }
                }
                l if l.starts_with("-ERR") => {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    bail!("NATS server: {l}");
                }
                _ => {}
            }
        }
    });
    Ok(vec![w, r])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_operations_whole_and_in_pieces() {
        let msg = b"MSG r0 1 5\r\nhello\r\n";
        let (op, n) = parse(msg).unwrap().unwrap();
        assert_eq!(n, msg.len());
        assert_eq!(
            op,
            ServerOp::Msg {
                subject: b"r0",
                sid: 1,
                payload: b"hello"
            }
        );
        for cut in 0..msg.len() {
            assert_eq!(parse(&msg[..cut]), Ok(None), "cut at {cut}");
        }
        let with_reply = b"MSG r0 2 inbox.1 0\r\n\r\n";
        assert!(matches!(
            parse(with_reply),
            Ok(Some((
                ServerOp::Msg {
                    sid: 2,
                    payload: b"",
                    ..
                },
                22
            )))
        ));
        assert_eq!(parse(b"PING\r\n"), Ok(Some((ServerOp::Ping, 6))));
        assert_eq!(parse(b"INFO {\"x\":1}\r\n"), Ok(Some((ServerOp::Info, 14))));
        assert_eq!(
            parse(b"-ERR 'Slow Consumer'\r\n"),
            Ok(Some((ServerOp::Err(b"'Slow Consumer'"), 22)))
        );
        assert_eq!(parse(b"WHAT\r\n"), Err(Malformed));
        assert_eq!(parse(b"MSG a 1 3\r\nabcd\r\n"), Err(Malformed));
        assert_eq!(parse(&vec![b'x'; MAX_LINE + 1]), Err(Malformed));
    }

    #[test]
    fn subscriber_gets_ready_at_pong_and_records_messages_split_anywhere() {
        let mut s = NatsSub::new(vec!["a".into(), "b".into()]);
        let mut out = Vec::new();
        s.start(&mut out);
        let sent = String::from_utf8(out.clone()).unwrap();
        assert!(sent.starts_with("CONNECT {"));
        assert!(sent.ends_with("SUB a 1\r\nSUB b 2\r\nPING\r\n"), "{sent}");
        let mut input = b"INFO {}\r\nPONG\r\n".to_vec();
        for seq in 0..3 {
            let body = payload::encode(seq, 40);
            input.extend_from_slice(format!("MSG b 2 {}\r\n", body.len()).as_bytes());
            input.extend_from_slice(&body);
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(b"PING\r\n");
        let (mut out, mut events) = (Vec::new(), Vec::new());
        for piece in input.chunks(5) {
            s.on_bytes(piece, &mut out, &mut events, payload::now_ns());
        }
        assert!(!s.ch.done);
        assert_eq!(out, b"PONG\r\n");
        assert_eq!(events[0], Event::Welcomed);
        assert_eq!(events[1], Event::Ready { failed: 0 });
        assert_eq!(*events.last().unwrap(), Event::ServerPing);
        assert_eq!(s.ch.streams.len(), 1);
        assert_eq!(s.ch.streams[0].stream.name(), "b");
        assert_eq!(s.ch.streams[0].ledger.received.len(), 3);
        let mut events = Vec::new();
        s.on_bytes(b"-ERR 'Slow Consumer'\r\n", &mut out, &mut events, 0);
        assert!(s.ch.done);
        assert_eq!(events, vec![Event::ServerClose(0)]);
    }
}
