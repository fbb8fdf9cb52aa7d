//! One shard's membership indexes: room → members on this shard, user → connections on this
//! shard. Gateway-wide numbers (a room's online count, distinct users) are sums or unions
//! over shards, computed by the control plane when asked.
//!
//! A room's members are a dense vector; each connection remembers its position in it
//! (`Joined::pos`), so leaving is a `swap_remove` plus one position fix-up, O(1) whatever
//! the room's size.
//!
//! Names are interned: the index's key is an `Arc<str>` that every member's `Joined::room`
//! (and every connection's user id) shares, so a member costs no copy of the name.

use std::collections::HashMap;
use std::sync::Arc;

use ringport_io::ConnId;

use super::Target;
use crate::cluster::ClusterBus;
use crate::dense_map::DenseMap;

/// Room name → members on this shard.
#[derive(Debug, Default)]
pub(crate) struct RoomIndex {
    rooms: HashMap<Arc<str>, Vec<ConnId>>,
    /// Told when a room gains its first or loses its last member here (cluster only).
    bus: Option<Arc<ClusterBus>>,
}

impl RoomIndex {
    pub fn new(bus: Option<Arc<ClusterBus>>) -> RoomIndex {
        RoomIndex {
            rooms: HashMap::new(),
            bus,
        }
    }

    /// Adds `conn` to `room`; returns the interned name and its position in the member list.
    pub fn join(&mut self, room: &str, conn: ConnId) -> (Arc<str>, usize) {
        let name = match self.rooms.get_key_value(room) {
            Some((name, _)) => Arc::clone(name),
            None => {
                if let Some(bus) = &self.bus {
                    bus.interest(&Target::Room(room.to_owned()), true);
                }
                Arc::from(room)
            }
        };
        let members = self.rooms.entry(Arc::clone(&name)).or_default();
        if members.len() == members.capacity() {
            // By an eighth, not doubling: a room of every connection stays within 12.5% of
            // its size (issue 16).
            members.reserve_exact((members.len() / 8).max(4));
        }
        members.push(conn);
        (name, members.len() - 1)
    }

    /// Removes the member at `pos` of `room`. Returns the connection that moved into `pos`
    /// (its `Joined::pos` must be updated), if any.
    pub fn leave(&mut self, room: &str, pos: usize) -> Option<ConnId> {
        let members = self.rooms.get_mut(room)?;
        if pos >= members.len() {
            return None;
        }
        members.swap_remove(pos);
        let moved = members.get(pos).copied();
        if members.is_empty() {
            self.rooms.remove(room);
            if let Some(bus) = &self.bus {
                bus.interest(&Target::Room(room.to_owned()), false);
            }
        }
        moved
    }

    /// The interned name of `room`, if it has members on this shard.
    pub fn name(&self, room: &str) -> Option<Arc<str>> {
        self.rooms
            .get_key_value(room)
            .map(|(name, _)| Arc::clone(name))
    }

    /// Members of `room` on this shard.
    pub fn members(&self, room: &str) -> &[ConnId] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    /// Rooms with at least one member on this shard.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(|k| &**k)
    }
}

/// One user's connections on this shard: almost always one, held without a heap block
/// (16 bytes; several devices of one user are boxed).
#[derive(Debug)]
enum UserConns {
    One(ConnId),
    #[allow(clippy::box_collection)]
    Many(Box<Vec<ConnId>>),
}

impl UserConns {
    fn as_slice(&self) -> &[ConnId] {
        match self {
            UserConns::One(c) => std::slice::from_ref(c),
            UserConns::Many(v) => v,
        }
    }
}

/// User id → that user's connections on this shard (one per device).
#[derive(Debug, Default)]
pub(crate) struct UserIndex {
    /// One entry per user here, so one per connection at most: a [`DenseMap`] (issue 16).
    users: DenseMap<Arc<str>, UserConns>,
    /// Told when a user gains its first or loses its last connection here (cluster only).
    bus: Option<Arc<ClusterBus>>,
}

impl UserIndex {
    pub fn new(bus: Option<Arc<ClusterBus>>) -> UserIndex {
        UserIndex {
            users: DenseMap::new(),
            bus,
        }
    }

    /// Adds `conn` to `user`'s connections; returns the user id the index keeps (the same
    /// allocation as `user` when the user is new here), for the connection to share.
    pub fn add(&mut self, user: &Arc<str>, conn: ConnId) -> Arc<str> {
        if let Some(name) = self.name(user) {
            if let Some(conns) = self.users.get_mut(&*name) {
                match conns {
                    UserConns::One(first) => {
                        *conns = UserConns::Many(Box::new(vec![*first, conn]));
                    }
                    UserConns::Many(v) => v.push(conn),
                }
            }
            return name;
        }
        self.users.insert(Arc::clone(user), UserConns::One(conn));
        if let Some(bus) = &self.bus {
            bus.interest(&Target::User(user.to_string()), true);
        }
        Arc::clone(user)
    }

    pub fn remove(&mut self, user: &str, conn: ConnId) {
        let Some(conns) = self.users.get_mut(user) else {
            return;
        };
        match conns {
            UserConns::One(c) if *c == conn => {
                self.users.remove(user);
                if let Some(bus) = &self.bus {
                    bus.interest(&Target::User(user.to_owned()), false);
                }
            }
            UserConns::One(_) => {}
            UserConns::Many(v) => {
                v.retain(|c| *c != conn);
                if let [only] = v[..] {
                    *conns = UserConns::One(only);
                }
            }
        }
    }

    /// The user id as this index keeps it, if the user has a connection here.
    pub fn name(&self, user: &str) -> Option<Arc<str>> {
        self.users.get_key_value(user).map(|(k, _)| Arc::clone(k))
    }

    pub fn connections(&self, user: &str) -> &[ConnId] {
        self.users.get(user).map_or(&[], UserConns::as_slice)
    }

    /// Users with at least one connection on this shard.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(|k| &**k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_reports_the_moved_member() {
        let ids: Vec<ConnId> = (1..=3).map(ConnId::from_u64).collect();
        let mut r = RoomIndex::default();
        assert_eq!(r.join("a", ids[0]).1, 0);
        let (name, pos) = r.join("a", ids[1]);
        assert_eq!(pos, 1);
        assert!(
            Arc::ptr_eq(&name, &r.join("a", ids[2]).0),
            "one name per room"
        );
        assert_eq!(r.leave("a", 0), Some(ids[2]));
        assert_eq!(r.members("a"), &[ids[2], ids[1]]);
        assert_eq!(r.leave("a", 1), None);
        assert_eq!(r.leave("a", 0), None);
        assert!(r.members("a").is_empty());
        assert_eq!(r.names().count(), 0);

        let mut u = UserIndex::default();
        let first = u.add(&Arc::from("u"), ids[0]);
        let second = u.add(&Arc::from("u"), ids[1]);
        assert!(Arc::ptr_eq(&first, &second), "one name per user");
        u.add(&first, ids[2]);
        assert_eq!(u.connections("u"), &ids[..]);
        u.remove("u", ids[0]);
        assert_eq!(u.connections("u"), &ids[1..]);
        u.remove("u", ids[2]);
        u.remove("u", ids[1]);
        assert_eq!(u.names().count(), 0);
    }
}
