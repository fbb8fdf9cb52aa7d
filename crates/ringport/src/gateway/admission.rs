//! Admission: who may hold a connection, process-wide (issue 10, item 4).
//!
//! Shards are separate threads, but an IP address or a user may have connections on every
//! shard, so the counts live here, shared: [`PeerTable`] (per IP address: open connections,
//! a handshake token bucket and a failed-auth token bucket) and [`UserCounts`] (open
//! connections per user). Both are split into [`LOCK_SHARDS`] independently locked maps by a
//! hash of the key, so shards rarely meet on one lock, and both are touched only when a
//! connection opens, authenticates or closes, and (the per-IP publish budget) per client
//! PUBLISH that its own connection's publish rate let through — never per other frame.
//!
//! The per-IP state is bounded: at most `limits.max_tracked_ips` addresses are remembered.
//! An address with open connections is always kept (there are at most as many as
//! connections); one without is forgotten when room is needed — first those whose buckets
//! are full again (nothing is lost), then the least recently seen (its rates start afresh;
//! counted as limit `tracked_ips`).

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Mutex;

use super::conn::TokenBucket;
use crate::config::LimitsConfig;
use crate::dense_map::DenseMap;
use crate::metrics::{limits::hit, Limit};

/// Bytes per token of the per-IP publish bucket: a token bucket refills in whole
/// microseconds per token, so byte tokens would cap the rate at 1 MB/s; 64-byte tokens allow
/// up to 64 MB/s (`limits.publish_bytes_per_ip_per_sec`) and charge a small publish what its
/// frame costs at least.
const PUBLISH_UNIT: u32 = 64;

/// Independently locked parts of each table.
pub(crate) const LOCK_SHARDS: usize = 64;

/// Why a connection is refused; the text goes into its CLOSE POLICY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    ConnectionsPerIp(u32),
    HandshakeRate(u32),
    AuthFailures,
    ConnectionsPerUser(u32),
}

impl Refusal {
    pub fn limit(self) -> Limit {
        match self {
            Refusal::ConnectionsPerIp(_) => Limit::ConnectionsPerIp,
            Refusal::HandshakeRate(_) => Limit::HandshakeRate,
            Refusal::AuthFailures => Limit::AuthFailures,
            Refusal::ConnectionsPerUser(_) => Limit::ConnectionsPerUser,
        }
    }

    pub fn text(self) -> String {
        match self {
            Refusal::ConnectionsPerIp(n) => {
                format!("too many connections from this address (at most {n})")
            }
            Refusal::HandshakeRate(n) => {
                format!("too many new connections from this address (at most {n} per second)")
            }
            Refusal::AuthFailures => {
                "too many failed handshakes from this address; retry later".to_owned()
            }
            Refusal::ConnectionsPerUser(n) => {
                format!("too many connections for this user (at most {n})")
            }
        }
    }

    /// Counts the refusal (and logs the first of its kind).
    pub fn count(self) {
        hit(self.limit(), 1, &format_args!("refused: {}", self.text()));
    }
}

/// What is remembered about one IP address.
#[derive(Debug, Clone, Copy)]
struct Peer {
    conns: u32,
    handshakes: TokenBucket,
    failures: TokenBucket,
    /// Refusals it may still be told the reason of (`limits.refusals_answered_per_ip_per_sec`).
    answers: TokenBucket,
    /// PUBLISH payload bytes, in [`PUBLISH_UNIT`]s (`limits.publish_bytes_per_ip_per_sec`).
    publishes: TokenBucket,
    /// Session clock (ms) this address was last seen.
    seen_ms: u64,
}

/// A map split into [`LOCK_SHARDS`] locked parts by key hash; each part a [`DenseMap`] (up
/// to one entry per connection).
struct Sharded<K, V> {
    parts: Box<[Mutex<DenseMap<K, V>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    fn new() -> Self {
        Sharded {
            parts: (0..LOCK_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
        }
    }

    fn part<Q: Hash + ?Sized>(&self, key: &Q) -> std::sync::MutexGuard<'_, DenseMap<K, V>> {
        let i = (self.hasher.hash_one(key) % LOCK_SHARDS as u64) as usize;
        // A panic while holding the lock cannot leave a count half-written (plain integer
        // fields), so a poisoned lock is used as is.
        self.parts[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.lock().map_or(0, |m| m.len()))
            .sum()
    }
}

/// Per-IP connection counts and rates, process-wide.
pub(crate) struct PeerTable {
    limits: LimitsConfig,
    peers: Sharded<IpAddr, Peer>,
    /// Addresses remembered per locked part.
    per_part: usize,
}

impl PeerTable {
    pub fn new(limits: &LimitsConfig) -> PeerTable {
        PeerTable {
            limits: limits.clone(),
            peers: Sharded::new(),
            per_part: (limits.max_tracked_ips as usize)
                .div_ceil(LOCK_SHARDS)
                .max(1),
        }
    }

