//! The shard's state machines on the fake backend (see [`crate::testing`]): accepting at the
//! cap, the close layering, the send queue and late events, without sockets, on a virtual
//! clock.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::testing::{FakeOp, FakeShard, FakeSock, SendOutcome};
use crate::{CloseReason, ConnId, ConnMap, Ctx, EngineConfig, Handler, Origin, SendError};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Open(ConnId),
    Data(ConnId, Vec<u8>),
    Close(ConnId, CloseReason),
    Timer(ConnId, Instant),
}

/// Records every callback; keeps per-connection state in a [`ConnMap`] as a gateway does.
#[derive(Default)]
struct Rec {
    events: Vec<Ev>,
    /// Bytes received per connection.
    conns: ConnMap<Vec<u8>>,
    /// Re-arm a timer this far ahead on open and on every firing (a heartbeat).
    heartbeat: Option<Duration>,
    /// Refuse every connection in `on_open` with `Ctx::abort` (an admission limit would).
    abort_on_open: bool,
    /// Pause receiving this long after each receive (a rate limit would).
    pause_on_data: Option<Duration>,
}

impl Handler for Rec {
    fn on_open(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _origin: Origin) {
        self.events.push(Ev::Open(conn));
        self.conns.insert(conn, Vec::new());
        if self.abort_on_open {
            ctx.abort(conn, CloseReason::Local);
            return;
        }
        if let Some(every) = self.heartbeat {
            ctx.set_timer(conn, ctx.now() + every);
        }
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, data: &[u8]) {
        self.events.push(Ev::Data(conn, data.to_vec()));
        if let Some(pause) = self.pause_on_data {
            ctx.pause_receiving(conn, ctx.now() + pause);
        }
        self.conns
            .get_mut(conn)
            .expect("data for a connection never opened or already closed")
            .extend_from_slice(data);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_, Self>, conn: ConnId, reason: CloseReason) {
        self.events.push(Ev::Close(conn, reason));
        assert!(
            self.conns.remove(conn).is_some(),
            "on_close twice: {conn:?}"
        );
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId) {
        self.events.push(Ev::Timer(conn, ctx.now()));
        if let Some(every) = self.heartbeat {
            ctx.set_timer(conn, ctx.now() + every);
        }
    }
}

fn cfg(cap: u32) -> EngineConfig {
    EngineConfig {
        max_connections_per_shard: cap,
        resolve_peer_addr: false,
        ..EngineConfig::default()
    }
}

fn shard(cap: u32) -> FakeShard<Rec> {
    let mut s = FakeShard::listening(cfg(cap), |_| Rec::default());
    s.settle();
    s
}

/// The connections opened since the handler had recorded `before` events.
fn opened_since(s: &mut FakeShard<Rec>, before: usize) -> Vec<ConnId> {
    s.handler().events[before..]
        .iter()
        .filter_map(|e| match e {
            Ev::Open(c) => Some(*c),
            _ => None,
        })
        .collect()
}

/// Accepts one connection from the fake backlog: its id and socket.
fn accept_one(s: &mut FakeShard<Rec>) -> (ConnId, FakeSock) {
    let before = s.handler().events.len();
    s.kernel().incoming();
    s.settle();
    let opened = opened_since(s, before);
    assert_eq!(opened.len(), 1, "one connection accepted");
    let sock = s
        .sock_of(opened[0])
        .expect("an open connection has a socket");
    (opened[0], sock)
}

/// A shard with one accepted connection and a send of `data` to it held in flight.
fn with_send_in_flight(data: &[u8]) -> (FakeShard<Rec>, ConnId, FakeSock) {
    let mut s = shard(8);
    let (a, sa) = accept_one(&mut s);
    s.kernel().hold_sends(true);
    s.with_ctx(|_, ctx| ctx.send_copy(a, data).unwrap());
    s.settle();
    (s, a, sa)
}

fn closes(s: &mut FakeShard<Rec>) -> Vec<(ConnId, CloseReason)> {
    s.handler()
        .events
        .iter()
        .filter_map(|e| match e {
            Ev::Close(c, r) => Some((*c, *r)),
            _ => None,
        })
        .collect()
}

/// The operations on `sock` (and accepts), in issue order, from `ops`.
fn on_sock(ops: &[FakeOp], sock: FakeSock) -> Vec<FakeOp> {
    ops.iter()
        .filter(|op| match op {
            FakeOp::Recv(s)
            | FakeOp::ShutdownWrite(s)
            | FakeOp::CancelSock(s)
            | FakeOp::CancelRecv(s)
            | FakeOp::Close(s)
            | FakeOp::Connect(s)
            | FakeOp::LookupPeer(s) => *s == sock,
            FakeOp::Send { sock: s, .. } => *s == sock,
            _ => false,
        })
        .cloned()
        .collect()
}

fn accepts(ops: &[FakeOp]) -> Vec<FakeOp> {
    ops.iter()
        .filter(|op| matches!(op, FakeOp::Accept { .. } | FakeOp::CancelAccept))
        .cloned()
        .collect()
}

fn sends(ops: &[FakeOp]) -> Vec<(Vec<u8>, usize)> {
    ops.iter()
        .filter_map(|op| match op {
            FakeOp::Send { data, chunks, .. } => Some((data.clone(), *chunks)),
            _ => None,
        })
        .collect()
}

