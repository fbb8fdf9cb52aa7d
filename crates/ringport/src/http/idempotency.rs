//! Idempotent pushes: an `Idempotency-Key` makes a retried push answer the first outcome
//! instead of publishing again.
//!
//! A push carrying a key first [`claims`](IdempotencyStore::claim) it. The first claim gets a
//! [`Ticket`] and publishes; the ticket records the outcome once the message has an offset —
//! also when delivery was not confirmed in time (HTTP 503 `not_confirmed`), which is exactly
//! the case a backend retries. A later claim of the same key within
//! `admin.idempotency_ttl_ms` gets that outcome back ([`Claim::Done`]); a claim while the
//! first is still publishing gets [`Claim::InProgress`] (409); the same key with a different
//! target or body gets [`Claim::Mismatch`] (422). A push refused before it was published
//! (400, or 503 `unavailable`) records nothing, so its retry publishes.
//!
//! The store is bounded: at most `admin.idempotency_max_keys` keys; a new key beyond that
//! evicts the oldest (`ringport_limit_hits_total{limit="idempotency_keys"}`). Answers served
//! from the store count in `ringport_idempotent_replays_total`.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::gateway::PushOutcome;
use crate::metrics::limits::hit;
use crate::metrics::Limit;

/// Longest accepted key, in bytes.
pub const MAX_KEY_LEN: usize = 255;

static REPLAYS: AtomicU64 = AtomicU64::new(0);

/// Pushes answered from the store instead of publishing again (`/metrics`).
pub fn replays() -> u64 {
    REPLAYS.load(Ordering::Relaxed)
}

/// The answer to a claim.
#[derive(Debug)]
pub enum Claim {
    /// First use of the key: publish, then [`Ticket::finish`].
    New(Ticket),
    /// Already published: answer this outcome.
    Done(PushOutcome),
    /// The first push with this key is still being published.
    InProgress,
    /// The key was used for a different push.
    Mismatch,
}

#[derive(Debug)]
enum State {
    Pending,
    Done(PushOutcome),
}

#[derive(Debug)]
struct Entry {
    /// Hash of what the key was first used for (target, body).
    fingerprint: u64,
    state: State,
    /// When the key was first claimed (expiry counts from here).
    since: Instant,
}

#[derive(Debug, Default)]
struct Keys {
    map: HashMap<String, Entry>,
    /// Keys in claim order with their claim time, for expiry and eviction; an entry whose
    /// time no longer matches the map (the key was removed and claimed again) is stale.
    order: VecDeque<(Instant, String)>,
}

/// The bounded key store (one per admin server).
#[derive(Debug)]
pub struct IdempotencyStore {
    keys: Mutex<Keys>,
    ttl: Duration,
    max_keys: usize,
}