    /// Whether `ip` is subject to the per-IP limits at all.
    pub fn applies(&self, ip: IpAddr) -> bool {
        let l = &self.limits;
        let any = l.max_connections_per_ip > 0
            || l.handshakes_per_ip_per_sec > 0
            || l.auth_failures_per_ip_per_sec > 0
            || l.publish_bytes_per_ip_per_sec > 0;
        any && !(l.exempt_loopback && ip.is_loopback())
    }

    /// A new connection from `ip`: counted (`Ok`, release it with [`PeerTable::release`]) or
    /// refused.
    pub fn admit(&self, ip: IpAddr, now_ms: u64) -> Result<(), Refusal> {
        let l = &self.limits;
        let mut part = self.peers.part(&ip);
        if !part.contains_key(&ip) && part.len() >= self.per_part {
            self.make_room(&mut part, now_ms);
        }
        let p = part.get_or_insert_with(ip, || Peer {
            conns: 0,
            handshakes: TokenBucket::full(l.handshake_burst_per_ip, now_ms),
            failures: TokenBucket::full(l.auth_failure_burst_per_ip, now_ms),
            answers: TokenBucket::full(l.refusals_answered_per_ip_per_sec, now_ms),
            publishes: TokenBucket::full(0, now_ms),
            seen_ms: now_ms,
        });
        p.seen_ms = now_ms;
        if l.max_connections_per_ip > 0 && p.conns >= l.max_connections_per_ip {
            return Err(Refusal::ConnectionsPerIp(l.max_connections_per_ip));
        }
        if l.auth_failures_per_ip_per_sec > 0
            && !p.failures.has(
                l.auth_failures_per_ip_per_sec,
                l.auth_failure_burst_per_ip,
                now_ms,
            )
        {
            return Err(Refusal::AuthFailures);
        }
        if l.handshakes_per_ip_per_sec > 0
            && !p.handshakes.take(
                l.handshakes_per_ip_per_sec,
                l.handshake_burst_per_ip,
                now_ms,
            )
        {
            return Err(Refusal::HandshakeRate(l.handshakes_per_ip_per_sec));
        }
        p.conns += 1;
        Ok(())
    }

    /// A connection admitted from `ip` closed.
    pub fn release(&self, ip: IpAddr) {
        if let Some(p) = self.peers.part(&ip).get_mut(&ip) {
            p.conns = p.conns.saturating_sub(1);
        }
    }

    /// A handshake from `ip` failed authentication: spends one of its failure tokens.
    pub fn auth_failed(&self, ip: IpAddr, now_ms: u64) {
        let l = &self.limits;
        if l.auth_failures_per_ip_per_sec == 0 {
            return;
        }
        if let Some(p) = self.peers.part(&ip).get_mut(&ip) {
            p.failures.take(
                l.auth_failures_per_ip_per_sec,
                l.auth_failure_burst_per_ip,
                now_ms,
            );
        }
    }

    /// A connection from `ip` was closed for abuse (a rate-limit CLOSE POLICY): spends
    /// `limits.handshakes_per_abusive_close` of the address's new-connection tokens, going
    /// into debt (at most one burst) if it has fewer, so a flooder cannot just reconnect for
    /// a fresh burst. Whether anything was spent.
    pub fn abusive_close(&self, ip: IpAddr, now_ms: u64) -> bool {
        let l = &self.limits;
        if l.handshakes_per_abusive_close == 0 || l.handshakes_per_ip_per_sec == 0 {
            return false;
        }
        let mut part = self.peers.part(&ip);
        let Some(p) = part.get_mut(&ip) else {
            return false;
        };
        p.handshakes.spend(
            l.handshakes_per_abusive_close,
            l.handshakes_per_ip_per_sec,
            l.handshake_burst_per_ip,
            now_ms,
        );
        true
    }

