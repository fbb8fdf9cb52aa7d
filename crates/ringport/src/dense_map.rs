//! [`DenseMap`]: a hash map for tables with one entry per connection (issue 16).
//!
//! A `HashMap<K, V>` keeps its entries in its buckets: power-of-two many, at most 7/8 full,
//! so an entry costs between 8/7 and 16/7 of `size_of::<(K, V)>() + 1` bytes, and every map
//! with as many entries as connections (or every evenly loaded part of a sharded one)
//! doubles at the same count: at 917,504 connections (7/8 of 2^20) the gateway's heap grew
//! by ~139 MB at once. Here the buckets hold only a 4-byte position into a dense vector of
//! the entries (5 bytes per bucket with its control byte), and the vector grows by an eighth
//! of its length, not by doubling. An entry costs its own size plus at most an eighth, plus
//! 5.7–11.4 bytes of index.
//!
//! Removal moves the last entry into the freed place (one more index update), so the
//! entries stay dense and the order of iteration is not the order of insertion.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, RandomState};

use hashbrown::HashTable;

/// Entries added at least when the vector grows (small maps do not reallocate per insert).
const MIN_GROWTH: usize = 4;

/// A map of `K` to `V` as a dense vector of entries plus a hash index of positions.
pub(crate) struct DenseMap<K, V> {
    /// Positions in `entries`, found by the hash of their entry's key.
    index: HashTable<u32>,
    entries: Vec<(K, V)>,
    /// The same keyed SipHash as `std::collections::HashMap` (flooding-resistant).
    hasher: RandomState,
}