impl IdempotencyStore {
    pub fn new(ttl: Duration, max_keys: usize) -> Arc<IdempotencyStore> {
        Arc::new(IdempotencyStore {
            keys: Mutex::new(Keys::default()),
            ttl,
            max_keys: max_keys.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Keys> {
        // Every mutation is a single insert or remove: a poisoned lock is still consistent.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `key` for a push described by `what` (target and body) at `now`.
    pub fn claim(
        self: &Arc<Self>,
        key: &str,
        what: &dyn Fn(&mut DefaultHasher),
        now: Instant,
    ) -> Claim {
        let mut h = DefaultHasher::new();
        what(&mut h);
        let fingerprint = h.finish();
        let mut keys = self.lock();
        self.expire(&mut keys, now);
        if let Some(e) = keys.map.get(key) {
            if e.fingerprint != fingerprint {
                return Claim::Mismatch;
            }
            return match &e.state {
                State::Pending => Claim::InProgress,
                State::Done(outcome) => {
                    REPLAYS.fetch_add(1, Ordering::Relaxed);
                    Claim::Done(outcome.clone())
                }
            };
        }
        let mut evicted = 0;
        while keys.map.len() >= self.max_keys {
            let Some((since, old)) = keys.order.pop_front() else {
                break;
            };
            if keys.map.get(&old).is_some_and(|e| e.since == since) {
                keys.map.remove(&old);
                evicted += 1;
            }
        }
        keys.map.insert(
            key.to_owned(),
            Entry {
                fingerprint,
                state: State::Pending,
                since: now,
            },
        );
        keys.order.push_back((now, key.to_owned()));
        drop(keys);
        hit(
            Limit::IdempotencyKeys,
            evicted,
            &format_args!(
                "admin.idempotency_max_keys ({}) reached: forgetting the oldest keys",
                self.max_keys
            ),
        );
        Claim::New(Ticket {
            store: Arc::clone(self),
            key: Some((key.to_owned(), now)),
        })
    }

    /// Forgets keys claimed more than the TTL before `now`.
    fn expire(&self, keys: &mut Keys, now: Instant) {
        while let Some((since, _)) = keys.order.front() {
            if now.saturating_duration_since(*since) < self.ttl {
                break;
            }
            let (since, key) = keys.order.pop_front().expect("front exists");
            if keys.map.get(&key).is_some_and(|e| e.since == since) {
                keys.map.remove(&key);
            }
        }
    }

    /// Keys held now (tests).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The first claim of a key: records the outcome, or releases the key when dropped without
/// one (the push was refused before publishing, or the request was cancelled).
#[derive(Debug)]
pub struct Ticket {
    store: Arc<IdempotencyStore>,
    key: Option<(String, Instant)>,
}

impl Ticket {
    /// The push was published with `outcome`: later claims answer it.
    pub fn finish(mut self, outcome: &PushOutcome) {
        if let Some((key, since)) = self.key.take() {
            let mut keys = self.store.lock();
            if let Some(e) = keys.map.get_mut(&key).filter(|e| e.since == since) {
                e.state = State::Done(outcome.clone());
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((key, since)) = self.key.take() {
            let mut keys = self.store.lock();
            if keys.map.get(&key).is_some_and(|e| e.since == since) {
                keys.map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    fn outcome(offset: u64) -> PushOutcome {
        PushOutcome {
            stream: "room:r".into(),
            epoch: 7,
            offset,
            recipients: None,
            warning: None,
        }
    }

    fn same(h: &mut DefaultHasher) {
        "room:r".hash(h);
    }

    #[test]
    fn a_finished_key_answers_its_outcome_until_it_expires() {
        let store = IdempotencyStore::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        let Claim::New(ticket) = store.claim("k", &same, t0) else {
            panic!("first claim")
        };
        assert!(matches!(store.claim("k", &same, t0), Claim::InProgress));
        ticket.finish(&outcome(5));
        let before = replays();
        match store.claim("k", &same, t0 + Duration::from_secs(9)) {
            Claim::Done(o) => assert_eq!(o, outcome(5)),
            other => panic!("{other:?}"),
        }
        assert!(replays() > before);
        assert!(matches!(
            store.claim("k", &|h| "room:other".hash(h), t0),
            Claim::Mismatch
        ));
        assert!(matches!(
            store.claim("k", &same, t0 + Duration::from_secs(10)),
            Claim::New(_)
        ));
    }

    #[test]
    fn a_dropped_ticket_releases_the_key() {
        let store = IdempotencyStore::new(Duration::from_secs(10), 100);
        let now = Instant::now();
        drop(store.claim("k", &same, now));
        assert!(store.is_empty());
        assert!(matches!(store.claim("k", &same, now), Claim::New(_)));
    }

    #[test]
    fn the_store_is_bounded_oldest_first() {
        let store = IdempotencyStore::new(Duration::from_secs(10), 2);
        let now = Instant::now();
        for k in ["a", "b", "c"] {
            if let Claim::New(t) = store.claim(k, &same, now) {
                t.finish(&outcome(1));
            }
        }
        assert_eq!(store.len(), 2);
        assert!(matches!(store.claim("a", &same, now), Claim::New(_)));
        assert!(matches!(store.claim("c", &same, now), Claim::Done(_)));
    }
}
