//! Server-side liveness tracking: tolerate, probe, close.
//!
//! Time is a `u64` of milliseconds on the caller's monotonic clock. With
//! interval `I`, `tolerated_misses = T`, probe interval `P = I / probe_divisor`
//! and `close_after_misses = C`, and `L` the time of the last inbound frame:
//!
//! - before `L + (T+1)·I` nothing happens (the first `T` missed intervals are
//!   tolerated, e.g. a phone whose radio was briefly off);
//! - at `L + (T+1)·I + k·P` (k = 0, 1, …) the server sends a PING probe;
//! - at `L + C·I` the connection is closed with `HEARTBEAT_TIMEOUT`.
//!
//! Any inbound frame sets `L = now` and cancels probing. With the defaults
//! (30 s, 2, 3, 4) probes go out at 90, 100 and 110 s and the close at 120 s.

use crate::session::SessionConfig;

/// What the heartbeat wants done at a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Nothing is due yet.
    Idle,
    /// Send a PING probe now.
    Probe,
    /// The peer is gone: close with `HEARTBEAT_TIMEOUT`.
    Expired,
}

/// Per-connection heartbeat state: 16 bytes, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    /// When the last inbound frame arrived; every deadline counts from here.
    last_rx: u64,
    /// Interval currently in force (the sleep interval while sleeping).
    interval_ms: u32,
    /// Probes already sent since `last_rx`; fixes the next probe's time.
    probes_sent: u32,
}

impl Heartbeat {
    pub(crate) fn new(now: u64, interval_ms: u32) -> Self {
        Heartbeat {
            last_rx: now,
            interval_ms,
            probes_sent: 0,
        }
    }

    /// An inbound frame arrived: the peer is alive.
    pub(crate) fn on_rx(&mut self, now: u64) {
        self.last_rx = self.last_rx.max(now);
        self.probes_sent = 0;
    }

    /// Switches to another interval (sleep/wake); counts from `now`.
    pub(crate) fn set_interval(&mut self, interval_ms: u32, now: u64) {
        self.interval_ms = interval_ms;
        self.on_rx(now);
    }

    pub(crate) fn interval_ms(&self) -> u32 {
        self.interval_ms
    }

    /// When the last inbound frame arrived (or the heartbeat started, or its interval
    /// changed).
    pub(crate) fn last_rx(&self) -> u64 {
        self.last_rx
    }

    fn after(&self, intervals: u32) -> u64 {
        self.last_rx
            .saturating_add(u64::from(intervals).saturating_mul(u64::from(self.interval_ms)))
    }

    fn probe_every(&self, cfg: &SessionConfig) -> u64 {
        u64::from(self.interval_ms / cfg.probe_divisor.max(1)).max(1)
    }

    /// When the connection is declared dead.
    pub(crate) fn close_at(&self, cfg: &SessionConfig) -> u64 {
        self.after(cfg.close_after_misses)
    }

    /// When the next probe is due, if one is due before the close.
    pub(crate) fn next_probe_at(&self, cfg: &SessionConfig) -> Option<u64> {
        let start = self.after(cfg.tolerated_misses.saturating_add(1));
        let at = start.saturating_add(u64::from(self.probes_sent) * self.probe_every(cfg));
        (at < self.close_at(cfg)).then_some(at)
    }

    /// The next instant `poll` will do something.
    pub(crate) fn deadline(&self, cfg: &SessionConfig) -> u64 {
        let close = self.close_at(cfg);
        self.next_probe_at(cfg).map_or(close, |p| p.min(close))
    }

    /// Advances to `now`. At most one probe is requested per call even if the
    /// caller was late; later probes stay on the original schedule.
    pub(crate) fn poll(&mut self, now: u64, cfg: &SessionConfig) -> Beat {
        if now >= self.close_at(cfg) {
            return Beat::Expired;
        }
        match self.next_probe_at(cfg) {
            Some(at) if now >= at => {
                let start = self.after(cfg.tolerated_misses.saturating_add(1));
                let due = (now - start) / self.probe_every(cfg) + 1;
                self.probes_sent = u32::try_from(due).unwrap_or(u32::MAX);
                Beat::Probe
            }
            _ => Beat::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule() {
        let cfg = SessionConfig::default();
        let mut hb = Heartbeat::new(1_000, 30_000);
        assert_eq!(hb.deadline(&cfg), 91_000);
        assert_eq!(hb.poll(90_999, &cfg), Beat::Idle);
        let mut probes = Vec::new();
        for t in (91_000..121_000).step_by(1_000) {
            if hb.poll(t, &cfg) == Beat::Probe {
                probes.push(t);
            }
        }
        assert_eq!(probes, [91_000, 101_000, 111_000]);
        assert_eq!(hb.deadline(&cfg), 121_000);
        assert_eq!(hb.poll(121_000, &cfg), Beat::Expired);
    }

    #[test]
    fn late_poll_sends_one_probe_and_keeps_schedule() {
        let cfg = SessionConfig::default();
        let mut hb = Heartbeat::new(0, 30_000);
        assert_eq!(hb.poll(115_000, &cfg), Beat::Probe);
        assert_eq!(hb.deadline(&cfg), 120_000);
    }

    #[test]
    fn rx_resets_everything() {
        let cfg = SessionConfig::default();
        let mut hb = Heartbeat::new(0, 30_000);
        assert_eq!(hb.poll(95_000, &cfg), Beat::Probe);
        hb.on_rx(96_000);
        assert_eq!(hb.deadline(&cfg), 186_000);
        // A stale timestamp never moves liveness backwards.
        hb.on_rx(10);
        assert_eq!(hb.deadline(&cfg), 186_000);
    }
}