#[test]
fn accept_pauses_at_the_cap_and_resumes_when_a_slot_frees() {
    let mut s = shard(2);
    let (a, sa) = accept_one(&mut s);
    let (_b, _) = accept_one(&mut s);
    s.kernel().incoming();
    s.settle();
    // Two slots, two connections: the third waits in the backlog and no accept is armed.
    assert_eq!(s.kernel().backlog(), 1);
    assert_eq!(s.slots_used(), 2);
    let ops = s.kernel().take_ops();
    assert_eq!(
        accepts(&ops),
        vec![FakeOp::Accept { multishot: false }; 2],
        "single accepts below the multishot headroom, none at the cap: {ops:?}"
    );

    // A graceful close holds the slot until the socket is closed: still paused.
    s.with_ctx(|_, ctx| ctx.close(a, CloseReason::Local));
    s.settle();
    assert_eq!(
        s.kernel().backlog(),
        1,
        "paused while the closing slot is held"
    );
    s.kernel().peer_fin(sa);
    s.settle();

    let ops = s.kernel().take_ops();
    let close_at = ops.iter().position(|op| *op == FakeOp::Close(sa));
    let accept_at = ops
        .iter()
        .position(|op| *op == FakeOp::Accept { multishot: false });
    assert!(
        close_at.is_some() && accept_at > close_at,
        "re-armed after the close freed the slot: {ops:?}"
    );
    assert_eq!(s.kernel().backlog(), 0);
    let c = match s.handler().events.last() {
        Some(Ev::Open(c)) => *c,
        other => panic!("the waiting connection was accepted: {other:?}"),
    };
    assert_eq!(c.index(), a.index(), "the freed slot is reused");
    assert_ne!(c, a, "under a new generation");
    assert_eq!(s.sock_of(c), Some(sa), "and the closed socket's number");
    assert_eq!(closes(&mut s), vec![(a, CloseReason::Local)]);
}

#[test]
fn multishot_accept_is_cancelled_and_rearmed_single_near_the_cap() {
    let headroom = crate::core::MULTISHOT_HEADROOM as u32;
    let mut s = shard(headroom + 2);
    for _ in 0..3 {
        s.kernel().incoming();
    }
    s.settle();
    assert_eq!(s.slots_used(), 3);
    // Free slots fell below the headroom at the third: the multishot accept is cancelled
    // (Cancelling), its -ECANCELED end re-arms in single mode.
    let ops = s.kernel().take_ops();
    assert_eq!(
        accepts(&ops),
        vec![
            FakeOp::Accept { multishot: true },
            FakeOp::CancelAccept,
            FakeOp::Accept { multishot: false },
        ],
        "{ops:?}"
    );
    assert_eq!(
        s.stats().accept_errors.iter().sum::<u64>(),
        0,
        "a cancel is no error"
    );
}

#[test]
fn graceful_close_drains_the_send_in_flight_then_fin_then_close() {
    let (mut s, a, sa) = with_send_in_flight(b"bye");
    s.with_ctx(|_, ctx| ctx.close(a, CloseReason::App(7)));
    s.settle();
    assert_eq!(
        closes(&mut s),
        vec![(a, CloseReason::App(7))],
        "told at once"
    );
    assert!(
        !s.kernel().fin_sent(sa),
        "no FIN while the send is in flight"
    );
    assert_eq!(
        s.with_ctx(|_, ctx| ctx.send_copy(a, b"late")),
        Err(SendError::NotConnected),
        "a closing connection takes no more sends"
    );

    s.kernel().script_send(sa, SendOutcome::Accept(3));
    s.settle();
    assert!(s.kernel().fin_sent(sa), "FIN once the queue drained");
    assert!(
        s.kernel().is_open(sa),
        "the socket stays until the peer's FIN"
    );
    s.kernel().peer_fin(sa);
    s.settle();

    let ops = on_sock(&s.kernel().take_ops(), sa);
    assert_eq!(
        ops,
        vec![
            FakeOp::Recv(sa),
            FakeOp::Send {
                sock: sa,
                data: b"bye".to_vec(),
                chunks: 1
            },
            FakeOp::ShutdownWrite(sa),
            FakeOp::Close(sa),
        ],
        "drain, FIN, close: nothing was in flight at the close, so no cancel"
    );
    assert_eq!(s.kernel().delivered(sa), b"bye");
    assert_eq!(s.slots_used(), 0);
    assert_eq!(closes(&mut s).len(), 1, "on_close exactly once");
}

#[test]
fn abort_cancels_what_is_in_flight_before_the_close() {
    let (mut s, a, sa) = with_send_in_flight(b"never completes");
    assert_eq!(s.kernel().sends_in_flight(sa), 1);
    s.with_ctx(|_, ctx| {
        ctx.send_copy(a, b"unsent").unwrap();
        ctx.abort(a, CloseReason::Local);
    });
    // `turn` panics if the socket were closed with the receive or the send in flight.
    s.settle();
    let ops = on_sock(&s.kernel().take_ops(), sa);
    let cancel = ops.iter().position(|op| *op == FakeOp::CancelSock(sa));
    let close = ops.iter().position(|op| *op == FakeOp::Close(sa));
    assert!(
        cancel.is_some() && close > cancel,
        "cancel, then close: {ops:?}"
    );
    assert_eq!(
        sends(&ops).len(),
        1,
        "the queued bytes were dropped, not sent: {ops:?}"
    );
    assert!(!s.kernel().is_open(sa));
    assert_eq!(
        s.kernel().inflight(),
        2,
        "only the doorbell and the accept remain"
    );
    assert_eq!(s.slots_used(), 0);
    assert_eq!(closes(&mut s), vec![(a, CloseReason::Local)]);

    // Late events for the closed connection: nothing reaches the socket or the handler.
    s.handle().send(a, Bytes::from_static(b"stale"));
    s.handle().close(a, CloseReason::Local);
    s.settle();
    assert!(s.kernel().take_ops().is_empty());
    assert_eq!(closes(&mut s).len(), 1);
}

