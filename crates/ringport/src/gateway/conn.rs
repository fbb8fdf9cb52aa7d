//! Per-connection gateway state, kept by the shard in a `Vec` indexed by `ConnId::index()`.

use bytes::BytesMut;
use ringport_io::ConnId;
use ringport_proto::{Session, State};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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
    /// The last offset of `room:<room>` handed to the session ([`Position`]).
    pub last: Position,
}

/// Where a connection stands in one stream: the last offset handed to its session and the
/// epoch that offset belongs to. A live delivery at or below it *in the same epoch* is a
/// duplicate (replayed history overlapping live traffic) and dropped; an offset of another
/// epoch is always new: a stream that moved to another node of a cluster goes on in a new
/// epoch, and its offsets may start below what this connection was handed of the old one
/// (docs/architecture.md, "Owner crashed").
///
/// One `u64`, so a connection pays nothing for the epoch: the epoch as a 16-bit tag (its
/// halves folded) above a 48-bit offset. Two epochs with the same tag (1 in 65,536)
/// compare as one, which is the offset-only rule; an offset past 2^48 − 1 (2.8 × 10^14
/// messages in one epoch of one stream) is kept as 2^48 − 1, so every later one is new:
/// neither can hide a message that was never handed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Position(u64);

impl Position {
    const OFFSET_MASK: u64 = (1 << 48) - 1;

    /// Both halves of the epoch folded into 16 bits: epochs are random (`random_epoch`), and
    /// two that differ in only one half never share a tag.
    fn tag(epoch: u32) -> u64 {
        u64::from((epoch ^ (epoch >> 16)) & 0xFFFF) << 48
    }

    /// Handed `offset` of `epoch`.
    pub fn at(epoch: u32, offset: u64) -> Position {
        Position(Self::tag(epoch) | offset.min(Self::OFFSET_MASK))
    }

    /// The last offset handed over (in its epoch).
    pub fn offset(self) -> u64 {
        self.0 & Self::OFFSET_MASK
    }

    /// Whether `offset` of `epoch` was not handed over yet: a later offset of the same
    /// epoch, or any offset of another.
    pub fn admits(self, epoch: u32, offset: u64) -> bool {
        self.0 & !Self::OFFSET_MASK != Self::tag(epoch) || offset > self.offset()
    }

    /// Moves to a snapshot's tail `(epoch, tail)` (resume, JOIN, WELCOME): the higher of
    /// the two in the same epoch, the snapshot's in another.
    pub fn raise(&mut self, epoch: u32, tail: u64) {
        if self.admits(epoch, tail) {
            *self = Position::at(epoch, tail);
        }
    }
}

