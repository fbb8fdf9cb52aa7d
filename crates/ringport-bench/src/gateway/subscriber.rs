//! Which server the fan-out subscribers talk to (`--protocol`), behind one interface the
//! driver uses: ringport's native protocol ([`ClientConn`]), the same over WebSocket
//! ([`WsClient`]), Redis pub/sub ([`RedisSub`]) or NATS core ([`NatsSub`]).
//!
//! All three run on the same ringport-io engine client, with the same stamped payloads
//! ([`super::payload`]), the same per-stream ledgers and the same latency recorder, so a
//! comparison measures the servers, not three different clients. For Redis and NATS a room is
//! a channel/subject of the same name and the ledger's "offset" is the per-room sequence
//! number the publisher stamps into the payload (they have no offsets of their own).

use std::time::{Duration, Instant};

use ringport_proto::StreamName;

use super::client::{ClientConn, Event, Tracked};
use super::ledger::{Arrival, StreamLedger};
use super::nats::NatsSub;
use super::payload;
use super::redis::RedisSub;
use super::ws::WsClient;

/// The server the bench drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Ringport,
    /// ringport's protocol over WebSocket on the same port.
    RingportWs,
    Redis,
    Nats,
}

impl Protocol {
    /// ringport's protocol (with offsets, resume and the HTTP publisher), on either transport.
    pub fn is_ringport(self) -> bool {
        matches!(self, Protocol::Ringport | Protocol::RingportWs)
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Ringport => "ringport",
            Protocol::RingportWs => "ringport-ws",
            Protocol::Redis => "redis",
            Protocol::Nats => "nats",
        }
    }
}

/// One simulated subscriber of any [`Protocol`].
#[derive(Debug)]
pub enum Subscriber {
    /// Boxed: the protocol session is much larger than the Redis and NATS parsers.
    Ringport(Box<ClientConn>),
    RingportWs(Box<WsClient>),
    Redis(RedisSub),
    Nats(NatsSub),
}

impl Subscriber {
    pub fn new(protocol: Protocol, rooms: Vec<String>, now: Instant) -> Subscriber {
        match protocol {
            Protocol::Ringport => Subscriber::Ringport(Box::new(ClientConn::new(rooms, now))),
            Protocol::RingportWs => {
                Subscriber::RingportWs(Box::new(WsClient::new(ClientConn::new(rooms, now))))
            }
            Protocol::Redis => Subscriber::Redis(RedisSub::new(rooms)),
            Protocol::Nats => Subscriber::Nats(NatsSub::new(rooms)),
        }
    }

    /// The rooms (channels, subjects) this subscriber joins.
    pub fn rooms(&self) -> &[String] {
        match self {
            Subscriber::Ringport(c) => c.rooms(),
            Subscriber::RingportWs(c) => c.inner.rooms(),
            Subscriber::Redis(c) => &c.ch.rooms,
            Subscriber::Nats(c) => &c.ch.rooms,
        }
    }

    /// Per-stream delivery ledgers.
    pub fn streams(&self) -> &[Tracked] {
        match self {
            Subscriber::Ringport(c) => &c.streams,
            Subscriber::RingportWs(c) => &c.inner.streams,
            Subscriber::Redis(c) => &c.ch.streams,
            Subscriber::Nats(c) => &c.ch.streams,
        }
    }

    /// A transport is open: queue the handshake and subscriptions into `out`. `token` and
    /// `resume` are ringport's (Redis and NATS run without authentication in the bench).
    pub fn start(&mut self, token: &[u8], resume: bool, out: &mut Vec<u8>, now: Instant) {
        match self {
            Subscriber::Ringport(c) => c.start(token, resume, out, now),
            Subscriber::RingportWs(c) => c.start(token, resume, out, now),
            Subscriber::Redis(c) => c.start(out),
            Subscriber::Nats(c) => c.start(out),
        }
    }

    /// Feeds received bytes; replies go to `out`, observations to `events`.
    pub fn on_bytes(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
        now: Instant,
    ) {
        // One clock read per receive (which may carry hundreds of deliveries) for every
        // delivery's latency: the bench keeps up with millions of deliveries a second.
        let now_ns = payload::now_ns();
        match self {
            Subscriber::Ringport(c) => c.on_bytes(data, out, events, now, now_ns),
            Subscriber::RingportWs(c) => c.on_bytes(data, out, events, now, now_ns),
            Subscriber::Redis(c) => c.on_bytes(data, events, now_ns),
            Subscriber::Nats(c) => c.on_bytes(data, out, events, now_ns),
        }
    }