#[test]
fn peer_reset_closes_with_its_reason_and_no_fin() {
    let mut s = shard(8);
    let (a, sa) = accept_one(&mut s);
    s.kernel().peer_error(sa, libc::ECONNRESET);
    s.settle();
    assert_eq!(closes(&mut s), vec![(a, CloseReason::PeerReset)]);
    assert!(!s.kernel().fin_sent(sa));
    assert!(!s.kernel().is_open(sa));
}

#[test]
fn short_writes_resume_where_the_kernel_stopped_with_one_send_in_flight() {
    let mut s = shard(8);
    let (a, sa) = accept_one(&mut s);
    s.kernel().hold_sends(true);
    let big = Bytes::from(vec![b'y'; 2000]);
    s.with_ctx(|_, ctx| {
        ctx.send_copy(a, &[b'x'; 100]).unwrap();
        ctx.send(a, big.clone()).unwrap();
    });
    s.settle();
    let first = sends(&s.kernel().take_ops());
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1, 2, "both chunks gathered in one send");
    assert_eq!(first[0].0.len(), 2100);

    // Short write; meanwhile more is queued, which must wait for the send in flight.
    s.kernel().script_send(sa, SendOutcome::Accept(150));
    s.with_ctx(|_, ctx| ctx.send_copy(a, b"zz").unwrap());
    s.settle();
    let next = sends(&s.kernel().take_ops());
    assert_eq!(next.len(), 1, "the rest in one new send: {next:?}");
    let mut want = vec![b'y'; 1950];
    want.extend_from_slice(b"zz");
    assert_eq!(
        next[0].0, want,
        "resumed at byte 150 with the new bytes gathered"
    );
    assert_eq!(s.kernel().sends_in_flight(sa), 1, "one send in flight");

    // Nothing taken (EAGAIN-like): the same bytes are offered again.
    s.kernel().script_send(sa, SendOutcome::Accept(0));
    s.settle();
    let again = sends(&s.kernel().take_ops());
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, want);

    s.kernel().hold_sends(false);
    s.settle();
    let mut all = vec![b'x'; 100];
    all.extend_from_slice(&big);
    all.extend_from_slice(b"zz");
    assert_eq!(
        s.kernel().delivered(sa),
        all.as_slice(),
        "every byte once, in order"
    );
    assert_eq!(s.with_ctx(|_, ctx| ctx.queued_bytes(a)), 0);
}

#[test]
fn a_failed_send_closes_the_connection_with_its_errno() {
    let mut s = shard(8);
    let (a, sa) = accept_one(&mut s);
    s.kernel().script_send(sa, SendOutcome::Fail(libc::EPIPE));
    s.with_ctx(|_, ctx| ctx.send_copy(a, b"x").unwrap());
    s.settle();
    assert_eq!(closes(&mut s), vec![(a, CloseReason::PeerReset)]);
    assert!(!s.kernel().is_open(sa));
    assert_eq!(s.slots_used(), 0);
}

#[test]
fn late_events_after_slot_reuse_never_reach_the_new_connection() {
    let mut s = shard(1);
    let (a, sa) = accept_one(&mut s);
    let at = s.now() + Duration::from_millis(100);
    s.with_ctx(|_, ctx| ctx.set_timer(a, at));
    s.with_ctx(|_, ctx| ctx.abort(a, CloseReason::Local));
    s.settle();
    let (b, sb) = accept_one(&mut s);
    assert_eq!((b.index(), sb), (a.index(), sa), "slot and socket reused");
    assert_ne!(a, b);

    // Everything still addressed to `a`: inbox sends and closes, direct sends, its timer.
    s.handle().send(a, Bytes::from_static(b"for a"));
    s.handle().close(a, CloseReason::Local);
    assert_eq!(
        s.with_ctx(|_, ctx| ctx.send_copy(a, b"for a")),
        Err(SendError::NotConnected)
    );
    s.with_ctx(|_, ctx| ctx.set_timer(a, ctx.now()));
    s.advance(Duration::from_millis(300));
    assert!(sends(s.kernel().ops()).is_empty(), "nothing sent to b");
    assert!(s.kernel().delivered(sb).is_empty());
    assert!(s.with_ctx(|_, ctx| ctx.is_open(b)));
    assert!(
        !s.handler()
            .events
            .iter()
            .any(|e| matches!(e, Ev::Timer(..))),
        "a's timer did not fire for b"
    );
    assert!(s.handler().conns.get(a).is_none(), "the map tells a from b");
    assert!(s.handler().conns.get(b).is_some());

    s.kernel().peer_sends(sb, b"for b");
    s.settle();
    assert_eq!(s.handler().conns.get(b).unwrap(), b"for b");
    assert_eq!(closes(&mut s), vec![(a, CloseReason::Local)]);
}