/// What the gateway knows about one open connection.
///
/// One boxed `Conn` per connection (issue 16: a million of them): at most 232 bytes (232
/// now), so that glibc's malloc serves it from a 240-byte chunk (240 bytes took a 256-byte
/// one, 256 bytes a 272-byte one; docs/benchmarks.md, "The gateway's `Conn`, field by
/// field"). The
/// small facts are packed: yes/no facts in [`Flags`], the peer address as 16 bytes
/// ([`PeerIp`]), the close code and the counted buffer size in the fewest bytes their ranges
/// need, the joined rooms as an exact-size box.
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
    /// Capacity of `rx` plus the transport's held bytes as last counted in
    /// `ringport_receive_buffer_bytes` ([`Conn::count_held`]). 32 bits are enough: `rx` holds
    /// one incomplete frame (at most `protocol.max_payload` + 8 ≤ 16 MiB + 8, validated) and
    /// is compacted once its capacity passes twice its bytes plus a receive's worth; the
    /// transport holds one WebSocket frame header and one receive's unconsumed bytes, or TLS
    /// records waiting for their rest (at most one record). Were it ever to pass 4 GiB, the
    /// count saturates, and the same saturated value is subtracted later: the gauge
    /// under-counts that one connection but never drifts.
    pub rx_counted: u32,
    /// The token's user id (`None` for anonymous clients and before WELCOME), shared with
    /// the shard's user index, the per-user counts and the session registry.
    pub user: Option<Arc<str>>,
    /// What the token's `rooms` claim admits (nothing for anonymous clients, which may join
    /// any room through `anonymous`). The rest of the claims is not needed after WELCOME.
    pub grants: RoomGrants,
    /// Joined rooms; a handful per connection, so a slice beats a map.
    pub rooms: JoinedRooms,
    /// Client publish rate limit.
    pub bucket: TokenBucket,
    /// JOIN/LEAVE rate limit (`limits.room_ops_*`).
    pub room_ops: TokenBucket,
    /// JOIN/LEAVE requests answered RATE_LIMITED since the last one allowed; a whole burst
    /// of them (`limits.room_ops_burst`, a `u32`) closes the connection.
    pub room_ops_refused: u32,
    /// Control frame rate limit (`limits.control_frames_*`).
    pub controls: TokenBucket,
    /// The peer's address as counted in the per-IP table (not set: not counted, e.g.
    /// loopback or refused), released on close. Read and written through
    /// [`Conn::peer_ip`] and [`Conn::set_peer_ip`].
    peer_ip: PeerIp,
    /// Yes/no facts of this connection (see [`Flags`]).
    pub flags: Flags,
    /// The user inbox stream's last offset handed over.
    pub user_last: Position,
    /// The broadcast stream's last offset handed over.
    pub broadcast_last: Position,
    /// Where this connection is counted in `ringport_connections_open` (`None`: closing).
    pub gauge: Option<Gauge>,
    /// Frames received (for the connections API). The time of the last one, for the
    /// missed-heartbeat count, is the session's ([`Session::last_rx_ms`]).
    pub frames_in: u64,
    /// The protocol close reason the session chose, if it closed the connection itself
    /// (valid while [`Flags::CLOSE_CODE`] is set: every `u16` is a code a peer may send, so
    /// none is free to mean "none"). Read and written through [`Conn::close_code`] and
    /// [`Conn::set_close_code`].
    close_code: u16,
    /// Session clock (ms) the engine timer is armed for; avoids re-arming an unchanged timer.
    pub timer_at: u64,
    /// Resume results, replayed history and live pushes behind them, not yet handed to the
    /// session (sliced replay, `gateway/replay.rs`); empty (unallocated) otherwise.
    pub replay: super::replay::ReplayQueue,
    /// Native, WebSocket or TLS (`gateway/transport.rs`), decided by the first bytes.
    pub transport: super::transport::Transport,
}

bitflags::bitflags! {
    /// A connection's yes/no facts, one bit each (six `bool`s and two `Option` tags took 8
    /// bytes of padding-prone fields).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub(crate) struct Flags: u16 {
        /// Authenticated anonymously: may join any room, has no inbox.
        const ANONYMOUS = 1;
        /// Counted in the per-user table (released on close).
        const USER_COUNTED = 1 << 1;
        /// Closed by `DELETE /v1/connections/{id}` (counted as `kicked`).
        const KICKED = 1 << 2;
        /// Its send queue passed `engine.send_high_water`: it is being (or was) shed, and its
        /// close counts as `slow_consumer`.
        const SLOW_CONSUMER = 1 << 3;
        /// `ctx.close` was called; the engine is draining it and `on_close` follows.
        const CLOSING = 1 << 4;
        /// The first bytes have decided `transport` (before that it says `Native`); for TLS
        /// the transport inside is decided later, by the first plaintext bytes
        /// (`TlsConn::sniffed`).
        const SNIFFED = 1 << 5;
        /// `peer_ip` holds an address counted in the per-IP table.
        const PEER_COUNTED = 1 << 6;
        /// That address is IPv4 (its 4 bytes first in `peer_ip`).
        const PEER_V4 = 1 << 7;
        /// `close_code` holds the session's close reason.
        const CLOSE_CODE = 1 << 8;
        /// Closed for abuse (`GatewayHandler::charge_abuse`): its close reads at most a
        /// handshake's worth of what it still sends (`GatewayHandler::close_conn`).
        const ABUSIVE = 1 << 9;
    }
}

/// An IP address's bytes without its tag (16 bytes where `Option<IpAddr>` is 17; the tag is
/// in [`Flags`]).
#[derive(Debug, Clone, Copy, Default)]
struct PeerIp([u8; 16]);

/// The rooms a connection joined, as an exact-size box (16 bytes where a `Vec` is 24;
/// JOIN and LEAVE resize it, and they are rate limited and bounded by `rooms.max_rooms_per_connection`).
#[derive(Debug, Default)]
pub(crate) struct JoinedRooms(Box<[Joined]>);

