//! Redis pub/sub for the comparison runs (`fanout --protocol redis`): a subscriber state
//! machine ([`RedisSub`]: `SUBSCRIBE` every room, then `message` pushes) and a pipelined
//! `PUBLISH` publisher, both over the smallest RESP2 subset they need ([`parse`]).
//!
//! Why not the `redis` crate: the bench's subscribers are sans-IO state machines driven by the
//! ringport-io engine client (thousands of connections as direct descriptors on one shard
//! thread, one latency recorder per shard). The `redis` crate's pub/sub API owns its
//! connection and I/O (a blocking connection per subscriber, or a tokio task per async one),
//! so Redis's subscribers would run on a different client I/O model than ringport's, and the
//! comparison would measure the clients too. What the bench needs of RESP is a parser of
//! four reply types and one command encoder (below, with tests), which is cheaper to own than
//! to adapt.

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::client::Event;
use super::payload;
use super::publisher::{read_first_line, start_pipelined, Answer, PublisherConfig, PublisherStats};
use super::subscriber::{feed, record_delivery, Channels};

/// Largest bulk string or array the bench accepts from a server (a corrupt length must not
/// make it buffer without bound).
const MAX_LEN: usize = 16 << 20;
/// Deepest array nesting accepted (pub/sub replies are one level deep).
const MAX_DEPTH: usize = 4;

/// One RESP2 value, borrowing from the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Resp<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    /// `None` is the null bulk string.
    Bulk(Option<&'a [u8]>),
    /// `None` is the null array.
    Array(Option<Vec<Resp<'a>>>),
}

/// The input is not RESP2.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// Parses one value from the start of `buf`: `Ok(None)` when it is not complete yet,
/// otherwise the value and the bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Resp<'_>, usize)>, Malformed> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Resp<'_>, usize)>, Malformed> {
    let Some((kind, line, next)) = line_at(buf, pos) else {
        return Ok(None);
    };
    match kind {
        b'+' => Ok(Some((Resp::Simple(line), next))),
        b'-' => Ok(Some((Resp::Error(line), next))),
        b':' => Ok(Some((Resp::Int(int(line)?), next))),
        b'$' => {
            let Some(len) = length(line)? else {
                return Ok(Some((Resp::Bulk(None), next)));
            };
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(Malformed);
            }
            Ok(Some((Resp::Bulk(Some(&buf[next..end])), end + 2)))
        }
        b'*' => {
            let Some(n) = length(line)? else {
                return Ok(Some((Resp::Array(None), next)));
            };
            if depth >= MAX_DEPTH {
                return Err(Malformed);
            }
            let mut items = Vec::with_capacity(n.min(16));
            let mut at = next;
            for _ in 0..n {
                let Some((v, after)) = parse_at(buf, at, depth + 1)? else {
                    return Ok(None);
                };
                items.push(v);
                at = after;
            }
            Ok(Some((Resp::Array(Some(items)), at)))
        }
        _ => Err(Malformed),
    }
}

/// The type byte, the rest of the line and where the next line starts.
fn line_at(buf: &[u8], pos: usize) -> Option<(u8, &[u8], usize)> {
    let rest = buf.get(pos..)?;
    let cr = rest.windows(2).position(|w| w == b"\r\n")?;
    let (&kind, line) = rest[..cr].split_first()?;
    Some((kind, line, pos + cr + 2))
}

fn int(line: &[u8]) -> Result<i64, Malformed> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Malformed)
}

/// A bulk/array length: `None` for -1 (null), an error beyond [`MAX_LEN`].
fn length(line: &[u8]) -> Result<Option<usize>, Malformed> {
    match int(line)? {
        -1 => Ok(None),
        n if (0..=MAX_LEN as i64).contains(&n) => Ok(Some(n as usize)),
        _ => Err(Malformed),
    }
}

/// Appends a command (an array of bulk strings) to `out`.
pub fn command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One Redis pub/sub subscriber, sans-IO.
#[derive(Debug)]
pub struct RedisSub {
    /// Channels (the bench's rooms), ledgers, input.
    pub ch: Channels,
    /// `subscribe` confirmations received on this transport.
    subscribed: usize,
}

impl RedisSub {
    pub fn new(rooms: Vec<String>) -> RedisSub {
        RedisSub {
            ch: Channels::new(rooms),
            subscribed: 0,
        }
    }

