//! Per-connection gateway state, kept by the shard in a `Vec` indexed by `ConnId::index()`.

use bytes::BytesMut;
use ringport_io::ConnId;
use ringport_proto::{Session, State};

use std::sync::Arc;

use crate::auth::RoomGrants;
use crate::metrics::ConnState as Gauge;

/// One room this connection joined.
#[derive(Debug)]
pub(crate) struct Joined {
    /// Room name (without `room:`), shared with the shard's room index.
    pub room: Arc<str>,
    /// Position of this connection in the shard's member list of the room (O(1) leave).
    pub pos: usize,
    /// Highest offset of `room:<room>` handed to the session; lower or equal ones are
    /// duplicates and dropped.
    pub last: u64,
}

/// What the gateway knows about one open connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The full id; the slot index alone is reused after close.
    pub id: ConnId,
    /// The protocol state machine.
    pub session: Session,
    /// Session id given in WELCOME (0 before); keys publish dedupe.
    pub session_id: u64,
    /// Bytes of an incomplete trailing frame; grows only as bytes arrive, `None` (no buffer,
    /// not even its header) while empty, compacted when it holds far more capacity than bytes
    /// (`GatewayHandler::on_data`).
    pub rx: Option<Box<BytesMut>>,
    /// Capacity of `rx` as last counted in `ringport_receive_buffer_bytes`.
    pub rx_counted: usize,
    /// The token's user id (`None` for anonymous clients and before WELCOME), shared with
    /// the shard's user index, the per-user counts and the session registry.
    pub user: Option<Arc<str>>,
    /// What the token's `rooms` claim admits (nothing for anonymous clients, which may join
    /// any room through `anonymous`). The rest of the claims is not needed after WELCOME.
    pub grants: RoomGrants,
    /// Set once authenticated anonymously: may join any room, has no inbox.
    pub anonymous: bool,
    /// Joined rooms; a handful per connection, so a vector beats a map.
    pub rooms: Vec<Joined>,
    /// Client publish rate limit.
    pub bucket: TokenBucket,
    /// JOIN/LEAVE rate limit (`limits.room_ops_*`).
    pub room_ops: TokenBucket,
    /// JOIN/LEAVE requests answered RATE_LIMITED since the last one allowed; a whole burst
    /// of them closes the connection.
    pub room_ops_refused: u32,
    /// Control frame rate limit (`limits.control_frames_*`).
    pub controls: TokenBucket,
    /// The peer's address as counted in the per-IP table (`None`: not counted, e.g.
    /// loopback or refused), released on close.
    pub peer_ip: Option<std::net::IpAddr>,
    /// Counted in the per-user table (released on close).
    pub user_counted: bool,
    /// Highest offset of the user inbox stream delivered.
    pub user_last: u64,
    /// Highest offset of the broadcast stream delivered.
    pub broadcast_last: u64,
    /// Where this connection is counted in `ringport_connections_open` (`None`: closing).
    pub gauge: Option<Gauge>,
    /// Frames received (for the connections API).
    pub frames_in: u64,
    /// Session clock (ms) of the last inbound frame, for the missed-heartbeat count.
    pub last_rx_ms: u64,
    /// Closed by `DELETE /v1/connections/{id}` (counted as `kicked`).
    pub kicked: bool,
    /// The protocol close reason the session chose, if it closed the connection itself.
    pub close_code: Option<u16>,
    /// Its send queue passed `engine.send_high_water`: it is being (or was) shed, and its close
    /// counts as `slow_consumer`.
    pub slow_consumer: bool,
    /// `ctx.close` was called; the engine is draining it and `on_close` follows.
    pub closing: bool,
    /// Session clock (ms) the engine timer is armed for; avoids re-arming an unchanged timer.
    pub timer_at: u64,
    /// Resume results, replayed history and live pushes behind them, not yet handed to the
    /// session (sliced replay, `gateway/replay.rs`); empty (unallocated) otherwise.
    pub replay: super::replay::ReplayQueue,
    /// Native, WebSocket or TLS (`gateway/transport.rs`), decided by the first bytes.
    pub transport: super::transport::Transport,
    /// The first bytes have decided `transport` (before that it says `Native`); for TLS the
    /// transport inside is decided later, by the first plaintext bytes (`TlsConn::sniffed`).
    pub sniffed: bool,
}

impl Conn {
    pub fn new(id: ConnId, session: Session, buckets: [TokenBucket; 3], now_ms: u64) -> Conn {
        let [bucket, room_ops, controls] = buckets;
        Conn {
            id,
            session,
            session_id: 0,
            rx: None,
            rx_counted: 0,
            user: None,
            grants: RoomGrants::none(),
            anonymous: false,
            rooms: Vec::new(),
            bucket,
            room_ops,
            room_ops_refused: 0,
            controls,
            peer_ip: None,
            user_counted: false,
            user_last: 0,
            broadcast_last: 0,
            gauge: Some(Gauge::Handshaking),
            frames_in: 0,
            last_rx_ms: now_ms,
            kicked: false,
            close_code: None,
            slow_consumer: false,
            closing: false,
            timer_at: u64::MAX,
            replay: super::replay::ReplayQueue::default(),
            transport: super::transport::Transport::Native,
            sniffed: false,
        }
    }

    /// The receive reassembly buffer, allocated on first use.
    pub fn rx_mut(&mut self) -> &mut BytesMut {
        self.rx.get_or_insert_with(Box::default)
    }