    /// The server ended the session or sent something undecodable: close the transport.
    pub fn is_done(&self) -> bool {
        match self {
            Subscriber::Ringport(c) => c.is_done(),
            Subscriber::RingportWs(c) => c.is_done(),
            Subscriber::Redis(c) => c.ch.done,
            Subscriber::Nats(c) => c.ch.done,
        }
    }

    /// When the next client heartbeat is due (ringport only; Redis needs none and NATS
    /// heartbeats are server PINGs, answered in `on_bytes`).
    pub fn next_ping(&self) -> Option<Instant> {
        match self {
            Subscriber::Ringport(c) => c.next_ping(),
            Subscriber::RingportWs(c) => c.inner.next_ping(),
            Subscriber::Redis(_) | Subscriber::Nats(_) => None,
        }
    }

    /// Sends a heartbeat if one is due; returns whether it did.
    pub fn on_timer(&mut self, out: &mut Vec<u8>, now: Instant) -> bool {
        match self {
            Subscriber::Ringport(c) => c.on_timer(out, now),
            Subscriber::RingportWs(c) => c.on_timer(out, now),
            Subscriber::Redis(_) | Subscriber::Nats(_) => false,
        }
    }
}

/// What a Redis or NATS subscriber keeps whatever its protocol.
#[derive(Debug)]
pub struct Channels {
    /// Channels or subjects to subscribe (the bench's rooms).
    pub rooms: Vec<String>,
    /// Per-room ledgers.
    pub streams: Vec<Tracked>,
    /// An error from the server or undecodable input: the transport should close.
    pub done: bool,
    /// Unparsed tail of the input (an incomplete message).
    pub pending: Vec<u8>,
    /// The clock (`payload::now_ns`) when the input being parsed arrived.
    pub now_ns: u64,
}

impl Channels {
    pub fn new(rooms: Vec<String>) -> Channels {
        Channels {
            now_ns: 0,
            rooms,
            streams: Vec::new(),
            done: false,
            pending: Vec::new(),
        }
    }

    /// A fresh transport: nothing pending, not done; the ledgers stay.
    pub fn reset(&mut self) {
        self.done = false;
        self.pending.clear();
    }

    /// The server sent something undecodable.
    pub fn malformed(&mut self, events: &mut Vec<Event>) {
        self.done = true;
        events.push(Event::ProtocolError);
    }

    /// The server answered with an error: this subscriber cannot go on.
    pub fn refused(&mut self, events: &mut Vec<Event>) {
        self.done = true;
        events.push(Event::ServerClose(0));
    }
}

/// Records one delivered bench payload on `room`'s ledger (Redis and NATS: the ledger's
/// offset is the payload's per-room sequence number) and reports it.
pub(super) fn record_delivery(
    streams: &mut Vec<Tracked>,
    room: &str,
    body: &[u8],
    events: &mut Vec<Event>,
    now_ns: u64,
) {
    let Some((ts, seq)) = payload::decode(body) else {
        // Not a bench payload: counted, with no latency and no ledger entry.
        events.push(Event::Push {
            arrival: Arrival::InOrder,
            latency: None,
        });
        return;
    };
    let latency = Some(Duration::from_nanos(now_ns.saturating_sub(ts)));
    let i = match streams.iter().position(|t| t.stream.name() == room) {
        Some(i) => i,
        None => {
            streams.push(Tracked {
                stream: StreamName::Room(room.to_owned()),
                epoch: 0,
                ledger: StreamLedger::default(),
            });
            streams.len() - 1
        }
    };
    let arrival = streams[i].ledger.record(seq);
    events.push(Event::Push { arrival, latency });
}

/// Runs `consume` over the unparsed input — straight over `data` when nothing was pending (the
/// common case: complete messages are never copied), else over `pending` + `data` — and keeps
/// in `pending` what it left (an incomplete message).
pub(super) fn feed(pending: &mut Vec<u8>, data: &[u8], consume: impl FnOnce(&[u8]) -> usize) {
    if pending.is_empty() {
        let used = consume(data).min(data.len());
        pending.extend_from_slice(&data[used..]);
    } else {
        pending.extend_from_slice(data);
        let used = consume(pending).min(pending.len());
        pending.drain(..used);
    }
}
