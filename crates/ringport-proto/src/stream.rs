//! Stream names: `room:<name>` and `user:<id>`.
//!
//! On the wire a stream name is one kind byte (1 = room, 2 = user) followed by
//! a u8 length and 1..=255 bytes of UTF-8 — 3 bytes of overhead, no prefix
//! text. The textual form `room:lobby` is only for humans and logs.

use core::fmt;

use bytes::BufMut;

use crate::error::Error;
use crate::wire::{self, Reader, SliceReader};

/// Wire value of the room kind byte.
pub const KIND_ROOM: u8 = 1;
/// Wire value of the user-inbox kind byte.
pub const KIND_USER: u8 = 2;
/// Longest room name or user id in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// A named, ordered stream of messages the server pushes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamName {
    /// A room's broadcast stream (`room:<name>`); anyone joined receives it.
    Room(String),
    /// A user's personal inbox (`user:<id>`); acknowledged with ACK.
    User(String),
}

/// A stream name borrowed from a receive buffer: what [`PushRef`](crate::PushRef) carries, so
/// a client decodes a PUSH without allocating its name. [`StreamRef::to_owned`] gives the
/// owning [`StreamName`]; the two compare equal when kind and name are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamRef<'a> {
    /// A room's broadcast stream (`room:<name>`).
    Room(&'a str),
    /// A user's personal inbox (`user:<id>`).
    User(&'a str),
}

impl<'a> StreamRef<'a> {
    /// The room or user name without its kind.
    pub fn name(&self) -> &'a str {
        match *self {
            StreamRef::Room(n) | StreamRef::User(n) => n,
        }
    }

    /// Whether this is a user inbox.
    pub fn is_user(&self) -> bool {
        matches!(self, StreamRef::User(_))
    }

    /// The owning form (allocates the name).
    pub fn to_owned(&self) -> StreamName {
        match *self {
            StreamRef::Room(n) => StreamName::Room(n.to_owned()),
            StreamRef::User(n) => StreamName::User(n.to_owned()),
        }
    }

    /// Reads a stream field in place: the same checks, in the same order, with the same
    /// errors as [`StreamName::read`].
    pub(crate) fn read(r: &mut SliceReader<'a>) -> Result<StreamRef<'a>, Error> {
        let kind = r.u8("stream kind")?;
        let name = r.str8("stream name")?;
        if name.is_empty() {
            return Err(Error::EmptyName {
                field: "stream name",
            });
        }
        match kind {
            KIND_ROOM => Ok(StreamRef::Room(name)),
            KIND_USER => Ok(StreamRef::User(name)),
            kind => Err(Error::UnknownStreamKind { kind }),
        }
    }
}

impl<'a> From<&'a StreamName> for StreamRef<'a> {
    fn from(s: &'a StreamName) -> StreamRef<'a> {
        s.as_ref()
    }
}

impl PartialEq<StreamRef<'_>> for StreamName {
    fn eq(&self, other: &StreamRef<'_>) -> bool {
        self.as_ref() == *other
    }
}

impl PartialEq<StreamName> for StreamRef<'_> {
    fn eq(&self, other: &StreamName) -> bool {
        *self == other.as_ref()
    }
}

impl fmt::Display for StreamRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamRef::Room(n) => write!(f, "room:{n}"),
            StreamRef::User(n) => write!(f, "user:{n}"),
        }
    }
}

impl fmt::Debug for StreamRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl StreamName {
    /// The borrowed form (no allocation).
    pub fn as_ref(&self) -> StreamRef<'_> {
        match self {
            StreamName::Room(n) => StreamRef::Room(n),
            StreamName::User(n) => StreamRef::User(n),
        }
    }

    /// The room or user name without its kind.
    pub fn name(&self) -> &str {
        match self {
            StreamName::Room(n) | StreamName::User(n) => n,
        }
    }

    /// Whether this is a user inbox.
    pub fn is_user(&self) -> bool {
        matches!(self, StreamName::User(_))
    }

    /// Parse the textual form `room:<name>` / `user:<id>`.
    pub fn parse(s: &str) -> Option<StreamName> {
        let (kind, name) = s.split_once(':')?;
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return None;
        }
        match kind {
            "room" => Some(StreamName::Room(name.to_owned())),
            "user" => Some(StreamName::User(name.to_owned())),
            _ => None,
        }
    }

    pub(crate) fn encoded_len(&self) -> Result<usize, Error> {
        Ok(2 + check_name("stream name", self.name())?)
    }

    pub(crate) fn put<B: BufMut>(&self, dst: &mut B) {
        dst.put_u8(match self {
            StreamName::Room(_) => KIND_ROOM,
            StreamName::User(_) => KIND_USER,
        });
        wire::put_str8(dst, self.name());
    }

    /// Whether the stream field at the start of `body` (an encoded PUSH payload) is this
    /// stream; compares bytes, allocates nothing.
    pub(crate) fn heads(&self, body: &[u8]) -> bool {
        let kind = match self {
            StreamName::Room(_) => KIND_ROOM,
            StreamName::User(_) => KIND_USER,
        };
        let name = self.name().as_bytes();
        body.len() >= 2 + name.len()
            && body[0] == kind
            && usize::from(body[1]) == name.len()
            && &body[2..2 + name.len()] == name
    }

    pub(crate) fn read(r: &mut Reader) -> Result<StreamName, Error> {
        let kind = r.u8("stream kind")?;
        let name = read_name(r, "stream name")?;
        match kind {
            KIND_ROOM => Ok(StreamName::Room(name)),
            KIND_USER => Ok(StreamName::User(name)),
            kind => Err(Error::UnknownStreamKind { kind }),
        }
    }
}

/// Whether `name` is a valid room name or user id for the gateway (docs/protocol.md
/// section 2): 1..=255 bytes of UTF-8 without whitespace or control characters. The wire
/// format carries any non-empty UTF-8; the gateway answers a name that breaks this rule
/// `INVALID` (JOIN, resume entry), the HTTP API with 400.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Validates a name (room or user id) for encoding; returns its length.
pub(crate) fn check_name(field: &'static str, name: &str) -> Result<usize, Error> {
    if name.is_empty() {
        return Err(Error::EmptyName { field });
    }
    wire::check_len(field, name.len(), MAX_NAME_LEN)
}

/// Reads a u8-prefixed, non-empty name.
pub(crate) fn read_name(r: &mut Reader, field: &'static str) -> Result<String, Error> {
    let name = r.str8(field)?;
    if name.is_empty() {
        return Err(Error::EmptyName { field });
    }
    Ok(name)
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamName::Room(n) => write!(f, "room:{n}"),
            StreamName::User(n) => write!(f, "user:{n}"),
        }
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
