//! [`ConnMap`]: a handler's per-connection state, indexed by [`ConnId`].
//!
//! A shard's slot indexes are dense (a freed slot is reused before a new one is taken), so
//! the map is a vector indexed by [`ConnId::index`]: O(1) without hashing. Each entry keeps
//! the full id, so a stale id (same slot, older generation) finds nothing: a late event for
//! a closed connection can never reach the state of the connection that reuses its slot.
//!
//! Memory: one `Option<(ConnId, T)>` per slot up to the highest slot used (16 bytes for a
//! boxed `T`). The vector grows by an eighth of its length at a time (at least
//! [`MIN_GROWTH`] entries) rather than doubling, so at a million connections it holds at
//! most ~12% spare entries instead of up to 100%.

use crate::ConnId;

/// Entries added at least when the vector grows.
pub const MIN_GROWTH: usize = 256;

/// Reserves room for `additional` more elements in `v`, growing by at most an eighth of its
/// length beyond what is needed (not doubling: per-connection tables stay close to their
/// size).
pub(crate) fn reserve_bounded<T>(v: &mut Vec<T>, additional: usize) {
    if v.capacity() - v.len() >= additional {
        return;
    }
    v.reserve_exact(additional.max(v.len() / 8).max(MIN_GROWTH));
}

/// Per-connection values of type `T`, keyed by [`ConnId`] (generation-checked).
#[derive(Debug)]
pub struct ConnMap<T> {
    entries: Vec<Option<(ConnId, T)>>,
    len: usize,
}

impl<T> Default for ConnMap<T> {
    fn default() -> Self {
        ConnMap::new()
    }
}

impl<T> ConnMap<T> {
    /// An empty map (allocates nothing until the first insert).
    pub fn new() -> ConnMap<T> {
        ConnMap {
            entries: Vec::new(),
            len: 0,
        }
    }

    /// Stores `value` for `id`. Whatever occupied `id`'s slot (the same id, or a stale one
    /// whose removal was missed) is returned.
    pub fn insert(&mut self, id: ConnId, value: T) -> Option<T> {
        let i = id.index();
        if i >= self.entries.len() {
            let missing = i + 1 - self.entries.len();
            reserve_bounded(&mut self.entries, missing);
            self.entries.resize_with(i + 1, || None);
        }
        let old = self.entries[i].replace((id, value)).map(|(_, v)| v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value of `id`, if `id` (this generation) is present.
    pub fn get(&self, id: ConnId) -> Option<&T> {
        match self.entries.get(id.index()) {
            Some(Some((k, v))) if *k == id => Some(v),
            _ => None,
        }
    }

    /// The value of `id`, mutably, if `id` (this generation) is present.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        match self.entries.get_mut(id.index()) {
            Some(Some((k, v))) if *k == id => Some(v),
            _ => None,
        }
    }

    /// Whether `id` (this generation) is present.
    pub fn contains(&self, id: ConnId) -> bool {
        self.get(id).is_some()
    }

    /// Removes and returns the value of `id`, if present. A stale `id` removes nothing.
    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        let slot = self.entries.get_mut(id.index())?;
        match slot {
            Some((k, _)) if *k == id => {
                self.len -= 1;
                slot.take().map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// Connections present.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no connection is present.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every connection and its value, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &T)> {
        self.entries.iter().flatten().map(|(k, v)| (*k, v))
    }

    /// Every value, in slot order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().flatten().map(|(_, v)| v)
    }

    /// Every value, mutably, in slot order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries.iter_mut().flatten().map(|(_, v)| v)
    }

    /// Every connection present, in slot order.
    pub fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.entries.iter().flatten().map(|(k, _)| *k)
    }

    /// Slot indexes the table spans (the highest slot used + 1); [`ConnMap::by_slot_mut`]
    /// takes one of them.
    pub fn slot_count(&self) -> usize {
        self.entries.len()
    }

    /// The connection in slot `index` (as [`ConnId::index`]), if any: for picking a random
    /// connection.
    pub fn by_slot_mut(&mut self, index: usize) -> Option<(ConnId, &mut T)> {
        match self.entries.get_mut(index) {
            Some(Some((k, v))) => Some((*k, v)),
            _ => None,
        }
    }

    /// Entries the table has room for without growing (slots, not connections).
    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_generations_find_nothing() {
        let mut m = ConnMap::new();
        let old = ConnId::new(0, 5, 1);
        let new = ConnId::new(0, 5, 2);
        assert_eq!(m.insert(old, "old"), None);
        assert_eq!(m.get(new), None, "same slot, newer generation");
        assert_eq!(m.remove(new), None, "a stale remove takes nothing");
        assert_eq!(m.len(), 1);
        assert_eq!(m.remove(old), Some("old"));
        assert!(m.is_empty());
        // The slot is reused by the next generation; the old id stays dead.
        assert_eq!(m.insert(new, "new"), None);
        assert_eq!(m.get(old), None);
        assert_eq!(m.get(new), Some(&"new"));
        *m.get_mut(new).unwrap() = "newer";
        assert_eq!(m.slot_count(), 6);
        assert_eq!(m.by_slot_mut(5).map(|(k, _)| k), Some(new));
        assert!(m.by_slot_mut(4).is_none());
        assert_eq!(m.ids().collect::<Vec<_>>(), vec![new]);
        assert_eq!(m.values().copied().collect::<Vec<_>>(), vec!["newer"]);
        assert!(!m.contains(ConnId::new(1, 5, 2)), "another shard's id");
    }

    #[test]
    fn insert_over_a_missed_removal_returns_the_stale_value() {
        let mut m = ConnMap::new();
        m.insert(ConnId::new(0, 3, 7), 1);
        assert_eq!(m.insert(ConnId::new(0, 3, 8), 2), Some(1));
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![(ConnId::new(0, 3, 8), &2)]
        );
    }

    #[test]
    fn grows_by_an_eighth_not_by_doubling() {
        let mut m = ConnMap::new();
        for slot in 0..100_000u32 {
            m.insert(ConnId::new(0, slot, 0), slot);
        }
        assert_eq!(m.len(), 100_000);
        assert!(
            m.capacity() <= 100_000 + 100_000 / 8 + MIN_GROWTH,
            "capacity {} for 100,000 entries",
            m.capacity()
        );
        for slot in (0..100_000u32).step_by(7) {
            assert_eq!(m.remove(ConnId::new(0, slot, 0)), Some(slot));
        }
        assert_eq!(m.len(), 100_000 - 100_000usize.div_ceil(7));
    }
}
