//! The gateway's side of the admission and rate limits (issue 10, item 4): where a shard
//! consults the process-wide tables of `admission` and the per-connection buckets of
//! [`Conn`], and what the client is told when one bites.

use ringport_io::Ctx;
use ringport_proto::{CloseReason, Frame};

use super::GatewayHandler;
use crate::gateway::conn::{Conn, Flags, TokenBucket};
use crate::metrics::{limits::hit, Limit};

impl GatewayHandler {
    /// The per-connection buckets of a new connection: publish, JOIN/LEAVE, control frames.
    pub(super) fn fresh_buckets(&self, now: u64) -> [TokenBucket; 3] {
        let l = &self.shared.limits;
        [
            TokenBucket::full(self.shared.rooms.publish_burst, now),
            TokenBucket::full(l.room_ops_burst, now),
            TokenBucket::full(l.control_frames_burst, now),
        ]
    }

    /// A new connection: refused with POLICY while the process is over its memory budget,
    /// else counted against its address's limits or refused: with POLICY while the address
    /// has answers left (`limits.refusals_answered_per_ip_per_sec`), else closed at once
    /// without one (`true`: the caller leaves it alone).
    pub(super) fn admit_peer(&mut self, ctx: &mut Ctx<'_, Self>, c: &mut Conn, now: u64) -> bool {
        if self.refuse_overloaded(c, now) {
            return false;
        }
        let peers = &self.shared.peers;
        let Some(ip) = ctx
            .conn_info(c.id)
            .and_then(|i| i.peer)
            .map(|a| a.ip())
            .filter(|ip| peers.applies(*ip))
        else {
            return false;
        };
        match peers.admit(ip, now) {
            Ok(()) => c.set_peer_ip(Some(ip)),
            Err(refusal) => {
                refusal.count();
                if peers.answer_refusal(ip, now) {
                    c.session.close(CloseReason::POLICY, &refusal.text(), now);
                } else {
                    // Its address was told the reason within the last second: no CLOSE
                    // frame, FIN exchange or linger for a connection that is likely one of a
                    // reconnect flood (nothing was read from it; the kernel answers what it
                    // sent, if anything, with a reset).
                    hit(
                        Limit::RefusalUnanswered,
                        1,
                        &format_args!(
                            "{ip} refused again within a second: closed without CLOSE POLICY \
                             (limits.refusals_answered_per_ip_per_sec = {})",
                            self.shared.limits.refusals_answered_per_ip_per_sec
                        ),
                    );
                    c.mark(Flags::CLOSING);
                    ctx.abort(c.id, ringport_io::CloseReason::Local);
                    return true;
                }
            }
        }
        false
    }

    /// An authenticated HELLO of `user`: counted against the per-user cap (`true`), or
    /// rejected with POLICY (`false`). In a cluster the user's connections on the other
    /// nodes count too (`cluster/users.rs`), and the new count here is told to them.
    pub(super) fn admit_user(
        &mut self,
        c: &mut Conn,
        user: &std::sync::Arc<str>,
        now: u64,
    ) -> bool {
        let bus = self.shared.cluster.as_deref();
        let elsewhere = bus.map_or(0, |b| b.user_connections_elsewhere(user));
        match self.shared.user_counts.acquire(user, elsewhere) {
            Ok(here) => {
                if let (Some(bus), Some(_)) = (bus, here) {
                    bus.user_count_changed(user);
                }
                c.mark(Flags::USER_COUNTED);
                true
            }
            Err(refusal) => {
                refusal.count();
                let _ = c.session.reject(CloseReason::POLICY, &refusal.text(), now);
                false
            }
        }
    }

    /// A HELLO failed authentication: spends one of its address's failure tokens.
    pub(super) fn auth_failed(&self, c: &Conn, now: u64) {
        if let Some(ip) = c.peer_ip() {
            self.shared.peers.auth_failed(ip, now);
        }
    }

