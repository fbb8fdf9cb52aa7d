//! [`PublishDedupe`]: drop client publishes that were already published.
//!
//! A client numbers its PUBLISH frames (`seq`) and, after a reconnect,
//! resends those it has no PUBLISH_ACK for with the same seq. The gateway
//! remembers, per session, the seqs it has published: everything below
//! `next` (the lowest seq not yet seen) plus a bounded set of seqs above it
//! (seen out of order). A resent publish is acknowledged but not published
//! again.
//!
//! Memory per session is bounded by `window`: a seq more than `window` ahead
//! of `next` slides the window forward, and the seqs it passes over count as
//! seen. A well-behaved client (seq +1 per publish, outbound queue no larger
//! than the window) never triggers that.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::dense_map::DenseMap;

/// Whether a publish is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: publish it, then acknowledge.
    New,
    /// Already published: acknowledge only.
    Duplicate,
}

/// Seen client seqs of one session.
#[derive(Debug, Clone, Default)]
pub struct PublishDedupe {
    /// Every seq below this has been seen.
    next: u64,
    /// Seqs ≥ `next + 1` seen out of order; at most `window` of them.
    ahead: BTreeSet<u64>,
}

impl PublishDedupe {
    /// Records `seq`; says whether it is new. `window` bounds memory.
    pub fn check(&mut self, seq: u64, window: u64) -> Seen {
        if self.seen(seq) {
            return Seen::Duplicate;
        }
        self.record(seq, window);
        Seen::New
    }

    /// Whether `seq` was already recorded.
    pub fn seen(&self, seq: u64) -> bool {
        seq < self.next || self.ahead.contains(&seq)
    }

    /// Records `seq` as published. `window` bounds memory.
    pub fn record(&mut self, seq: u64, window: u64) {
        if self.seen(seq) {
            return;
        }
        if seq == self.next {
            self.next += 1;
            while self.ahead.remove(&self.next) {
                self.next += 1;
            }
        } else {
            self.ahead.insert(seq);
            let window = window.max(1);
            if seq - self.next > window {
                // Slide: seqs left behind are treated as seen.
                self.next = seq - window;
                self.ahead = self.ahead.split_off(&self.next);
                while self.ahead.remove(&self.next) {
                    self.next += 1;
                }
            }
        }
    }

    /// Lowest seq not yet seen (everything below was published).
    pub fn next_expected(&self) -> u64 {
        self.next
    }

    /// Seqs held out of order.
    pub fn window_len(&self) -> usize {
        self.ahead.len()
    }
}

/// One session's entry: one per connection, so kept small (48 bytes with its key).
#[derive(Debug, Default)]
struct Entry {
    /// Seqs published; allocated at the session's first PUBLISH (most never publish).
    dedupe: Option<Box<PublishDedupe>>,
    /// Who opened the session (user id, `None` for anonymous); only the same
    /// owner may resume it, so nobody can pre-empt another's seqs. Shared with the
    /// connection's own copy of its user id.
    owner: Option<Arc<str>>,
    /// Last use (ms), for expiry.
    used: u64,
    /// The connection (`ConnId::as_u64`) currently holding the session, if any: one live
    /// connection per session, so a resume replaces it. A held session does not expire.
    live: Holder,
}

/// `Option<u64>` in 8 bytes: the id plus one, 0 for nobody (issue 16: one entry per
/// connection).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Holder(Option<std::num::NonZeroU64>);

impl Holder {
    fn of(conn: u64) -> Holder {
        Holder(std::num::NonZeroU64::new(conn.wrapping_add(1)))
    }
    fn get(self) -> Option<u64> {
        self.0.map(|v| v.get() - 1)
    }
}

/// One lock's share of the sessions: one per connection and per session in its resume
/// window, so a [`DenseMap`] (issue 16).
type Sessions = DenseMap<u64, Entry>;