impl JoinedRooms {
    /// Adds `j` (the box grows by exactly one).
    pub fn push(&mut self, j: Joined) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        v.reserve_exact(1);
        v.push(j);
        self.0 = v.into_boxed_slice();
    }

    /// Removes the room at `i`, the last one taking its place (the box shrinks by one).
    pub fn swap_remove(&mut self, i: usize) -> Joined {
        let mut v = std::mem::take(&mut self.0).into_vec();
        let j = v.swap_remove(i);
        self.0 = v.into_boxed_slice();
        j
    }

    /// All the rooms, leaving none.
    pub fn take(&mut self) -> Vec<Joined> {
        std::mem::take(&mut self.0).into_vec()
    }
}

impl std::ops::Deref for JoinedRooms {
    type Target = [Joined];
    fn deref(&self) -> &[Joined] {
        &self.0
    }
}

impl std::ops::DerefMut for JoinedRooms {
    fn deref_mut(&mut self) -> &mut [Joined] {
        &mut self.0
    }
}

impl Conn {
    pub fn new(id: ConnId, session: Session, buckets: [TokenBucket; 3]) -> Conn {
        let [bucket, room_ops, controls] = buckets;
        Conn {
            id,
            session,
            session_id: 0,
            rx: None,
            rx_counted: 0,
            user: None,
            grants: RoomGrants::none(),
            rooms: JoinedRooms::default(),
            bucket,
            room_ops,
            room_ops_refused: 0,
            controls,
            peer_ip: PeerIp::default(),
            flags: Flags::empty(),
            user_last: Position::default(),
            broadcast_last: Position::default(),
            gauge: Some(Gauge::Handshaking),
            frames_in: 0,
            close_code: 0,
            timer_at: u64::MAX,
            replay: super::replay::ReplayQueue::default(),
            transport: super::transport::Transport::Native,
        }
    }

    /// Whether flag `f` is set.
    pub fn is(&self, f: Flags) -> bool {
        self.flags.contains(f)
    }

    /// Sets flag `f`; `true` if it was not set before (the first `ctx.close`, say).
    pub fn mark(&mut self, f: Flags) -> bool {
        let first = !self.flags.contains(f);
        self.flags.insert(f);
        first
    }

    /// Clears flag `f`; `true` if it was set (a count to release, say).
    pub fn unmark(&mut self, f: Flags) -> bool {
        let was = self.flags.contains(f);
        self.flags.remove(f);
        was
    }