    /// (rate, burst) of the per-IP publish bucket in [`PUBLISH_UNIT`]s; `None` when off.
    fn publish_bucket(&self) -> Option<(u32, u32)> {
        let l = &self.limits;
        (l.publish_bytes_per_ip_per_sec > 0).then(|| {
            (
                l.publish_bytes_per_ip_per_sec.div_ceil(PUBLISH_UNIT),
                l.publish_burst_bytes_per_ip / PUBLISH_UNIT,
            )
        })
    }

    /// A connection from `ip` publishes `bytes` of payload: `Ok` if its address's publish
    /// budget (`limits.publish_bytes_per_ip_per_sec`) has them (they are spent), else the
    /// milliseconds until it will.
    pub fn publish(&self, ip: IpAddr, bytes: usize, now_ms: u64) -> Result<(), u64> {
        let Some((rate, burst)) = self.publish_bucket() else {
            return Ok(());
        };
        let units = u32::try_from(bytes.div_ceil(PUBLISH_UNIT as usize))
            .unwrap_or(u32::MAX)
            .max(1);
        let mut part = self.peers.part(&ip);
        // An address with an open connection is always remembered.
        let Some(p) = part.get_mut(&ip) else {
            return Ok(());
        };
        if p.publishes.take_n(units, rate, burst, now_ms) {
            return Ok(());
        }
        Err(p.publishes.wait_ms(units, rate, burst, now_ms).max(1))
    }

    /// A connection from `ip` was refused: whether it is told why (CLOSE POLICY) or closed
    /// at once, its address's answers for this second (`limits.refusals_answered_per_ip_per_sec`)
    /// spent.
    pub fn answer_refusal(&self, ip: IpAddr, now_ms: u64) -> bool {
        let rate = self.limits.refusals_answered_per_ip_per_sec;
        if rate == 0 {
            return true;
        }
        let mut part = self.peers.part(&ip);
        // A refused address was just remembered by `admit` (or forgotten to make room, and
        // then it is answered).
        part.get_mut(&ip)
            .is_none_or(|p| p.answers.take(rate, rate, now_ms))
    }

    /// Addresses remembered now.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.peers.len()
    }

    /// Forgets addresses without open connections until this part has room for one more.
    fn make_room(&self, part: &mut DenseMap<IpAddr, Peer>, now_ms: u64) {
        let l = &self.limits;
        // Nothing is lost by forgetting an address whose buckets are full again.
        part.retain(|_, p| {
            p.conns > 0
                || !p.handshakes.is_full(
                    l.handshakes_per_ip_per_sec,
                    l.handshake_burst_per_ip,
                    now_ms,
                )
                || !p.failures.is_full(
                    l.auth_failures_per_ip_per_sec,
                    l.auth_failure_burst_per_ip,
                    now_ms,
                )
                || !p.answers.is_full(
                    l.refusals_answered_per_ip_per_sec,
                    l.refusals_answered_per_ip_per_sec,
                    now_ms,
                )
                || self
                    .publish_bucket()
                    .is_some_and(|(rate, burst)| !p.publishes.is_full(rate, burst, now_ms))
        });
        if part.len() < self.per_part {
            return;
        }
        let oldest = part
            .iter()
            .filter(|(_, p)| p.conns == 0)
            .min_by_key(|(_, p)| p.seen_ms)
            .map(|(ip, _)| *ip);
        if let Some(ip) = oldest {
            part.remove(&ip);
            hit(
                Limit::TrackedIps,
                1,
                &format_args!(
                    "limits.max_tracked_ips ({}) reached: the rates of {ip} were forgotten",
                    l.max_tracked_ips
                ),
            );
        }
        // Every remembered address has open connections: the table grows, bounded by the
        // connection cap (one entry per connection at most).
    }
}

/// Open connections per user, process-wide.
pub(crate) struct UserCounts {
    max: u32,
    /// Keyed by the connection's own `Arc<str>` user id (shared, not copied).
    users: Sharded<std::sync::Arc<str>, u32>,
}

impl UserCounts {
    pub fn new(limits: &LimitsConfig) -> UserCounts {
        UserCounts {
            max: limits.max_connections_per_user,
            users: Sharded::new(),
        }
    }