    /// The connection closed: its counts are released.
    pub(super) fn release_admission(&self, c: &mut Conn) {
        if let Some(ip) = c.peer_ip() {
            c.set_peer_ip(None);
            self.shared.peers.release(ip);
        }
        if c.unmark(Flags::USER_COUNTED) {
            if let Some(user) = c.user() {
                let here = self.shared.user_counts.release(user);
                if let (Some(bus), Some(_)) = (self.shared.cluster.as_deref(), here) {
                    bus.user_count_changed(user);
                }
            }
        }
    }

    /// Whether a JOIN or LEAVE may be served now. Beyond the rate it is answered
    /// RATE_LIMITED by the caller; a connection that sends a whole burst more while limited
    /// is closed with POLICY (answering a flood costs as much as serving it).
    pub(super) fn room_op_allowed(&self, c: &mut Conn, now: u64) -> bool {
        let l = &self.shared.limits;
        if l.room_ops_per_sec == 0 || c.room_ops.take(l.room_ops_per_sec, l.room_ops_burst, now) {
            c.room_ops_refused = 0;
            return true;
        }
        c.room_ops_refused += 1;
        hit(
            Limit::RoomOpRate,
            1,
            &format_args!(
                "JOIN/LEAVE over limits.room_ops_per_sec ({}) answered RATE_LIMITED",
                l.room_ops_per_sec
            ),
        );
        if c.room_ops_refused > l.room_ops_burst {
            let text = format!(
                "{} JOIN/LEAVE sent while rate limited (at most {} per second)",
                c.room_ops_refused, l.room_ops_per_sec
            );
            self.close_abusive(c, &text, now);
        }
        false
    }

    /// Whether control frame `frame` (PING, PONG, SLEEP, WAKE, ACK) may be handled; beyond
    /// `limits.control_frames_per_sec` the connection is closed with POLICY. Other frames
    /// always may.
    pub(super) fn control_allowed(&self, c: &mut Conn, frame: &Frame, now: u64) -> bool {
        let control = matches!(
            frame,
            Frame::Ping { .. }
                | Frame::Pong { .. }
                | Frame::Sleep { .. }
                | Frame::Wake
                | Frame::Ack(_)
        );
        !control || self.take_control(c, now)
    }

    /// Takes a token for one control frame (native, or a WebSocket ping or pong); beyond
    /// `limits.control_frames_per_sec` closes the connection with POLICY and returns false.
    pub(super) fn take_control(&self, c: &mut Conn, now: u64) -> bool {
        let l = &self.shared.limits;
        if l.control_frames_per_sec == 0
            || c.controls
                .take(l.control_frames_per_sec, l.control_frames_burst, now)
        {
            return true;
        }
        let text = format!(
            "control frames (PING, PONG, SLEEP, WAKE, ACK, WebSocket ping/pong) over {} per second",
            l.control_frames_per_sec
        );
        self.close_abusive(c, &text, now);
        false
    }

    /// Closes `c` with POLICY for a rate it flooded past (`control_rate`), and charges its
    /// address for the abuse.
    fn close_abusive(&self, c: &mut Conn, text: &str, now: u64) {
        hit(Limit::ControlRate, 1, &text);
        self.charge_abuse(c, "a rate it flooded past", now);
        c.session.close(CloseReason::POLICY, text, now);
    }

    /// `c` is closed for abuse (`what`: a rate flooded past, or bytes that break the
    /// protocol): its address pays `limits.handshakes_per_abusive_close` new-connection
    /// tokens, so a flooder that reconnects at once does not get a fresh connection (and a
    /// fresh answer) every time.
    pub(super) fn charge_abuse(&self, c: &mut Conn, what: &str, now: u64) {
        c.mark(Flags::ABUSIVE);
        let Some(ip) = c.peer_ip() else {
            return;
        };
        if self.shared.peers.abusive_close(ip, now) {
            hit(
                Limit::AbusiveClose,
                1,
                &format_args!(
                    "{ip} closed for abuse ({what}): it spent limits.handshakes_per_abusive_close ({}) new-connection tokens",
                    self.shared.limits.handshakes_per_abusive_close
                ),
            );
        }
    }
}
