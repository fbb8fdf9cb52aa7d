//! One shard's membership indexes: room → members on this shard, user → connections on this
//! shard. Gateway-wide numbers (a room's online count, distinct users) are sums or unions
//! over shards, computed by the control plane when asked.
//!
//! A room's members are a dense vector; each connection remembers its position in it
//! (`Joined::pos`), so leaving is a `swap_remove` plus one position fix-up, O(1) whatever
//! the room's size.

use std::collections::HashMap;
use std::sync::Arc;

use ringport_io::ConnId;

use super::Target;
use crate::cluster::ClusterBus;

/// Room name → members on this shard.
#[derive(Debug, Default)]
pub(crate) struct RoomIndex {
    rooms: HashMap<String, Vec<ConnId>>,
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

    /// Adds `conn` to `room`; returns its position in the member list.
    pub fn join(&mut self, room: &str, conn: ConnId) -> usize {
        let members = match self.rooms.get_mut(room) {
            Some(m) => m,
            None => {
                if let Some(bus) = &self.bus {
                    bus.interest(&Target::Room(room.to_owned()), true);
                }
                self.rooms.entry(room.to_owned()).or_default()
            }
        };
        members.push(conn);
        members.len() - 1
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

    /// Members of `room` on this shard.
    pub fn members(&self, room: &str) -> &[ConnId] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    /// Rooms with at least one member on this shard.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }
}

/// User id → that user's connections on this shard (one per device).
#[derive(Debug, Default)]
pub(crate) struct UserIndex {
    users: HashMap<String, Vec<ConnId>>,
    /// Told when a user gains its first or loses its last connection here (cluster only).
    bus: Option<Arc<ClusterBus>>,
}

impl UserIndex {
    pub fn new(bus: Option<Arc<ClusterBus>>) -> UserIndex {
        UserIndex {
            users: HashMap::new(),
            bus,
        }
    }

    pub fn add(&mut self, user: &str, conn: ConnId) {
        match self.users.get_mut(user) {
            Some(v) => v.push(conn),
            None => {
                self.users.insert(user.to_owned(), vec![conn]);
                if let Some(bus) = &self.bus {
                    bus.interest(&Target::User(user.to_owned()), true);
                }
            }
        }
    }

    pub fn remove(&mut self, user: &str, conn: ConnId) {
        if let Some(v) = self.users.get_mut(user) {
            v.retain(|c| *c != conn);
            if v.is_empty() {
                self.users.remove(user);
                if let Some(bus) = &self.bus {
                    bus.interest(&Target::User(user.to_owned()), false);
                }
            }
        }
    }

    pub fn connections(&self, user: &str) -> &[ConnId] {
        self.users.get(user).map_or(&[], Vec::as_slice)
    }

    /// Users with at least one connection on this shard.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_reports_the_moved_member() {
        let ids: Vec<ConnId> = (1..=3).map(ConnId::from_u64).collect();
        let mut r = RoomIndex::default();
        assert_eq!(r.join("a", ids[0]), 0);
        assert_eq!(r.join("a", ids[1]), 1);
        assert_eq!(r.join("a", ids[2]), 2);
        assert_eq!(r.leave("a", 0), Some(ids[2]));
        assert_eq!(r.members("a"), &[ids[2], ids[1]]);
        assert_eq!(r.leave("a", 1), None);
        assert_eq!(r.leave("a", 0), None);
        assert!(r.members("a").is_empty());
        assert_eq!(r.names().count(), 0);

        let mut u = UserIndex::default();
        u.add("u", ids[0]);
        u.add("u", ids[1]);
        u.remove("u", ids[0]);
        assert_eq!(u.connections("u"), &[ids[1]]);
        u.remove("u", ids[1]);
        assert_eq!(u.names().count(), 0);
    }
}