#[test]
fn heartbeat_timers_fire_on_the_virtual_clock() {
    let mut s = FakeShard::listening(cfg(8), |_| Rec {
        heartbeat: Some(Duration::from_secs(1)),
        ..Rec::default()
    });
    s.settle();
    let t0 = s.now();
    let (a, _) = accept_one(&mut s);
    s.advance(Duration::from_millis(3500));
    let fired: Vec<Duration> = s
        .handler()
        .events
        .iter()
        .filter_map(|e| match e {
            Ev::Timer(c, at) if *c == a => Some(*at - t0),
            _ => None,
        })
        .collect();
    assert_eq!(fired.len(), 3, "{fired:?}");
    let tick = EngineConfig::default().timer_tick;
    for (k, at) in fired.iter().enumerate() {
        let due = Duration::from_secs(k as u64 + 1);
        assert!(
            *at >= due && *at <= due + tick * (k as u32 + 1),
            "timer {k} at {at:?}, due {due:?}"
        );
    }
}

#[test]
fn idle_timeout_counts_from_the_last_receive() {
    let mut s = FakeShard::listening(
        EngineConfig {
            idle_timeout: Some(Duration::from_secs(5)),
            ..cfg(8)
        },
        |_| Rec::default(),
    );
    s.settle();
    let (a, sa) = accept_one(&mut s);
    s.advance(Duration::from_secs(3));
    s.kernel().peer_sends(sa, b"alive");
    s.settle();
    s.advance(Duration::from_millis(4900));
    assert!(closes(&mut s).is_empty(), "4.9 s after the last receive");
    s.advance(Duration::from_millis(200));
    assert_eq!(closes(&mut s), vec![(a, CloseReason::IdleTimeout)]);
}

/// A shard whose handler pauses a connection for 500 ms after each receive, with one
/// connection accepted (idle timeout 1 s).
fn pausing_shard() -> (FakeShard<Rec>, ConnId, FakeSock) {
    let mut s = FakeShard::listening(
        EngineConfig {
            idle_timeout: Some(Duration::from_secs(1)),
            ..cfg(8)
        },
        |_| Rec {
            pause_on_data: Some(Duration::from_millis(500)),
            ..Rec::default()
        },
    );
    s.settle();
    let (a, sa) = accept_one(&mut s);
    (s, a, sa)
}

#[test]
fn a_paused_connection_is_not_read_until_its_deadline() {
    let (mut s, a, sa) = pausing_shard();
    s.kernel().take_ops();
    s.kernel().peer_sends(sa, b"first");
    s.settle();
    assert_eq!(s.handler().conns.get(a).unwrap(), b"first");
    assert_eq!(
        on_sock(&s.kernel().take_ops(), sa),
        vec![FakeOp::CancelRecv(sa)],
        "the pause cancels the armed receive and arms none"
    );
    assert_eq!(s.stats().recv_pauses, 1);
    s.kernel().peer_sends(sa, b"second");
    s.settle();
    s.advance(Duration::from_millis(400));
    assert_eq!(
        s.handler().conns.get(a).unwrap(),
        b"first",
        "nothing is read while paused"
    );
    assert!(s.kernel().ops().is_empty(), "{:?}", s.kernel().ops());
    // Past the deadline (and past the idle timeout counted from the first receive: the
    // pause is not idleness).
    s.advance(Duration::from_millis(700));
    assert_eq!(s.handler().conns.get(a).unwrap(), b"firstsecond");
    assert_eq!(on_sock(s.kernel().ops(), sa)[0], FakeOp::Recv(sa));
    assert!(closes(&mut s).is_empty(), "{:?}", closes(&mut s));
    assert_eq!(s.stats().recv_pauses, 2, "the second receive paused again");
}

/// The peer's FIN ends `a`'s graceful close (`Local`) at once, not the linger.
fn closed_on_the_peers_fin(s: &mut FakeShard<Rec>, a: ConnId, sa: FakeSock) {
    s.kernel().peer_fin(sa);
    s.settle();
    assert_eq!(closes(s), vec![(a, CloseReason::Local)]);
    assert!(
        !s.kernel().is_open(sa),
        "closed on the peer's FIN, not the linger"
    );
}

#[test]
fn a_paused_connection_closed_gracefully_reads_for_the_peers_fin() {
    let (mut s, a, sa) = pausing_shard();
    s.kernel().peer_sends(sa, b"x");
    s.settle();
    s.kernel().take_ops();
    s.with_ctx(|_, ctx| ctx.close(a, CloseReason::Local));
    s.settle();
    assert!(
        on_sock(s.kernel().ops(), sa).contains(&FakeOp::Recv(sa)),
        "the close re-arms the receive: {:?}",
        s.kernel().ops()
    );
    closed_on_the_peers_fin(&mut s, a, sa);
    assert!(
        s.kernel().violations().is_empty(),
        "{:?}",
        s.kernel().violations()
    );
}

#[test]
fn a_close_right_behind_a_pause_still_reads_for_the_peers_fin() {
    let (mut s, a, sa) = pausing_shard();
    s.handler().pause_on_data = None;
    s.settle();
    s.kernel().take_ops();
    // The pause's cancel is still on its way when the close begins.
    s.with_ctx(|_, ctx| {
        let at = ctx.now() + Duration::from_secs(10);
        ctx.pause_receiving(a, at);
        ctx.close(a, CloseReason::Local);
    });
    s.settle();
    let ops = on_sock(s.kernel().ops(), sa);
    assert_eq!(
        ops.iter().filter(|op| **op == FakeOp::Recv(sa)).count(),
        1,
        "re-armed once the cancelled receive ended: {ops:?}"
    );
    closed_on_the_peers_fin(&mut s, a, sa);
}

