//! `rooms.batch_window_ms` on one shard, kept per room: which room messages go at once and
//! which wait, and when the waiting ones are due. Sans-IO (the caller passes the time), so
//! the rules are tested here on a virtual clock; `handler/deliver.rs` sends what it says.
//!
//! The window opens on the leading edge: a room message goes out at once if the shard sent
//! nothing of its room for a whole window, and the ones after it wait until the window since
//! that send has passed, then leave together (one gathered send per connection). Each room
//! has its own window, so a busy room being coalesced never holds a quiet room's message.
//! The table forgets a room once it is quiet again (nothing held, last sent a whole window
//! ago), at most once a second, so it holds only rooms sent to within about a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::publish::Delivery;

/// A room's window on one shard.
#[derive(Debug, Clone, Copy)]
struct RoomWindow {
    /// When the shard last sent the room's messages (at once or from the batch).
    sent: Instant,
    /// When its held messages go out (`sent` + the window); `None` while none are held.
    due: Option<Instant>,
}

impl RoomWindow {
    /// A window that restarts at `now`, with nothing held.
    fn restart(now: Instant) -> RoomWindow {
        RoomWindow {
            sent: now,
            due: None,
        }
    }
}

/// The held room messages of one shard and every recently sent room's window.
#[derive(Debug, Default)]
pub(crate) struct RoomBatch {
    /// Held messages, in arrival order.
    held: Vec<Arc<Delivery>>,
    windows: HashMap<Arc<str>, RoomWindow>,
    /// The earliest `due` among the windows, or earlier: a check that finds nothing due
    /// recomputes it.
    due: Option<Instant>,
    /// When `windows` is next pruned of quiet rooms.
    prune_at: Option<Instant>,
}

impl RoomBatch {
    /// Whether room message `d` must wait (it is then held) or goes now (its room's window
    /// restarts now; a message of no room goes now too). `name` interns the room for a new
    /// entry; `None` (no member here) keeps no entry, the message then reaches nobody on this
    /// shard.
    pub fn hold(
        &mut self,
        d: &Arc<Delivery>,
        name: impl FnOnce(&str) -> Option<Arc<str>>,
        now: Instant,
        window: Duration,
    ) -> bool {
        let Some(room) = d.room() else {
            return false;
        };
        match self.windows.get_mut(room) {
            Some(w) if w.due.is_some() || now.saturating_duration_since(w.sent) < window => {
                let due = *w.due.get_or_insert(w.sent + window);
                self.due = Some(self.due.map_or(due, |t| t.min(due)));
                self.held.push(Arc::clone(d));
                true
            }
            Some(w) => {
                *w = RoomWindow::restart(now);
                false
            }
            None => {
                if let Some(name) = name(room) {
                    self.windows.insert(name, RoomWindow::restart(now));
                }
                false
            }
        }
    }

    /// Moves into `out`, in arrival order, the held messages of every room whose window has
    /// passed (all of them, with `force`); those rooms' windows restart now.
    pub fn take_due(
        &mut self,
        now: Instant,
        window: Duration,
        force: bool,
        out: &mut Vec<Arc<Delivery>>,
    ) {
        self.prune(now, window);
        match self.due {
            Some(due) if force || now >= due => {}
            _ => return,
        }
        let mut next: Option<Instant> = None;
        for d in std::mem::take(&mut self.held) {
            match d.room().and_then(|r| self.windows.get_mut(r)) {
                Some(&mut RoomWindow { due: Some(due), .. }) if !force && due > now => {
                    next = Some(next.map_or(due, |t| t.min(due)));
                    self.held.push(d);
                }
                // Due: the room's first message restarts its window, the rest follow it.
                Some(w) => {
                    *w = RoomWindow::restart(now);
                    out.push(d);
                }
                None => out.push(d),
            }
        }
        self.due = next;
    }