    /// The peer address counted in the per-IP table, if any.
    pub fn peer_ip(&self) -> Option<IpAddr> {
        if !self.is(Flags::PEER_COUNTED) {
            return None;
        }
        let b = self.peer_ip.0;
        Some(if self.is(Flags::PEER_V4) {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(b))
        })
    }

    /// Records (`Some`) or forgets (`None`) the address counted in the per-IP table.
    pub fn set_peer_ip(&mut self, ip: Option<IpAddr>) {
        self.flags.remove(Flags::PEER_COUNTED | Flags::PEER_V4);
        self.peer_ip = PeerIp::default();
        match ip {
            Some(IpAddr::V4(a)) => {
                self.peer_ip.0[..4].copy_from_slice(&a.octets());
                self.flags.insert(Flags::PEER_COUNTED | Flags::PEER_V4);
            }
            Some(IpAddr::V6(a)) => {
                self.peer_ip.0 = a.octets();
                self.flags.insert(Flags::PEER_COUNTED);
            }
            None => {}
        }
    }

    /// The protocol close reason the session chose, if it closed the connection itself.
    pub fn close_code(&self) -> Option<u16> {
        self.is(Flags::CLOSE_CODE).then_some(self.close_code)
    }

    /// Records the close reason the session chose.
    pub fn set_close_code(&mut self, code: u16) {
        self.close_code = code;
        self.flags.insert(Flags::CLOSE_CODE);
    }

    /// Records `held` bytes (receive buffer plus transport) as counted now; returns the
    /// count before and after, for `ringport_receive_buffer_bytes` (see `rx_counted`).
    pub fn count_held(&mut self, held: usize) -> (usize, usize) {
        let before = self.rx_counted as usize;
        self.rx_counted = u32::try_from(held).unwrap_or(u32::MAX);
        (before, self.rx_counted as usize)
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

    /// Takes `n` tokens whether or not they are there: what is missing becomes a debt that
    /// refills first (no token until it is paid), at most one `burst` of it.
    pub fn spend(&mut self, n: u32, rate: u32, burst: u32, now_ms: u64) {
        let now = Self::now_us(now_ms);
        let token_us = 1_000_000u64.div_ceil(u64::from(rate.max(1)));
        let fill_us = (u64::from(burst) * 1_000_000).div_ceil(u64::from(rate.max(1)));
        let empty = self
            .clamped(rate, burst, now)
            .saturating_add(u64::from(n).saturating_mul(token_us));
        self.empty_us = empty.min(now.saturating_add(fill_us));
    }

    /// Milliseconds (rounded up) until `n` tokens are there, at most one `burst`'s worth
    /// (0 if they are there now).
    pub fn wait_ms(&self, n: u32, rate: u32, burst: u32, now_ms: u64) -> u64 {
        let now = Self::now_us(now_ms);
        let need_us = (u64::from(n.min(burst)) * 1_000_000).div_ceil(u64::from(rate.max(1)));
        let ready = self.clamped(rate, burst, now).saturating_add(need_us);
        ready.saturating_sub(now).div_ceil(1000)
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: u32, burst: u32, now_ms: u64) -> bool {
        self.take_n(1, rate, burst, now_ms)
    }

    /// Takes `n` tokens if they are all there (none otherwise).
    pub fn take_n(&mut self, n: u32, rate: u32, burst: u32, now_ms: u64) -> bool {
        if self.level(rate, burst, now_ms) < u64::from(n) * 1000 {
            return false;
        }
        let now = Self::now_us(now_ms);
        // One token is 10^6 / rate microseconds of refill (rounded up: never generous).
        let token_us = 1_000_000u64.div_ceil(u64::from(rate.max(1)));
        self.empty_us = self.clamped(rate, burst, now) + u64::from(n) * token_us;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        let session = Session::new(Arc::new(ringport_proto::SessionConfig::default()), 0);
        Conn::new(ConnId::from_u64(1), session, [TokenBucket::full(1, 0); 3])
    }

    #[test]
    fn conn_fits_a_240_byte_malloc_chunk() {
        // One boxed `Conn` per connection (issue 16). glibc's malloc adds 8 bytes and rounds
        // to 16: 232 bytes take a 240-byte chunk, 240 bytes took 256 and 256 took 272. A
        // million connections save 16 MB per step; anything added here past 232 costs them
        // back.
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 232, "Conn grew to {size} bytes");
    }

    #[test]
    fn peer_ip_keeps_each_family_exactly() {
        let mut c = conn();
        assert_eq!(c.peer_ip(), None);
        for ip in [
            "10.1.2.3",
            "0.0.0.0",
            "::1",
            "::ffff:10.1.2.3",
            "2001:db8::7",
            "::",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            c.set_peer_ip(Some(ip));
            assert_eq!(c.peer_ip(), Some(ip), "{ip}");
        }
        // An IPv4 address and its IPv6-mapped form stay apart (the per-IP table keys them
        // apart).
        c.set_peer_ip(Some("10.1.2.3".parse().unwrap()));
        assert!(c.peer_ip().unwrap().is_ipv4());
        c.set_peer_ip(None);
        assert_eq!(c.peer_ip(), None);
        assert!(!c.is(Flags::PEER_V4) && !c.is(Flags::PEER_COUNTED));
    }

    #[test]
    fn close_code_keeps_every_u16_and_none() {
        let mut c = conn();
        assert_eq!(c.close_code(), None);
        for code in [0, 1, 4000, u16::MAX] {
            c.set_close_code(code);
            assert_eq!(c.close_code(), Some(code));
        }
    }

    #[test]
    fn flags_mark_and_unmark_once() {
        let mut c = conn();
        assert!(c.mark(Flags::CLOSING), "first close");
        assert!(!c.mark(Flags::CLOSING), "already closing");
        assert!(c.is(Flags::CLOSING) && !c.is(Flags::KICKED));
        assert!(!c.unmark(Flags::USER_COUNTED));
        c.mark(Flags::USER_COUNTED);
        assert!(c.unmark(Flags::USER_COUNTED), "released once");
        assert!(!c.unmark(Flags::USER_COUNTED));
        assert!(c.is(Flags::CLOSING), "other flags untouched");
    }

    #[test]
    fn held_count_saturates_consistently() {
        let mut c = conn();
        assert_eq!(c.count_held(4096), (0, 4096));
        assert_eq!(c.count_held(100), (4096, 100));
        // Beyond 32 bits (cannot happen: see `rx_counted`) the count saturates, and what is
        // added is what is later subtracted.
        let huge = u32::MAX as usize + 10;
        let (_, added) = c.count_held(huge);
        assert_eq!(added, u32::MAX as usize);
        assert_eq!(c.count_held(0), (added, 0));
    }

    #[test]
    fn joined_rooms_are_exact_size() {
        let mut c = conn();
        let room = |n: &str, pos| Joined {
            room: Arc::from(n),
            pos,
            last: Position::default(),
        };
        for (i, n) in ["a", "b", "c"].into_iter().enumerate() {
            c.rooms.push(room(n, i));
            assert_eq!(c.rooms.len(), i + 1);
        }
        assert_eq!(c.joined("b"), Some(1));
        assert_eq!(&*c.rooms.swap_remove(0).room, "a");
        assert_eq!(
            c.joined("c"),
            Some(0),
            "the last took the removed one's place"
        );
        c.rooms[0].last = Position::at(1, 7);
        let all = c.rooms.take();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].last.offset(), 7);
        assert!(c.rooms.is_empty());
    }

    #[test]
    fn a_position_drops_what_its_epoch_handed_over_and_admits_every_other_epoch() {
        let mut p = Position::at(7, 100);
        assert!(
            !p.admits(7, 99) && !p.admits(7, 100),
            "duplicates in its epoch"
        );
        assert!(p.admits(7, 101));
        assert!(
            p.admits(9, 1) && p.admits(9, 91),
            "another epoch: always new"
        );
        // A snapshot in the same epoch only moves it up; in another it replaces it.
        p.raise(7, 50);
        assert_eq!(p, Position::at(7, 100));
        p.raise(7, 120);
        assert_eq!(p, Position::at(7, 120));
        p.raise(9, 91);
        assert_eq!(p, Position::at(9, 91));
        assert!(!p.admits(9, 91) && p.admits(9, 92) && p.admits(7, 50));
        // Offsets past 48 bits saturate: nothing above is ever taken for a duplicate.
        let top = Position::at(9, u64::MAX);
        assert_eq!(top.offset(), (1 << 48) - 1);
        assert!(top.admits(9, 1 << 48) && top.admits(9, u64::MAX));
        // Epochs that differ in one half only never share a tag.
        for half in [0, 16] {
            let tags: std::collections::HashSet<u64> =
                (0..65_536u32).map(|e| Position::tag(e << half)).collect();
            assert_eq!(tags.len(), 65_536);
        }
    }

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
    fn wait_is_the_time_until_the_tokens_are_there() {
        // 10/s, burst 3: one token per 100 ms.
        let mut b = TokenBucket::full(3, 0);
        assert_eq!(b.wait_ms(3, 10, 3, 0), 0, "full");
        assert!(b.take_n(3, 10, 3, 0));
        assert_eq!(b.wait_ms(1, 10, 3, 0), 100);
        assert_eq!(b.wait_ms(2, 10, 3, 30), 170);
        assert_eq!(b.wait_ms(99, 10, 3, 0), 300, "at most one burst");
        let w = b.wait_ms(2, 10, 3, 30);
        assert!(!b.take_n(2, 10, 3, 30 + w - 1));
        assert!(
            b.take_n(2, 10, 3, 30 + w),
            "the tokens are there after the wait"
        );
    }

    #[test]
    fn spending_beyond_the_level_is_a_debt_of_at_most_one_burst() {
        // 10/s, burst 30: spending 20 of a full bucket leaves 10.
        let mut b = TokenBucket::full(30, 0);
        b.spend(20, 10, 30, 0);
        assert!((0..10).all(|_| b.take(10, 30, 0)));
        assert!(!b.take(10, 30, 0));
        // 10 more spent from empty: a second of debt before the next token.
        b.spend(10, 10, 30, 0);
        assert!(!b.take(10, 30, 1000), "the debt refills first");
        assert!(b.take(10, 30, 1100));
        // However much is spent, at most one burst (3 s here) is owed.
        let mut b = TokenBucket::full(30, 0);
        b.spend(1_000_000, 10, 30, 0);
        assert!(!b.has(10, 30, 3000));
        assert!(b.take(10, 30, 3100));
        assert!(b.is_full(10, 30, 6100));
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