#[test]
fn a_closing_peer_that_keeps_sending_is_cut_short_past_the_discard_budget() {
    let mut s = FakeShard::listening(
        EngineConfig {
            close_discard_max_bytes: 8 << 10,
            ..cfg(8)
        },
        |_| Rec::default(),
    );
    s.settle();
    let (a, sa) = accept_one(&mut s);
    let (b, sb) = accept_one(&mut s);
    s.with_ctx(|_, ctx| {
        ctx.close(a, CloseReason::Local);
        ctx.close(b, CloseReason::Local);
    });
    s.settle();
    assert!(s.kernel().fin_sent(sa) && s.kernel().fin_sent(sb));
    // Up to the budget (8 KiB; a receive counts in whole KiB): read, discarded, and the
    // close still waits for the peer's FIN.
    for _ in 0..7 {
        s.kernel().peer_sends(sa, &[0; 1024]);
        s.kernel().peer_sends(sb, &[0; 1024]);
        s.settle();
    }
    s.kernel().peer_sends(sa, &[0; 1000]);
    s.settle();
    assert!(s.kernel().is_open(sa), "8 KiB is within the budget");
    assert_eq!(s.stats().close_discard_cut, 0);
    // One byte more: closed now, not at the linger; the other one is untouched.
    s.kernel().peer_sends(sa, b"x");
    s.settle();
    assert!(!s.kernel().is_open(sa), "cut short");
    assert!(s.kernel().is_open(sb));
    assert_eq!(s.stats().close_discard_cut, 1);
    let ops = on_sock(&s.kernel().take_ops(), sa);
    let cancel = ops.iter().position(|op| *op == FakeOp::CancelSock(sa));
    let close = ops.iter().position(|op| *op == FakeOp::Close(sa));
    assert!(
        cancel.is_some() && close > cancel,
        "the receive cancelled, then the close: {ops:?}"
    );
    // The handler heard of each close once, with its reason.
    assert_eq!(
        closes(&mut s),
        vec![(a, CloseReason::Local), (b, CloseReason::Local)]
    );
    // A peer that stops sending gets its FIN wait as before.
    s.kernel().peer_fin(sb);
    s.settle();
    assert!(!s.kernel().is_open(sb));
    assert_eq!(s.stats().close_discard_cut, 1);
    assert_eq!(s.slots_used(), 0);
}

#[test]
fn a_close_with_a_smaller_discard_budget_is_cut_short_past_it() {
    let mut s = shard(8);
    let (a, sa) = accept_one(&mut s);
    let (b, sb) = accept_one(&mut s);
    s.with_ctx(|_, ctx| {
        ctx.close_discarding(a, CloseReason::Local, 2 << 10);
        ctx.close(b, CloseReason::Local);
    });
    s.settle();
    assert!(s.kernel().fin_sent(sa) && s.kernel().fin_sent(sb));
    // 2 KiB: read and discarded, the close still waits for the peer's FIN.
    for _ in 0..2 {
        s.kernel().peer_sends(sa, &[0; 1024]);
        s.kernel().peer_sends(sb, &[0; 1024]);
        s.settle();
    }
    assert!(s.kernel().is_open(sa), "2 KiB is within its budget");
    // One KiB more: `a` is cut short; `b` keeps the configured budget (1 MiB).
    s.kernel().peer_sends(sa, &[0; 1024]);
    s.kernel().peer_sends(sb, &[0; 1024]);
    s.settle();
    assert!(!s.kernel().is_open(sa), "cut short past 2 KiB");
    assert!(s.kernel().is_open(sb));
    assert_eq!(s.stats().close_discard_cut, 1);
    s.kernel().peer_fin(sb);
    s.settle();
    assert!(!s.kernel().is_open(sb));
    assert_eq!(s.slots_used(), 0);
}

#[test]
fn close_linger_bounds_the_wait_for_the_peers_fin() {
    let mut s = shard(8);
    let (a, sa) = accept_one(&mut s);
    s.with_ctx(|_, ctx| ctx.close(a, CloseReason::Local));
    s.settle();
    assert!(s.kernel().fin_sent(sa));
    let linger = EngineConfig::default().close_linger;
    s.advance(linger - Duration::from_millis(50));
    assert!(s.kernel().is_open(sa), "waiting for the peer's FIN");
    s.advance(Duration::from_millis(100));
    assert!(!s.kernel().is_open(sa), "closed at the linger");
    let ops = on_sock(&s.kernel().take_ops(), sa);
    let cancel = ops.iter().position(|op| *op == FakeOp::CancelSock(sa));
    let close = ops.iter().position(|op| *op == FakeOp::Close(sa));
    assert!(
        cancel.is_some() && close > cancel,
        "the receive cancelled first: {ops:?}"
    );
    assert_eq!(s.slots_used(), 0);
}