/// Per-session dedupe state, kept across reconnects of the session until it
/// is idle for `idle_ms` (the resume window). Also the registry of session
/// ids a client may resume.
#[derive(Debug)]
pub struct PublishDedupes {
    shards: Box<[Mutex<Sessions>]>,
    window: u64,
}

impl PublishDedupes {
    /// A registry with `shards` locks and a per-session `window`.
    pub fn new(shards: usize, window: u64) -> Self {
        PublishDedupes {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(DenseMap::new()))
                .collect(),
            window,
        }
    }

    fn shard(&self, session: u64) -> &Mutex<Sessions> {
        &self.shards[(session % self.shards.len() as u64) as usize]
    }

    fn map(&self, session: u64) -> std::sync::MutexGuard<'_, Sessions> {
        self.shard(session)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records `seq` of `session` at `now`; says whether it is new.
    pub fn check(&self, session: u64, seq: u64, now: u64) -> Seen {
        let mut map = self.map(session);
        let e = map.get_or_insert_with(session, Entry::default);
        e.used = now;
        e.dedupe.get_or_insert_default().check(seq, self.window)
    }

    /// Whether `seq` of `session` was already published.
    pub fn seen(&self, session: u64, seq: u64) -> bool {
        self.map(session)
            .get(&session)
            .and_then(|e| e.dedupe.as_ref())
            .is_some_and(|d| d.seen(seq))
    }

    /// Records `seq` of `session` as published at `now`.
    pub fn record(&self, session: u64, seq: u64, now: u64) {
        let mut map = self.map(session);
        let e = map.get_or_insert_with(session, Entry::default);
        e.used = now;
        e.dedupe.get_or_insert_default().record(seq, self.window);
    }

    /// Registers a new session of `owner` (`""`: anonymous), held by connection `conn`.
    /// Returns false (and changes nothing) if the id is taken, so the caller draws another.
    /// Pass the connection's `Arc<str>` user id to share it rather than copy it.
    pub fn open(
        &self,
        session: u64,
        owner: impl AsRef<str> + Into<Arc<str>>,
        now: u64,
        conn: u64,
    ) -> bool {
        let mut map = self.map(session);
        if session == 0 || map.contains_key(&session) {
            return false;
        }
        map.insert(
            session,
            Entry {
                dedupe: None,
                owner: (!owner.as_ref().is_empty()).then(|| owner.into()),
                used: now,
                live: Holder::of(conn),
            },
        );
        true
    }

    /// Whether `owner` may continue `session` (it exists, was opened by the
    /// same owner, and has not expired); if so, touches it, makes `conn` its
    /// holder and returns the connection that held it before, which the
    /// caller closes with REPLACED (`Some(None)`: nobody held it).
    pub fn resume(&self, session: u64, owner: &str, now: u64, conn: u64) -> Option<Option<u64>> {
        match self.map(session).get_mut(&session) {
            Some(e) if e.owner.as_deref().unwrap_or("") == owner => {
                e.used = now;
                let old = std::mem::replace(&mut e.live, Holder::of(conn)).get();
                Some(old.filter(|&old| old != conn))
            }
            _ => None,
        }
    }

    /// Connection `conn` closed: if it still holds `session`, the session is
    /// free (and starts its resume window now).
    pub fn release(&self, session: u64, conn: u64, now: u64) {
        if let Some(e) = self.map(session).get_mut(&session) {
            if e.live.get() == Some(conn) {
                e.live = Holder::default();
                e.used = now;
            }
        }
    }

    /// Forgets sessions unused since `now - idle_ms`; returns how many.
    pub fn expire(&self, now: u64, idle_ms: u64) -> usize {
        let cutoff = now.saturating_sub(idle_ms);
        let mut n = 0;
        for s in self.shards.iter() {
            let mut map = s.lock().unwrap_or_else(|e| e.into_inner());
            let before = map.len();
            map.retain(|_, e| e.live.get().is_some() || e.used >= cutoff);
            n += before - map.len();
        }
        n
    }

    /// Sessions tracked.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_entry_is_small_and_holder_round_trips() {
        assert_eq!(std::mem::size_of::<(u64, Entry)>(), 48);
        assert_eq!(Holder::of(0).get(), Some(0));
        assert_eq!(Holder::of(u64::MAX - 1).get(), Some(u64::MAX - 1));
        assert_eq!(Holder::default().get(), None);
    }

    #[test]
    fn in_order_and_resent() {
        let mut d = PublishDedupe::default();
        for s in 0..5 {
            assert_eq!(d.check(s, 8), Seen::New);
        }
        for s in 0..5 {
            assert_eq!(d.check(s, 8), Seen::Duplicate, "resend of {s}");
        }
        assert_eq!(d.next_expected(), 5);
        assert_eq!(d.window_len(), 0);
    }

    #[test]
    fn out_of_order_fills_in() {
        let mut d = PublishDedupe::default();
        assert_eq!(d.check(1, 8), Seen::New);
        assert_eq!(d.check(3, 8), Seen::New);
        assert_eq!(d.check(3, 8), Seen::Duplicate);
        assert_eq!(d.next_expected(), 0);
        assert_eq!(d.check(0, 8), Seen::New);
        assert_eq!(d.next_expected(), 2);
        assert_eq!(d.check(2, 8), Seen::New);
        assert_eq!(d.next_expected(), 4);
        assert_eq!(d.window_len(), 0);
    }

    #[test]
    fn window_is_bounded() {
        let mut d = PublishDedupe::default();
        for s in (1..1_000).step_by(2) {
            d.check(s, 16);
            assert!(d.window_len() <= 17);
        }
        assert_eq!(d.check(999, 16), Seen::Duplicate);
        assert!(d.next_expected() >= 999 - 16);
    }

    #[test]
    fn registry_per_session_and_expiry() {
        let r = PublishDedupes::new(4, 64);
        assert_eq!(r.check(1, 0, 0), Seen::New);
        assert_eq!(r.check(2, 0, 10), Seen::New);
        assert_eq!(r.check(1, 0, 20), Seen::Duplicate);
        assert_eq!(r.expire(100, 85), 1, "session 2 idle since 10");
        assert_eq!(r.len(), 1);
        assert_eq!(r.check(2, 0, 100), Seen::New, "forgotten after expiry");
    }

    #[test]
    fn only_the_owner_resumes_and_seen_then_record() {
        let r = PublishDedupes::new(2, 64);
        assert!(r.open(7, "alice", 0, 100));
        assert!(!r.open(7, "bob", 0, 101), "id taken");
        assert_eq!(r.resume(7, "alice", 1, 102), Some(Some(100)));
        assert_eq!(r.resume(7, "mallory", 1, 103), None);
        assert_eq!(r.resume(8, "alice", 1, 104), None, "never issued");
        assert!(!r.seen(7, 1));
        r.record(7, 1, 2);
        assert!(r.seen(7, 1));
        assert!(!r.seen(7, 0));
    }

    #[test]
    fn one_holder_per_session_and_held_sessions_do_not_expire() {
        let r = PublishDedupes::new(2, 64);
        assert!(r.open(7, "", 0, 1));
        assert_eq!(r.resume(7, "", 10, 2), Some(Some(1)), "1 is replaced");
        assert_eq!(r.resume(7, "", 10, 2), Some(None), "2 already holds it");
        r.release(7, 1, 20);
        assert_eq!(r.expire(1_000, 100), 0, "held by 2: never expires");
        r.release(7, 2, 1_000);
        assert_eq!(
            r.resume(7, "", 1_050, 3),
            Some(None),
            "free: nobody to replace"
        );
        r.release(7, 3, 1_050);
        assert_eq!(r.expire(1_151, 100), 1);
    }
}
