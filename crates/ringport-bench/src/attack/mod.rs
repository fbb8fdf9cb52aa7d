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
            // One holder thread per 256 connections.
            let per = 256;
            let n = opts.connections.div_ceil(per).max(1);
            for t in 0..n {
                let count = per.min(opts.connections - t * per);
                let tally = &tally;
                s.spawn(move || kinds::hold(opts, tally, count, deadline));
            }
        } else {
            for _ in 0..opts.connections.clamp(1, MAX_THREADS) {
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