/// Many connections with bytes waiting and few receive buffers (a connect storm on a
/// descriptor table with a small buffer ring): a receive stopped on ENOBUFS is re-armed only
/// when a buffer is free for it, not every turn, so the work stays about one receive per
/// connection instead of growing with connections x turns (the 1,000,000-connection run
/// stalled at 530,000 with 30 million ENOBUFS completions).
#[test]
fn receives_waiting_for_buffers_are_rearmed_as_buffers_free() {
    const CONNS: usize = 60;
    let mut s = FakeShard::listening(
        EngineConfig {
            recv_buffers: 4,
            recv_buffer_size: 16,
            ..cfg(CONNS as u32 * 2)
        },
        |_| Rec::default(),
    );
    s.settle();
    let conns: Vec<(ConnId, FakeSock)> = (0..CONNS).map(|_| accept_one(&mut s)).collect();
    s.kernel().take_ops();
    for (i, (_, sock)) in conns.iter().enumerate() {
        s.kernel()
            .peer_sends(*sock, format!("hello {i:03}").as_bytes());
    }
    s.settle();
    for (i, (c, _)) in conns.iter().enumerate() {
        assert_eq!(
            s.handler().conns.get(*c).unwrap(),
            format!("hello {i:03}").as_bytes(),
            "every connection's bytes arrive"
        );
    }
    let recvs = s
        .kernel()
        .ops()
        .iter()
        .filter(|op| matches!(op, FakeOp::Recv(_)))
        .count();
    assert!(
        recvs <= CONNS,
        "{recvs} receives re-armed for {CONNS} connections that ran out of buffers once each"
    );
    assert!(
        s.stats().bufring_exhausted <= CONNS as u64,
        "{} ENOBUFS for {CONNS} connections",
        s.stats().bufring_exhausted
    );
}

#[test]
fn receives_wait_for_buffers_and_keep_the_byte_order() {
    let mut s = FakeShard::listening(
        EngineConfig {
            recv_buffers: 1,
            recv_buffer_size: 16,
            ..cfg(8)
        },
        |_| Rec::default(),
    );
    s.settle();
    let (a, sa) = accept_one(&mut s);
    let data: Vec<u8> = (0..100u8).collect();
    s.kernel().peer_sends(sa, &data);
    s.settle();
    assert_eq!(s.handler().conns.get(a).unwrap(), &data);
    assert!(
        s.stats().bufring_exhausted > 0,
        "ran out of buffers and re-armed"
    );
}

#[test]
fn shutdown_closes_every_connection_and_exits() {
    let mut s = shard(8);
    let (a, sa) = accept_one(&mut s);
    let (b, _) = accept_one(&mut s);
    s.shutdown();
    s.settle();
    assert!(s.kernel().fin_sent(sa));
    let mut got = closes(&mut s);
    got.sort_by_key(|(c, _)| *c);
    assert_eq!(
        got,
        vec![(a, CloseReason::Shutdown), (b, CloseReason::Shutdown)]
    );
    assert!(!s.exited(), "waiting for the peers' FINs");
    s.advance(EngineConfig::default().shutdown_timeout + Duration::from_millis(50));
    assert!(s.exited());
    assert_eq!(s.slots_used(), 0);
}

