//! `ringport-bench attack`: the attacks of issue 10 against a running `ringport serve`,
//! bounded in connections and time, to run next to a well-behaved population (`fanout`,
//! `churn`) and see whether it suffers (`scripts/bench-attacks.sh`).
//!
//! Two shapes: *cycle* attacks repeat connect → abuse → read the server's answer on
//! `--connections` threads (at most [`MAX_THREADS`]); *held* attacks keep `--connections`
//! connections open doing something slow, reopening one a second after the server closed it.
//! Every connection's end is counted by what the server did (`close:<REASON>`, `eof`,
//! `reset`, `no_answer`), so the report shows which limit answered.

mod kinds;
pub mod wire;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::gateway::Tokens;
pub use kinds::Kind;

/// Threads a cycle attack runs at most (each is one connection at a time).
pub const MAX_THREADS: usize = 16;

#[derive(Debug, Clone)]
pub struct AttackOptions {
    pub kind: Kind,
    pub target: SocketAddr,
    pub admin: SocketAddr,
    /// Tokens for the attackers that authenticate (users `bench-<i>` from `first_user`).
    pub tokens: Tokens,
    /// Users are numbered from here, so attackers are not the population's users.
    pub first_user: usize,
    /// Source addresses, used round robin (the one-address floods use the first only).
    pub sources: Vec<IpAddr>,
    pub duration: Duration,
    /// Held attacks: connections held; cycle attacks: threads.
    pub connections: usize,
    /// The room the population uses (resume entries name it, so replay has history to send).
    pub room: String,
}

/// What the attack did and what the server answered.
#[derive(Debug, Clone, Serialize)]
pub struct AttackReport {
    pub command: String,
    pub kind: String,
    pub what: &'static str,
    pub duration_secs: f64,
    pub connections_opened: u64,
    pub connect_errors: u64,
    pub bytes_sent: u64,
    /// How connections ended (or, for some attacks, what each round achieved), by outcome.
    pub outcomes: BTreeMap<String, u64>,
}

/// Shared by the attack threads.
#[derive(Default)]
pub(crate) struct Tally {
    opened: AtomicU64,
    connect_errors: AtomicU64,
    bytes_sent: AtomicU64,
    next_user: AtomicU64,
    outcomes: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    pub(crate) fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connect_failed(&self) {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn outcome(&self, key: impl Into<String>) {
        let mut m = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(key.into()).or_default() += 1;
    }

    /// A fresh number for the next attacker (user name, source address).
    pub(crate) fn next(&self) -> usize {
        self.next_user.fetch_add(1, Ordering::Relaxed) as usize
    }
}

pub fn run(opts: &AttackOptions, command: String) -> anyhow::Result<AttackReport> {
    anyhow::ensure!(!opts.sources.is_empty(), "no source address");
    anyhow::ensure!(
        opts.target.ip().is_loopback() && opts.admin.ip().is_loopback(),
        "attacks only go to loopback"
    );
    let tally = Tally::default();
    let started = Instant::now();
    let deadline = started + opts.duration;
    std::thread::scope(|s| {
        if opts.kind.is_held() {
            for count in holders(opts.connections) {
                let tally = &tally;
                s.spawn(move || kinds::hold(opts, tally, count, deadline));
            }
        } else {
            for _ in 0..cycle_threads(opts.connections) {
                let tally = &tally;
                s.spawn(move || {
                    while Instant::now() < deadline {
                        kinds::cycle(opts, tally, deadline);
                    }
                });
            }
        }
    });
    let outcomes = tally
        .outcomes
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    Ok(AttackReport {
        command,
        kind: opts.kind.name().to_string(),
        what: opts.kind.what(),
        duration_secs: started.elapsed().as_secs_f64(),
        connections_opened: tally.opened.into_inner(),
        connect_errors: tally.connect_errors.into_inner(),
        bytes_sent: tally.bytes_sent.into_inner(),
        outcomes,
    })
}

/// Connections a held attack's threads hold: one thread per [`HELD_PER_THREAD`].
fn holders(connections: usize) -> Vec<usize> {
    (0..connections.div_ceil(HELD_PER_THREAD).max(1))
        .map(|t| HELD_PER_THREAD.min(connections - t * HELD_PER_THREAD))
        .collect()
}

/// Connections one holder thread keeps at most.
const HELD_PER_THREAD: usize = 256;

/// Threads a cycle attack runs for `--connections` (at least one, at most [`MAX_THREADS`]).
fn cycle_threads(connections: usize) -> usize {
    connections.clamp(1, MAX_THREADS)
}

/// The report as a few lines of text.
pub fn human(r: &AttackReport) -> String {
    let mut s = format!(
        "attack {} ({}): {:.1} s, {} connections opened, {} connect errors, {} bytes sent\n",
        r.kind, r.what, r.duration_secs, r.connections_opened, r.connect_errors, r.bytes_sent
    );
    for (k, v) in &r.outcomes {
        s.push_str(&format!("  {k}: {v}\n"));
    }
    s
}

/// A short pause between a held connection's end and its replacement.
pub(crate) const REOPEN_AFTER: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_connections_are_spread_256_to_a_thread() {
        assert_eq!(holders(0), [0]);
        assert_eq!(holders(1), [1]);
        assert_eq!(holders(256), [256]);
        assert_eq!(holders(257), [256, 1]);
        assert_eq!(holders(1000), [256, 256, 256, 232]);
        for n in [3, 511, 512, 513, 20_000] {
            assert_eq!(holders(n).iter().sum::<usize>(), n);
            assert!(holders(n).iter().all(|&c| c <= HELD_PER_THREAD));
        }
    }

    #[test]
    fn cycle_attacks_run_one_to_max_threads() {
        assert_eq!(cycle_threads(0), 1);
        assert_eq!(cycle_threads(5), 5);
        assert_eq!(cycle_threads(10_000), MAX_THREADS);
    }

    #[test]
    fn outcomes_are_counted_under_distinct_keys_and_closes_by_reason_name() {
        let keys: std::collections::HashSet<String> = [
            wire::Outcome::Close("POLICY".into()),
            wire::Outcome::Eof,
            wire::Outcome::Reset,
            wire::Outcome::Timeout,
            wire::Outcome::NotProtocol,
        ]
        .iter()
        .map(wire::Outcome::key)
        .collect();
        assert_eq!(keys.len(), 5);
        assert!(keys.contains("close:POLICY"));
        assert_eq!(
            wire::close_outcome(ringport_proto::CloseReason::REPLACED).key(),
            "close:REPLACED"
        );
        // A code this version does not know is counted by its number.
        assert_eq!(
            wire::close_outcome(ringport_proto::CloseReason(4242)).key(),
            "close:4242"
        );
    }
}