    /// Counts one more connection of `user`, or refuses it at the cap. `elsewhere`: the
    /// user's connections on the other nodes of the cluster (0 on a single node). `Ok`
    /// holds the user's new count on this node, `None` when there is no cap.
    pub fn acquire(
        &self,
        user: &std::sync::Arc<str>,
        elsewhere: u32,
    ) -> Result<Option<u32>, Refusal> {
        if self.max == 0 {
            return Ok(None);
        }
        let mut part = self.users.part(&**user);
        let here = part.get(&**user).copied().unwrap_or(0);
        if here.saturating_add(elsewhere) >= self.max {
            return Err(Refusal::ConnectionsPerUser(self.max));
        }
        part.insert(std::sync::Arc::clone(user), here + 1);
        Ok(Some(here + 1))
    }

    /// One connection of `user` (counted by [`UserCounts::acquire`]) closed: the user's
    /// count on this node now, `None` when there is no cap.
    pub fn release(&self, user: &str) -> Option<u32> {
        if self.max == 0 {
            return None;
        }
        let mut part = self.users.part(user);
        let n = part.get_mut(user)?;
        *n -= 1;
        let left = *n;
        if left == 0 {
            part.remove(user);
        }
        Some(left)
    }

    /// `user`'s connections on this node now.
    pub fn count(&self, user: &str) -> u32 {
        self.users.part(user).get(user).copied().unwrap_or(0)
    }

    /// Every user with connections here and their counts (a node of a cluster tells the
    /// other nodes all of them when one joins or the broker comes back).
    pub fn snapshot(&self) -> Vec<(std::sync::Arc<str>, u32)> {
        self.users
            .parts
            .iter()
            .flat_map(|p| {
                let part = p.lock().unwrap_or_else(|p| p.into_inner());
                part.iter()
                    .map(|(u, n)| (std::sync::Arc::clone(u), *n))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + n))
    }