/// A multishot accept may complete between the turn that began the shutdown (and queued
/// the accept's cancel) and the next: that connection is closed gracefully too, unannounced,
/// so the shard exits on the peers' FINs instead of waiting the whole shutdown timeout.
#[test]
fn a_connection_accepted_after_the_shutdown_began_is_closed_too() {
    let mut s = shard(8);
    let (a, sa) = accept_one(&mut s);
    s.shutdown();
    s.turn();
    s.kernel().incoming();
    let late = s.kernel().accept_now().expect("the accept is still armed");
    s.settle();
    assert!(s.kernel().fin_sent(sa));
    assert!(
        s.kernel().fin_sent(late),
        "the connection accepted after the shutdown began gets our FIN"
    );
    s.kernel().peer_fin(sa);
    s.kernel().peer_fin(late);
    s.settle();
    assert!(s.exited(), "both peers answered: nothing left to wait for");
    assert!(!s.kernel().is_open(late));
    let opened: Vec<ConnId> = s
        .handler()
        .events
        .iter()
        .filter_map(|e| match e {
            Ev::Open(c) => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(opened, vec![a], "the late connection is never announced");
    assert_eq!(closes(&mut s), vec![(a, CloseReason::Shutdown)]);
    assert_eq!(s.slots_used(), 0);
}

/// The sockets of `ops`' sends, in issue order.
fn send_socks(ops: &[FakeOp]) -> Vec<FakeSock> {
    ops.iter()
        .filter_map(|op| match op {
            FakeOp::Send { sock, .. } => Some(*sock),
            _ => None,
        })
        .collect()
}

#[test]
fn a_fan_out_is_spread_over_turns_in_order_and_a_first_send_goes_ahead() {
    // A fan-out to 10 connections with a budget of 4 sends per turn, then an 11th
    // connection's own send (a WELCOME, say) queued after the first turn.
    let mut s = FakeShard::listening(
        EngineConfig {
            max_sends_per_turn: 4,
            ..cfg(16)
        },
        |_| Rec::default(),
    );
    s.settle();
    let conns: Vec<(ConnId, FakeSock)> = (0..11).map(|_| accept_one(&mut s)).collect();
    let (fan, (welcome, welcome_sock)) = (&conns[..10], conns[10]);
    s.kernel().take_ops();
    s.with_ctx(|_, ctx| {
        for (i, &(c, _)) in fan.iter().enumerate() {
            ctx.send_copy(c, format!("m1-{i};").as_bytes()).unwrap();
        }
    });
    s.turn();
    let first = send_socks(&s.kernel().take_ops());
    let fan_socks: Vec<FakeSock> = fan.iter().map(|&(_, k)| k).collect();
    assert_eq!(first, fan_socks[..4], "the first 4, in queue order");
    assert_eq!(s.stats().sends_deferred, 6, "6 connections wait");

    // The 11th connection's first send (a WELCOME), then a second message to every member,
    // while 6 members still wait: the first send goes ahead of them; members 0-3, served
    // last turn, queue behind the waiting ones (they must not overtake them turn after turn).
    s.with_ctx(|_, ctx| {
        ctx.send_copy(welcome, b"welcome").unwrap();
        for (i, &(c, _)) in fan.iter().enumerate() {
            ctx.send_copy(c, format!("m2-{i};").as_bytes()).unwrap();
        }
    });
    s.turn();
    let second = send_socks(&s.kernel().take_ops());
    assert_eq!(
        second,
        [welcome_sock, fan_socks[4], fan_socks[5], fan_socks[6]],
        "the first send did not wait for the fan-out; the rest in order"
    );
    s.turn();
    let third = send_socks(&s.kernel().take_ops());
    assert_eq!(
        third,
        [fan_socks[7], fan_socks[8], fan_socks[9], fan_socks[0]],
        "the oldest waiting first, then those served before"
    );

    s.settle();
    for (i, &(_, k)) in fan.iter().enumerate() {
        assert_eq!(
            s.kernel().delivered(k),
            format!("m1-{i};m2-{i};").as_bytes(),
            "member {i}: both messages once, in order"
        );
    }
    assert_eq!(s.kernel().delivered(welcome_sock), b"welcome");
    let st = s.stats();
    assert_eq!(st.msgs_out, 21);
    assert_eq!(
        st.sends, 15,
        "members 4-9 waited and got both their messages in one send: {st:?}"
    );
}

#[test]
fn a_shard_yields_the_core_between_the_chunks_of_a_fan_out() {
    // A fan-out to 10 connections at 4 sends per turn leaves sends waiting after its first
    // two turns: the shard yields after each of them (another shard on the same core gets
    // in between chunks instead of at the scheduler's tick), not after the last one, nor in
    // turns with nothing waiting; and not at all when `yield_between_chunks` is off.
    for on in [true, false] {
        let mut s = FakeShard::listening(
            EngineConfig {
                max_sends_per_turn: 4,
                yield_between_chunks: on,
                ..cfg(16)
            },
            |_| Rec::default(),
        );
        s.settle();
        let conns: Vec<(ConnId, FakeSock)> = (0..10).map(|_| accept_one(&mut s)).collect();
        s.settle();
        assert_eq!(s.stats().yields, 0, "nothing waited to be sent");
        s.kernel().take_ops();
        s.with_ctx(|_, ctx| {
            for &(c, _) in &conns {
                ctx.send_copy(c, b"m").unwrap();
            }
        });
        let mut chunks = Vec::new();
        for _ in 0..3 {
            s.turn();
            chunks.push(send_socks(&s.kernel().take_ops()).len());
        }
        assert_eq!(chunks, [4, 4, 2], "the fan-out in three chunks");
        s.settle();
        assert_eq!(
            s.stats().yields,
            if on { 2 } else { 0 },
            "yield_between_chunks {on}: a yield after each chunk that left sends waiting"
        );
        for &(_, k) in &conns {
            assert_eq!(s.kernel().delivered(k), b"m");
        }
    }
}

#[test]
fn a_turn_offers_the_kernel_at_most_its_send_bytes() {
    // Six connections with five 8 KiB messages queued each (peers that stopped reading while
    // large publishes went on), a budget of 64 sends but 20 KiB per turn: a turn's sends
    // carry at most the budget (a send gathers up to what is left of it, at least one
    // message), the rest wait in order, and everything arrives, in order, once.
    let mut s = FakeShard::listening(
        EngineConfig {
            max_sends_per_turn: 64,
            max_send_bytes_per_turn: 20 << 10,
            ..cfg(16)
        },
        |_| Rec::default(),
    );
    s.settle();
    let conns: Vec<(ConnId, FakeSock)> = (0..6).map(|_| accept_one(&mut s)).collect();
    s.kernel().take_ops();
    let message = |c: usize, m: usize| Bytes::from(vec![b'a' + (c * 5 + m) as u8; 8 << 10]);
    s.with_ctx(|_, ctx| {
        for (i, &(c, _)) in conns.iter().enumerate() {
            for m in 0..5 {
                ctx.send(c, message(i, m)).unwrap();
            }
        }
    });
    s.turn();
    let sends: Vec<(FakeSock, usize)> = s
        .kernel()
        .take_ops()
        .into_iter()
        .filter_map(|op| match op {
            FakeOp::Send { sock, data, .. } => Some((sock, data.len())),
            _ => None,
        })
        .collect();
    // 8 + 8 + 8 KiB reach 20 KiB: the first connection's send stops at three messages.
    assert_eq!(
        sends,
        [(conns[0].1, 24 << 10)],
        "one send of three messages"
    );
    assert_eq!(s.stats().sends_deferred, 5, "the other five wait");
    s.turn();
    let next = send_socks(&s.kernel().take_ops());
    assert_eq!(next, [conns[1].1], "the oldest waiting one next");

    s.settle();
    for (i, &(_, k)) in conns.iter().enumerate() {
        let want: Vec<u8> = (0..5).flat_map(|m| message(i, m).to_vec()).collect();
        assert_eq!(
            s.kernel().delivered(k),
            want,
            "connection {i}: all, in order, once"
        );
    }
}

#[test]
fn a_connection_refused_in_on_open_is_closed_with_nothing_to_cancel() {
    // An admission limit refuses a reconnect flood's connections in `on_open`: each costs
    // the accept and a close, with no receive armed and then cancelled in between.
    let mut s = FakeShard::listening(cfg(8), |_| Rec {
        abort_on_open: true,
        ..Rec::default()
    });
    s.settle();
    s.kernel().take_ops();
    s.kernel().incoming();
    s.settle();
    let ops = s.kernel().take_ops();
    assert!(
        ops.iter().any(|op| matches!(op, FakeOp::Close(_))),
        "closed: {ops:?}"
    );
    assert!(
        !ops.iter()
            .any(|op| matches!(op, FakeOp::Recv(_) | FakeOp::CancelSock(_))),
        "no receive armed, nothing cancelled: {ops:?}"
    );
    let closed = closes(&mut s);
    assert_eq!(closed.len(), 1, "on_close once: {closed:?}");
    assert_eq!(s.slots_used(), 0, "the slot is free again");
}

#[test]
fn a_handshake_during_a_fan_out_does_not_wait_for_its_chunks() {
    // A fan-out to 12 connections with a budget of 4 sends per turn. A connection accepted
    // while it is under way, whose peer has already sent its first bytes (a HELLO), has
    // them handled before the fan-out's next chunk: its peer-address lookup and then its
    // receive go to the kernel in control turns of their own. Only the chunk submitted in
    // the turn that found the accept leaves before (without control turns, one chunk per
    // step: three). Then an answer queued to it (a WELCOME) goes ahead.
    let mut s = FakeShard::listening(
        EngineConfig {
            max_sends_per_turn: 4,
            resolve_peer_addr: true,
            ..cfg(16)
        },
        |_| Rec::default(),
    );
    s.settle();
    let fan: Vec<ConnId> = (0..12).map(|_| accept_one(&mut s).0).collect();
    s.kernel().take_ops();
    s.with_ctx(|_, ctx| {
        for &c in &fan {
            ctx.send_copy(c, b"m").unwrap();
        }
    });
    s.turn();
    assert_eq!(
        send_socks(&s.kernel().take_ops()).len(),
        4,
        "the first chunk"
    );

    s.kernel().incoming();
    let sock = s.kernel().accept_now().expect("an armed accept");
    s.kernel().peer_sends(sock, b"hello");
    let before = s.handler().events.len();
    let mut fan_sends = 0;
    let mut turns = 0;
    let new = loop {
        turns += 1;
        assert!(
            turns < 10,
            "the new connection's bytes never reached the handler"
        );
        s.turn();
        fan_sends += send_socks(&s.kernel().take_ops()).len();
        let got = s.handler().events[before..].iter().find_map(|e| match e {
            Ev::Data(c, d) if d == b"hello" => Some(*c),
            _ => None,
        });
        if let Some(c) = got {
            break c;
        }
    };
    assert_eq!(
        fan_sends, 4,
        "one chunk of the fan-out between the accept and the handshake's bytes"
    );
    s.with_ctx(|_, ctx| ctx.send_copy(new, b"welcome").unwrap());
    s.turn();
    let next = send_socks(&s.kernel().take_ops());
    assert_eq!(
        (next.first(), next.len()),
        (Some(&sock), 4),
        "the answer goes ahead of the fan-out's sends still waiting"
    );
    s.settle();
    assert_eq!(s.stats().msgs_out, 13, "the fan-out finished");
    assert_eq!(s.kernel().delivered(sock), b"welcome");
}

/// One round of a fan-out: the same shared frame queued to every connection, by reference
/// ([`Ctx::send_shared`]) or by value ([`Ctx::send_messages`], a clone each). Not inlined, so
/// that callgrind can count it alone (`--toggle-collect`).
#[inline(never)]
fn fan_out_round(s: &mut FakeShard<Rec>, conns: &[ConnId], frame: &Bytes, borrowed: bool) {
    s.with_ctx(|_, ctx| {
        for &c in conns {
            if borrowed {
                ctx.send_shared(c, frame, 1).unwrap();
            } else {
                ctx.send_messages(c, frame.clone(), 1).unwrap();
            }
        }
    });
}

/// The engine's cost per delivery when a shared frame reaches connections faster than their
/// sends leave (a fan-out at 1,000 messages/s to 2,000 connections: each send carries tens
/// of messages): 2,000 connections, a 90-byte frame queued to each 40 times while their
/// sends are held in flight, then the sends complete; 20 such cycles. Count it with
/// `valgrind --tool=callgrind --toggle-collect='*fan_out_round*'
/// target/release/deps/ringport_io-HASH fan_out_push_cost --ignored` and divide by the
/// 1,600,000 deliveries; `RINGPORT_COST_OWNED=1` queues a clone per connection instead.
#[test]
#[ignore = "a cost measurement; run under callgrind"]
fn fan_out_push_cost() {
    const CONNS: usize = 2_000;
    let borrowed = std::env::var_os("RINGPORT_COST_OWNED").is_none();
    let mut s = shard(4_096);
    let before = s.handler().events.len();
    for _ in 0..CONNS {
        s.kernel().incoming();
    }
    s.settle();
    let conns = opened_since(&mut s, before);
    assert_eq!(conns.len(), CONNS);
    let frame = Bytes::from(vec![7u8; 90]);
    for _ in 0..20 {
        s.kernel().hold_sends(true);
        for _ in 0..40 {
            fan_out_round(&mut s, &conns, &frame, borrowed);
            s.turn();
        }
        s.kernel().hold_sends(false);
        s.settle();
        s.kernel().take_ops();
    }
    let sock = s.sock_of(conns[0]).expect("open");
    assert_eq!(s.kernel().delivered(sock).len(), 20 * 40 * 90);
}