    /// Takes the held messages of `d`'s stream, in order (an urgent message sends them before
    /// itself); if there were any, its room's window restarts now.
    pub fn take_stream(&mut self, d: &Delivery, now: Instant) -> Vec<Arc<Delivery>> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|b| b.stream == d.stream);
        self.held = rest;
        if !mine.is_empty() {
            if let Some(w) = d.room().and_then(|r| self.windows.get_mut(r)) {
                *w = RoomWindow::restart(now);
            }
        }
        mine
    }

    /// Forgets rooms that are quiet again, at most once a second (module docs).
    fn prune(&mut self, now: Instant, window: Duration) {
        if self.prune_at.is_some_and(|t| now < t) {
            return;
        }
        self.prune_at = Some(now + window.max(Duration::from_secs(1)));
        self.windows
            .retain(|_, w| w.due.is_some() || now.saturating_duration_since(w.sent) < window);
    }

    /// Rooms whose window is tracked.
    #[cfg(test)]
    fn rooms(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ringport_proto::{PushClass, StreamName};

    use crate::metrics::DeliveryKind;

    const W: Duration = Duration::from_millis(10);

    fn msg(room: &str, offset: u64, class: PushClass) -> Arc<Delivery> {
        Arc::new(Delivery {
            stream: StreamName::Room(room.to_owned()),
            epoch: 1,
            offset,
            frame: Bytes::new(),
            class,
            kind: DeliveryKind::Room,
            at: Instant::now(),
            tally: None,
        })
    }

    fn hold(b: &mut RoomBatch, d: &Arc<Delivery>, now: Instant) -> bool {
        b.hold(d, |room| Some(Arc::from(room)), now, W)
    }

    fn due(b: &mut RoomBatch, now: Instant) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        b.take_due(now, W, false, &mut out);
        out.iter()
            .map(|d| (d.room().unwrap().to_owned(), d.offset))
            .collect()
    }

    #[test]
    fn a_lone_message_goes_at_once_and_the_ones_behind_it_wait_for_the_window() {
        let t0 = Instant::now();
        let mut b = RoomBatch::default();
        assert!(!hold(&mut b, &msg("a", 1, PushClass::Room), t0));
        assert!(hold(&mut b, &msg("a", 2, PushClass::Room), t0 + W / 2));
        assert!(hold(&mut b, &msg("a", 3, PushClass::Room), t0 + W * 3 / 4));
        assert_eq!(due(&mut b, t0 + W - Duration::from_nanos(1)), []);
        assert_eq!(due(&mut b, t0 + W), [("a".into(), 2), ("a".into(), 3)]);
        // The flush restarted the window: the next message waits for it.
        assert!(hold(&mut b, &msg("a", 4, PushClass::Room), t0 + W * 3 / 2));
        assert_eq!(due(&mut b, t0 + W * 2), [("a".into(), 4)]);
        // A whole window after the last send, a message goes at once again.
        assert!(!hold(&mut b, &msg("a", 5, PushClass::Room), t0 + W * 3));
    }

    #[test]
    fn a_busy_room_does_not_hold_a_quiet_one() {
        let t0 = Instant::now();
        let mut b = RoomBatch::default();
        assert!(!hold(&mut b, &msg("busy", 1, PushClass::Room), t0));
        assert!(hold(&mut b, &msg("busy", 2, PushClass::Room), t0));
        assert!(!hold(&mut b, &msg("quiet", 1, PushClass::Room), t0));
        // Each room's held messages are due a window after that room's own send.
        assert!(!hold(&mut b, &msg("late", 1, PushClass::Room), t0 + W / 2));
        assert!(hold(&mut b, &msg("late", 2, PushClass::Room), t0 + W / 2));
        assert_eq!(due(&mut b, t0 + W), [("busy".into(), 2)]);
        assert_eq!(due(&mut b, t0 + W * 3 / 2), [("late".into(), 2)]);
    }

    #[test]
    fn force_and_an_urgent_message_take_what_is_held() {
        let t0 = Instant::now();
        let mut b = RoomBatch::default();
        for (room, o) in [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("a", 3)] {
            hold(&mut b, &msg(room, o, PushClass::Room), t0);
        }
        let urgent = msg("a", 4, PushClass::Urgent);
        let mine: Vec<u64> = b
            .take_stream(&urgent, t0)
            .iter()
            .map(|d| d.offset)
            .collect();
        assert_eq!(mine, [2, 3]);
        let mut out = Vec::new();
        b.take_due(t0, W, true, &mut out);
        assert_eq!(out.iter().map(|d| d.offset).collect::<Vec<_>>(), [2]);
        assert_eq!(out[0].room(), Some("b"));
    }

    #[test]
    fn quiet_rooms_are_forgotten_and_held_ones_kept() {
        let t0 = Instant::now();
        let mut b = RoomBatch::default();
        for i in 0..1_000 {
            hold(&mut b, &msg(&format!("r{i}"), 1, PushClass::Room), t0);
        }
        assert!(hold(&mut b, &msg("r0", 2, PushClass::Room), t0));
        assert_eq!(b.rooms(), 1_000);
        // The first check prunes, keeping the room with a held message (which then leaves,
        // being due); the next prune comes a second later.
        let mut out = Vec::new();
        b.take_due(t0 + W * 2, W, false, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            b.rooms(),
            1,
            "only r0, sent at the flush, is still in its window"
        );
        b.take_due(t0 + W * 2 + Duration::from_secs(1), W, false, &mut out);
        assert_eq!(b.rooms(), 0);
        // No member here (no name): nothing tracked, the message goes at once.
        assert!(!b.hold(&msg("x", 1, PushClass::Room), |_| None, t0, W));
        assert_eq!(b.rooms(), 0);
    }
}