impl<K, V> Default for DenseMap<K, V> {
    fn default() -> Self {
        DenseMap {
            index: HashTable::new(),
            entries: Vec::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for DenseMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<K: Hash + Eq, V> DenseMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Position of `key`'s entry.
    fn position<Q>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = &self.entries;
        self.index
            .find(self.hasher.hash_one(key), |&i| {
                entries[i as usize].0.borrow() == key
            })
            .map(|&i| i as usize)
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.position(key).map(|i| {
            let (k, v) = &self.entries[i];
            (k, v)
        })
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.position(key).is_some()
    }

    /// Stores `value` for `key`; returns the value it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.push(key, value);
                None
            }
        }
    }

    /// The value of `key`, inserted with `make` if absent.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.position(&key) {
            Some(i) => i,
            None => self.push(key, make()),
        };
        &mut self.entries[i].1
    }

    /// Appends an entry whose key is absent; returns its position.
    fn push(&mut self, key: K, value: V) -> usize {
        let hash = self.hasher.hash_one(&key);
        let i = self.entries.len();
        // One entry per connection at most: far below 2^32.
        let pos = u32::try_from(i).expect("a DenseMap holds fewer than 2^32 entries");
        if self.entries.len() == self.entries.capacity() {
            self.entries
                .reserve_exact((self.entries.len() / 8).max(MIN_GROWTH));
        }
        self.entries.push((key, value));
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index
            .insert_unique(hash, pos, |&j| hasher.hash_one(&entries[j as usize].0));
        i
    }

    /// Removes `key`'s entry; returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = &self.entries;
        let found = self
            .index
            .find_entry(self.hasher.hash_one(key), |&i| {
                entries[i as usize].0.borrow() == key
            })
            .ok()?;
        let i = found.remove().0 as usize;
        let last = self.entries.len() - 1;
        if i != last {
            // The last entry moves into `i`: its index position says so.
            let hash = self.hasher.hash_one(&self.entries[last].0);
            if let Some(p) = self.index.find_mut(hash, |&j| j as usize == last) {
                *p = i as u32;
            }
        }
        let (_, value) = self.entries.swap_remove(i);
        self.shrink();
        Some(value)
    }

    /// Keeps only the entries for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let before = self.entries.len();
        self.entries.retain_mut(|(k, v)| keep(k, v));
        if self.entries.len() == before {
            return;
        }
        self.index.clear();
        let (entries, hasher) = (&self.entries, &self.hasher);
        for (i, (k, _)) in entries.iter().enumerate() {
            self.index
                .insert_unique(hasher.hash_one(k), i as u32, |&j| {
                    hasher.hash_one(&entries[j as usize].0)
                });
        }
        self.shrink();
    }

    /// Gives memory back after most entries left (a mass disconnect).
    fn shrink(&mut self) {
        let (len, cap) = (self.entries.len(), self.entries.capacity());
        if cap > 64 && len < cap / 4 {
            self.entries.shrink_to(len + len / 8);
            let (entries, hasher) = (&self.entries, &self.hasher);
            self.index
                .shrink_to_fit(|&j| hasher.hash_one(&entries[j as usize].0));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// Every operation agrees with `HashMap` over a long mixed sequence.
    #[test]
    fn behaves_as_a_hash_map() {
        let mut d: DenseMap<Arc<str>, u32> = DenseMap::new();
        let mut h: HashMap<Arc<str>, u32> = HashMap::new();
        let mut x: u32 = 12345;
        for step in 0..20_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let key: Arc<str> = Arc::from(format!("k{}", (x >> 8) % 700));
            match (x >> 4) % 5 {
                0 | 1 => assert_eq!(d.insert(key.clone(), step), h.insert(key, step)),
                2 => assert_eq!(d.remove(&*key), h.remove(&*key)),
                3 => {
                    *d.get_or_insert_with(key.clone(), || 0) += 1;
                    *h.entry(key).or_insert(0) += 1;
                }
                _ => {
                    if step % 1000 == 0 {
                        d.retain(|_, v| *v % 3 != 0);
                        h.retain(|_, v| *v % 3 != 0);
                    }
                    assert_eq!(d.get_mut(&*key).copied(), h.get(&*key).copied());
                }
            }
            assert_eq!(d.len(), h.len());
        }
        for (k, v) in &h {
            assert_eq!(d.get(&**k), Some(v));
            assert!(Arc::ptr_eq(d.get_key_value(&**k).unwrap().0, k));
        }
        assert_eq!(d.iter().count(), h.len());
        let keys: Vec<Arc<str>> = d.keys().cloned().collect();
        for k in keys {
            assert!(d.remove(&*k).is_some());
        }
        assert!(d.is_empty());
        assert!(d.get("k1").is_none());
    }

    /// Not a test: prints the cost of a lookup and of an insert + remove against `HashMap` at
    /// 1,000,000 user ids (`cargo test --release -p ringport --lib dense_map_cost --
    /// --ignored --nocapture`; docs/benchmarks.md quotes it).
    #[test]
    #[ignore]
    fn dense_map_cost_against_hash_map() {
        use std::time::Instant;
        let n = 1_000_000;
        let keys: Vec<Arc<str>> = (0..n).map(|i| Arc::from(format!("user-{i}"))).collect();
        for round in 0..3 {
            let mut d: DenseMap<Arc<str>, u64> = DenseMap::new();
            let mut h: HashMap<Arc<str>, u64> = HashMap::new();
            let t = Instant::now();
            for (i, k) in keys.iter().enumerate() {
                d.insert(k.clone(), i as u64);
            }
            let d_ins = t.elapsed();
            let t = Instant::now();
            for (i, k) in keys.iter().enumerate() {
                h.insert(k.clone(), i as u64);
            }
            let h_ins = t.elapsed();
            let (mut a, mut b) = (0u64, 0u64);
            let t = Instant::now();
            for k in keys.iter().step_by(7) {
                a += d.get(&**k).copied().unwrap_or(0);
            }
            let d_get = t.elapsed();
            let t = Instant::now();
            for k in keys.iter().step_by(7) {
                b += h.get(&**k).copied().unwrap_or(0);
            }
            let h_get = t.elapsed();
            assert_eq!(a, b);
            let t = Instant::now();
            for k in &keys {
                d.remove(&**k);
            }
            let d_rm = t.elapsed();
            let t = Instant::now();
            for k in &keys {
                h.remove(&**k);
            }
            let h_rm = t.elapsed();
            let ns = |d: std::time::Duration, n: usize| d.as_nanos() as f64 / n as f64;
            println!(
                "round {round}: ns per op, DenseMap vs HashMap: insert {:.0} vs {:.0}, \
                 lookup {:.0} vs {:.0}, remove {:.0} vs {:.0}",
                ns(d_ins, n),
                ns(h_ins, n),
                ns(d_get, n / 7),
                ns(h_get, n / 7),
                ns(d_rm, n),
                ns(h_rm, n)
            );
        }
    }

    /// The entries' vector grows by an eighth, not by doubling.
    #[test]
    fn entries_grow_by_an_eighth() {
        let mut d: DenseMap<u64, u64> = DenseMap::new();
        for i in 0..100_000 {
            d.insert(i, i);
            assert!(
                d.entries.capacity() <= d.len() + d.len() / 8 + MIN_GROWTH,
                "{} entries, capacity {}",
                d.len(),
                d.entries.capacity()
            );
        }
        for i in 0..99_000 {
            d.remove(&i);
        }
        assert!(d.entries.capacity() < 4_000, "gave memory back");
        assert_eq!(d.get(&99_500), Some(&99_500));
    }
}