    fn limits() -> LimitsConfig {
        LimitsConfig {
            max_connections_per_ip: 2,
            handshakes_per_ip_per_sec: 1,
            handshake_burst_per_ip: 3,
            auth_failures_per_ip_per_sec: 1,
            auth_failure_burst_per_ip: 2,
            max_connections_per_user: 2,
            max_tracked_ips: 64,
            exempt_loopback: true,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn per_ip_cap_and_handshake_rate() {
        let t = PeerTable::new(&limits());
        assert_eq!(t.admit(ip(1), 0), Ok(()));
        assert_eq!(t.admit(ip(1), 0), Ok(()));
        assert_eq!(t.admit(ip(1), 0), Err(Refusal::ConnectionsPerIp(2)));
        t.release(ip(1));
        assert_eq!(t.admit(ip(1), 0), Ok(()), "third token of the burst");
        t.release(ip(1));
        assert_eq!(t.admit(ip(1), 0), Err(Refusal::HandshakeRate(1)));
        assert_eq!(t.admit(ip(1), 1000), Ok(()), "one token per second");
        assert_eq!(t.admit(ip(2), 0), Ok(()), "another address is unaffected");
        assert!(!t.applies("127.0.0.9".parse().unwrap()));
        assert!(t.applies(ip(3)));
    }

    #[test]
    fn failed_auth_throttles_new_connections() {
        let t = PeerTable::new(&limits());
        t.admit(ip(1), 0).unwrap();
        t.auth_failed(ip(1), 0);
        t.auth_failed(ip(1), 0);
        t.release(ip(1));
        assert_eq!(t.admit(ip(1), 0), Err(Refusal::AuthFailures));
        assert_eq!(t.admit(ip(1), 1000), Ok(()), "a failure token refilled");
    }

    #[test]
    fn an_abusive_close_costs_its_address_new_connections() {
        // Rate 1/s, burst 3; an abusive close costs 2 tokens.
        let limits = LimitsConfig {
            handshakes_per_abusive_close: 2,
            max_connections_per_ip: 0,
            // Room for both addresses in any part: with one address per part (64 / 64), the
            // second address's admit forgets the first when both hash to the same part (1 run
            // in 64), and the debt this test checks goes with it.
            max_tracked_ips: 64 * LOCK_SHARDS as u32,
            ..limits()
        };
        let t = PeerTable::new(&limits);
        assert_eq!(t.admit(ip(1), 0), Ok(()));
        assert!(t.abusive_close(ip(1), 0));
        t.release(ip(1));
        // 3 - 1 - 2: nothing left for a reconnect.
        assert_eq!(t.admit(ip(1), 0), Err(Refusal::HandshakeRate(1)));
        assert_eq!(t.admit(ip(2), 0), Ok(()), "another address is unaffected");
        // A flooder's reconnects each cost it 1 + 2: one per 3 s instead of one per second.
        assert_eq!(t.admit(ip(1), 1000), Ok(()));
        assert!(t.abusive_close(ip(1), 1000));
        assert_eq!(t.admit(ip(1), 3000), Err(Refusal::HandshakeRate(1)));
        assert_eq!(t.admit(ip(1), 4000), Ok(()));
        // At most one burst is owed, however many connections of the address abuse.
        for _ in 0..100 {
            t.abusive_close(ip(1), 4000);
        }
        // Owing 3 tokens at 4000 ms (a burst), the next one comes 4 s later.
        assert_eq!(t.admit(ip(1), 7999), Err(Refusal::HandshakeRate(1)));
        assert_eq!(t.admit(ip(1), 8000), Ok(()));
        // Off with 0, and for an address never admitted.
        let off = PeerTable::new(&LimitsConfig {
            handshakes_per_abusive_close: 0,
            ..limits
        });
        off.admit(ip(1), 0).unwrap();
        assert!(!off.abusive_close(ip(1), 0));
        assert!(!t.abusive_close(ip(9), 0));
    }

    #[test]
    fn an_address_is_told_a_few_refusals_a_second() {
        let limits = LimitsConfig {
            refusals_answered_per_ip_per_sec: 2,
            ..limits()
        };
        let t = PeerTable::new(&limits);
        // Refused (its burst of 3 spent), and told so twice in a second.
        for _ in 0..3 {
            t.admit(ip(1), 0).unwrap();
            t.release(ip(1));
        }
        assert_eq!(t.admit(ip(1), 0), Err(Refusal::HandshakeRate(1)));
        assert!(t.answer_refusal(ip(1), 0));
        assert!(t.answer_refusal(ip(1), 0));
        assert!(!t.answer_refusal(ip(1), 0), "a third refusal in the second");
        assert!(!t.answer_refusal(ip(1), 499));
        assert!(
            t.answer_refusal(ip(1), 500),
            "one answer back after half a second"
        );
        assert!(t.answer_refusal(ip(2), 500), "another address has its own");
        // 0: every refusal is answered.
        let all = PeerTable::new(&LimitsConfig {
            refusals_answered_per_ip_per_sec: 0,
            ..limits
        });
        all.admit(ip(1), 0).unwrap();
        assert!((0..100).all(|_| all.answer_refusal(ip(1), 0)));
    }

    #[test]
    fn state_stays_bounded_under_many_addresses() {
        let t = PeerTable::new(&limits());
        for n in 0..10_000 {
            t.admit(ip(n), u64::from(n)).unwrap();
            t.release(ip(n));
        }
        assert!(t.tracked() <= 64, "{} addresses remembered", t.tracked());
        // Addresses with open connections are never forgotten.
        let t = PeerTable::new(&limits());
        for n in 0..200 {
            t.admit(ip(n), 0).unwrap();
        }
        assert_eq!(t.tracked(), 200);
    }

    #[test]
    fn per_user_cap() {
        let u = UserCounts::new(&limits());
        let (a, b) = (std::sync::Arc::from("a"), std::sync::Arc::from("b"));
        assert_eq!(u.acquire(&a, 0), Ok(Some(1)));
        assert_eq!(u.acquire(&a, 0), Ok(Some(2)));
        assert_eq!(u.acquire(&a, 0), Err(Refusal::ConnectionsPerUser(2)));
        assert_eq!(u.acquire(&b, 0), Ok(Some(1)));
        assert_eq!(u.release("a"), Some(1));
        assert_eq!(u.acquire(&a, 0), Ok(Some(2)));
        assert_eq!(u.snapshot().len(), 2);
        assert_eq!(u.release("a"), Some(1));
        assert_eq!(u.release("a"), Some(0));
        assert_eq!(u.release("b"), Some(0));
        assert_eq!(u.users.len(), 0, "no entry for a user without connections");
        // Connections on other nodes of the cluster count too.
        assert_eq!(u.acquire(&b, 1), Ok(Some(1)));
        assert_eq!(u.acquire(&b, 1), Err(Refusal::ConnectionsPerUser(2)));
    }
}