    /// A fresh transport: `SUBSCRIBE` every room in one command.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        self.subscribed = 0;
        self.ch.reset();
        let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        args.extend(self.ch.rooms.iter().map(|r| r.as_bytes()));
        command(&args, out);
    }

    pub fn on_bytes(&mut self, data: &[u8], events: &mut Vec<Event>, now_ns: u64) {
        self.ch.now_ns = now_ns;
        let mut pending = std::mem::take(&mut self.ch.pending);
        feed(&mut pending, data, |src| self.consume(src, events));
        self.ch.pending = pending;
    }

    /// Handles every complete reply at the start of `src`; returns the bytes they took.
    fn consume(&mut self, src: &[u8], events: &mut Vec<Event>) -> usize {
        let mut at = 0;
        while !self.ch.done {
            match parse(&src[at..]) {
                Ok(Some((v, n))) => {
                    at += n;
                    self.on_value(v, events);
                }
                Ok(None) => break,
                Err(Malformed) => self.ch.malformed(events),
            }
        }
        at
    }

    fn on_value(&mut self, v: Resp<'_>, events: &mut Vec<Event>) {
        match v {
            Resp::Array(Some(items)) => match items.as_slice() {
                [Resp::Bulk(Some(b"message")), Resp::Bulk(Some(ch)), Resp::Bulk(Some(body))] => {
                    let room = String::from_utf8_lossy(ch);
                    record_delivery(&mut self.ch.streams, &room, body, events, self.ch.now_ns);
                }
                [Resp::Bulk(Some(b"subscribe")), _, Resp::Int(_)] => {
                    self.subscribed += 1;
                    if self.subscribed == 1 {
                        events.push(Event::Welcomed);
                    }
                    if self.subscribed == self.ch.rooms.len() {
                        events.push(Event::Ready { failed: 0 });
                    }
                }
                _ => {}
            },
            // An error reply (e.g. to SUBSCRIBE): this subscriber cannot go on.
            Resp::Error(_) => self.ch.refused(events),
            _ => {}
        }
    }
}

/// The publisher: `PUBLISH room payload`, pipelined; Redis answers each with the number of
/// subscribers that received it. The payload's sequence number is per room (message k goes to
/// room k % rooms as its (k / rooms)-th message), which the subscribers' ledgers check.
pub fn start_publisher(
    cfg: PublisherConfig,
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    stats: Arc<PublisherStats>,
) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<()>>>> {
    let (rooms, size) = (cfg.rooms.clone(), cfg.size);
    let encode = move |k: u64, room: usize| {
        let body = payload::encode(k / rooms.len() as u64, size);
        let mut out = Vec::with_capacity(body.len() + 64);
        command(&[b"PUBLISH", rooms[room].as_bytes(), &body], &mut out);
        out
    };
    let read = |r: &mut BufReader<TcpStream>| {
        let mut line = String::new();
        read_first_line(r, &mut line)?;
        Ok(match line.trim_end().strip_prefix(':') {
            Some(n) => Answer::Accepted {
                recipients: n.parse().ok(),
            },
            None => Answer::Rejected,
        })
    };
    start_pipelined(cfg, stream, stop, stats, "Redis server", encode, read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pubsub_replies_whole_and_in_pieces() {
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nr0\r\n:1\r\n";
        let (v, n) = parse(sub).unwrap().unwrap();
        assert_eq!(n, sub.len());
        assert_eq!(
            v,
            Resp::Array(Some(vec![
                Resp::Bulk(Some(b"subscribe")),
                Resp::Bulk(Some(b"r0")),
                Resp::Int(1)
            ]))
        );
        for cut in 0..sub.len() {
            assert_eq!(parse(&sub[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(b"$-1\r\n"), Ok(Some((Resp::Bulk(None), 5))));
        assert_eq!(parse(b"-ERR no\r\n"), Ok(Some((Resp::Error(b"ERR no"), 9))));
        assert_eq!(parse(b"?\r\n"), Err(Malformed));
        assert_eq!(parse(b"$3\r\nabcd\r\n"), Err(Malformed));
        assert_eq!(parse(b"$99999999999\r\n"), Err(Malformed));
        assert_eq!(
            parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"),
            Err(Malformed)
        );
    }

    #[test]
    fn subscriber_gets_ready_and_records_messages_split_anywhere() {
        let mut s = RedisSub::new(vec!["a".into(), "b".into()]);
        let mut out = Vec::new();
        s.start(&mut out);
        assert_eq!(out, b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n");
        let mut input = Vec::new();
        input.extend_from_slice(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
        input.extend_from_slice(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n");
        for seq in 0..3 {
            let body = payload::encode(seq, 40);
            command(&[b"message", b"b", &body], &mut input);
        }
        // Feed in 7-byte pieces: every reply crosses a boundary somewhere.
        let mut events = Vec::new();
        for piece in input.chunks(7) {
            s.on_bytes(piece, &mut events, payload::now_ns());
        }
        assert!(!s.ch.done);
        assert_eq!(events[0], Event::Welcomed);
        assert_eq!(events[1], Event::Ready { failed: 0 });
        let pushes = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Push {
                        latency: Some(_),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(pushes, 3);
        assert_eq!(s.ch.streams.len(), 1);
        assert_eq!(s.ch.streams[0].ledger.received.len(), 3);
        assert_eq!(s.ch.streams[0].ledger.holes(), 0);
        let mut events = Vec::new();
        s.on_bytes(b"-ERR wrong\r\n", &mut events, 0);
        assert!(s.ch.done);
        assert_eq!(events, vec![Event::ServerClose(0)]);
    }
}
