//! Connect pacing: how many connections may be between `connect()` and ready at once.
//!
//! A TCP connect completes in the kernel as soon as the three-way handshake does, before the
//! server has accepted anything; a client that opens connections as fast as connects complete
//! fills the server's listen backlog, and once it is full the kernel drops SYNs (or ACKs),
//! which costs the client a 1 s retransmit per dropped packet and looks like a slow server.
//! So the window counts connections from `connect()` until the gateway handshake is done
//! (WELCOME and the JOINs answered): those are exactly the ones the server has not finished
//! with. The window adapts like TCP's congestion window: it doubles per round of completions
//! while handshakes are fast (slow start), grows by one per round once it has been cut, and is
//! halved (at most once per round) when a handshake took longer than `slow` or failed, the
//! symptoms of an overrun backlog. It never exceeds `max` (`--connect-window`) and never drops
//! below `min`, so the rate follows what the server accepts.

use std::time::Duration;

/// A handshake slower than this counts as a sign of overload: a SYN dropped by a full backlog
/// costs at least the kernel's initial 1 s retransmission timeout.
pub const SLOW_HANDSHAKE: Duration = Duration::from_millis(500);

/// The window of in-flight connects (see the module docs).
#[derive(Debug, Clone)]
pub struct ConnectPacer {
    /// Connects allowed in flight now.
    window: f64,
    /// Slow start ends here (the window after the last cut).
    threshold: f64,
    min: f64,
    max: f64,
    slow: Duration,
    in_flight: usize,
    /// Completions since the last cut; a new cut needs a whole window of them, so one burst of
    /// slow handshakes halves the window once, not once per connection.
    since_cut: f64,
    /// Times the window was cut (reported).
    pub cuts: u64,
}

impl ConnectPacer {
    /// A pacer that starts at `min(initial, max)` in flight and never exceeds `max`.
    pub fn new(initial: usize, max: usize, slow: Duration) -> ConnectPacer {
        let max = max.max(1) as f64;
        let min = 8f64.min(max);
        ConnectPacer {
            window: (initial as f64).clamp(min, max),
            threshold: max,
            min,
            max,
            slow,
            in_flight: 0,
            since_cut: f64::INFINITY,
            cuts: 0,
        }
    }

    /// Whether one more connect may be issued now.
    pub fn may_issue(&self) -> bool {
        (self.in_flight as f64) < self.window.floor()
    }

    /// A connect was issued.
    pub fn issued(&mut self) {
        self.in_flight += 1;
    }

    /// A connection finished its handshake `took` after its connect was issued.
    pub fn completed(&mut self, took: Duration) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.since_cut += 1.0;
        if took > self.slow {
            self.cut();
        } else if self.window < self.threshold {
            // Slow start: +1 per completion doubles the window every round.
            self.window = (self.window + 1.0).min(self.max);
        } else {
            // Congestion avoidance: +1 per round.
            self.window = (self.window + 1.0 / self.window).min(self.max);
        }
    }

    /// A connect or handshake failed (refused, reset, timed out).
    pub fn failed(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.since_cut += 1.0;
        self.cut();
    }

    /// A connection in flight went away without a verdict (stopping).
    pub fn abandoned(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    fn cut(&mut self) {
        if self.since_cut < self.window {
            return;
        }
        self.window = (self.window / 2.0).max(self.min);
        self.threshold = self.window;
        self.since_cut = 0.0;
        self.cuts += 1;
    }

    /// Connects allowed in flight now.
    pub fn window(&self) -> usize {
        self.window.floor() as usize
    }

    /// Connects issued and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(2);
    const SLOW: Duration = Duration::from_secs(1);

    fn fill(p: &mut ConnectPacer) -> usize {
        let mut n = 0;
        while p.may_issue() {
            p.issued();
            n += 1;
        }
        n
    }

    #[test]
    fn window_bounds_what_is_in_flight() {
        let mut p = ConnectPacer::new(16, 1024, SLOW_HANDSHAKE);
        assert_eq!(fill(&mut p), 16);
        assert!(!p.may_issue());
        p.completed(FAST);
        assert_eq!(fill(&mut p), 2, "one slot freed, the window grew by one");
        assert_eq!(p.in_flight(), 17);
    }

    #[test]
    fn fast_handshakes_double_the_window_per_round_up_to_max() {
        let mut p = ConnectPacer::new(16, 100, SLOW_HANDSHAKE);
        for _ in 0..16 {
            p.issued();
            p.completed(FAST);
        }
        assert_eq!(p.window(), 32);
        for _ in 0..1000 {
            p.issued();
            p.completed(FAST);
        }
        assert_eq!(p.window(), 100, "capped at --connect-window");
    }

    #[test]
    fn a_burst_of_slow_handshakes_halves_the_window_once() {
        let mut p = ConnectPacer::new(64, 1024, SLOW_HANDSHAKE);
        fill(&mut p);
        for _ in 0..10 {
            p.completed(SLOW);
        }
        assert_eq!(p.window(), 32, "one cut for the whole burst");
        assert_eq!(p.cuts, 1);
        // A whole window later another slow one cuts again.
        for _ in 0..32 {
            p.issued();
            p.completed(FAST);
        }
        p.issued();
        p.completed(SLOW);
        assert_eq!(p.cuts, 2);
        assert!(p.window() < 33);
    }

    #[test]
    fn after_a_cut_growth_is_linear_and_failures_cut_too() {
        let mut p = ConnectPacer::new(64, 1024, SLOW_HANDSHAKE);
        p.issued();
        p.failed();
        assert_eq!(p.window(), 32);
        for _ in 0..32 {
            p.issued();
            p.completed(FAST);
        }
        assert_eq!(
            p.window(),
            32,
            "+1 per round of 32 completions: just under 33"
        );
        for _ in 0..40 {
            p.issued();
            p.completed(FAST);
        }
        assert_eq!(p.window(), 34);
    }

    #[test]
    fn never_below_the_floor_nor_above_max() {
        let mut p = ConnectPacer::new(8, 8, SLOW_HANDSHAKE);
        for _ in 0..100 {
            p.issued();
            p.failed();
        }
        assert_eq!(p.window(), 8);
        let mut tiny = ConnectPacer::new(100, 3, SLOW_HANDSHAKE);
        assert_eq!(fill(&mut tiny), 3);
        tiny.abandoned();
        assert_eq!(tiny.in_flight(), 2);
    }
}