    /// Bytes held in the receive reassembly buffer.
    pub fn rx_len(&self) -> usize {
        self.rx.as_ref().map_or(0, |b| b.len())
    }

    /// Capacity of the receive buffer (0 without one).
    pub fn rx_capacity(&self) -> usize {
        self.rx.as_ref().map_or(0, |b| b.capacity())
    }

    /// The user id, if authenticated with a token.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The gauge bucket the session's state belongs in.
    pub fn gauge_of(state: State) -> Option<Gauge> {
        match state {
            State::Handshaking | State::Authenticating => Some(Gauge::Handshaking),
            State::Active => Some(Gauge::Active),
            State::Sleeping => Some(Gauge::Sleeping),
            State::Draining | State::Closed => None,
        }
    }

    pub fn joined(&self, room: &str) -> Option<usize> {
        self.rooms.iter().position(|j| &*j.room == room)
    }
}

/// A token bucket: `rate` tokens per second (`rate` > 0: callers skip a limit of 0), at most
/// `burst` saved up. One `u64` (issue 16: three buckets per connection were 48 bytes): the
/// moment the bucket would have been empty, in microseconds of the session clock shifted by
/// [`TokenBucket::SHIFT`]; the level at `now` is what `rate` refilled since then, capped at
/// `burst`. A full bucket is the moment 0, so it needs neither the rate nor the time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    empty_us: u64,
}

impl TokenBucket {
    /// Added to every time: 2^62 µs (146,000 years) before the clock's zero is "long ago"
    /// for any `burst / rate` the configuration allows (at most 10^9 s).
    const SHIFT: u64 = 1 << 62;

    /// A full bucket (the arguments are the old representation's; kept so a caller reads
    /// the same).
    pub fn full(_burst: u32, _now_ms: u64) -> TokenBucket {
        TokenBucket { empty_us: 0 }
    }

    fn now_us(now_ms: u64) -> u64 {
        now_ms.saturating_mul(1000).saturating_add(Self::SHIFT)
    }

    /// The empty moment of an equivalent bucket that has not saved more than `burst`.
    fn clamped(&self, rate: u32, burst: u32, now_us: u64) -> u64 {
        // Microseconds an empty bucket takes to fill: burst * 1000 milli-tokens at rate/1000
        // milli-tokens per microsecond.
        let fill_us = (u64::from(burst) * 1_000_000).div_ceil(u64::from(rate.max(1)));
        self.empty_us.max(now_us.saturating_sub(fill_us))
    }

    /// Milli-tokens at `now_ms`.
    fn level(&self, rate: u32, burst: u32, now_ms: u64) -> u64 {
        let now = Self::now_us(now_ms);
        let elapsed = now.saturating_sub(self.clamped(rate, burst, now));
        let milli = u128::from(elapsed) * u128::from(rate) / 1000;
        milli.min(u128::from(burst) * 1000) as u64
    }

    /// Whether a token is there (none is taken).
    pub fn has(&self, rate: u32, burst: u32, now_ms: u64) -> bool {
        self.level(rate, burst, now_ms) >= 1000
    }

    /// Whether the bucket is full again (it remembers nothing a fresh one would not).
    pub fn is_full(&self, rate: u32, burst: u32, now_ms: u64) -> bool {
        self.level(rate, burst, now_ms) >= u64::from(burst) * 1000
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: u32, burst: u32, now_ms: u64) -> bool {
        if !self.has(rate, burst, now_ms) {
            return false;
        }
        let now = Self::now_us(now_ms);
        // One token is 10^6 / rate microseconds of refill (rounded up: never generous).
        let token_us = 1_000_000u64.div_ceil(u64::from(rate.max(1)));
        self.empty_us = self.clamped(rate, burst, now) + token_us;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut b = TokenBucket::full(3, 0);
        assert!((0..3).all(|_| b.take(10, 3, 0)));
        assert!(!b.take(10, 3, 0));
        assert!(!b.take(10, 3, 99));
        assert!(b.take(10, 3, 100), "10/s refills one token per 100 ms");
        assert!(!b.take(10, 3, 100));
        assert!((0..3).all(|_| b.take(10, 3, 10_000)), "capped at burst");
        assert!(!b.take(10, 3, 10_000));
    }

    #[test]
    fn bucket_is_one_word_and_exact_at_the_limits() {
        assert_eq!(std::mem::size_of::<TokenBucket>(), 8);
        // The largest burst and rate the configuration allows, and the slowest rate.
        let mut b = TokenBucket::full(1_000_000_000, 5);
        assert!(b.is_full(1_000_000_000, 1_000_000_000, 5));
        assert!(b.take(1_000_000_000, 1_000_000_000, 5));
        assert!(!b.is_full(1_000_000_000, 1_000_000_000, 5));
        assert!(b.is_full(1_000_000_000, 1_000_000_000, 6));
        let mut slow = TokenBucket::full(2, 0);
        assert!(slow.take(1, 2, 0) && slow.take(1, 2, 0));
        assert!(!slow.take(1, 2, 999));
        assert!(slow.take(1, 2, 1000), "1/s refills one token per second");
        assert!(
            slow.has(1, 2, 50 * 24 * 3_600_000),
            "refilled after 50 days idle"
        );
        assert!(slow.is_full(1, 2, u64::from(u32::MAX) + 5_000));
    }
}
