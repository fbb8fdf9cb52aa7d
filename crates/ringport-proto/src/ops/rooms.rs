//! JOIN, LEAVE, ROOM_RESULT, PUBLISH and PUBLISH_ACK: client requests on rooms.

use bytes::{BufMut, Bytes};

use super::Body;
use crate::codes::Status;
use crate::error::Error;
use crate::stream::{check_name, read_name};
use crate::wire::{self, Reader};

/// JOIN or LEAVE (client → server). The op code says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRequest {
    /// Client-chosen id echoed in the ROOM_RESULT, to match replies.
    pub req_id: u32,
    /// Room name without the `room:` prefix.
    pub room: String,
}

impl Body for RoomRequest {
    fn body_len(&self) -> Result<usize, Error> {
        Ok(4 + 1 + check_name("room", &self.room)?)
    }

    fn write<B: BufMut>(&self, dst: &mut B) {
        dst.put_u32(self.req_id);
        wire::put_str8(dst, &self.room);
    }

    fn read(r: &mut Reader) -> Result<Self, Error> {
        Ok(RoomRequest {
            req_id: r.u32("request id")?,
            room: read_name(r, "room")?,
        })
    }
}

/// ROOM_RESULT (server → client): the answer to a JOIN or LEAVE.
///
/// A successful JOIN carries the room stream's position at the moment the
/// connection became a member: every offset above `tail` (same `epoch`) is
/// delivered live, so the client can resume the room from (`epoch`, `tail`)
/// even before its first message arrives. LEAVE and failed JOINs carry 0, 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomResult {
    /// The `req_id` of the JOIN/LEAVE this answers.
    pub req_id: u32,
    /// `Status::OK` or why the request failed.
    pub status: Status,
    /// Epoch of `room:<name>` (successful JOIN), else 0.
    pub epoch: u32,
    /// Highest offset of `room:<name>` not delivered live to this connection
    /// (successful JOIN), else 0.
    pub tail: u64,
}

impl Body for RoomResult {
    fn body_len(&self) -> Result<usize, Error> {
        Ok(4 + 2 + 4 + 8)
    }

    fn write<B: BufMut>(&self, dst: &mut B) {
        dst.put_u32(self.req_id);
        dst.put_u16(self.status.0);
        dst.put_u32(self.epoch);
        dst.put_u64(self.tail);
    }

    fn read(r: &mut Reader) -> Result<Self, Error> {
        Ok(RoomResult {
            req_id: r.u32("request id")?,
            status: Status(r.u16("status")?),
            epoch: r.u32("epoch")?,
            tail: r.u64("tail")?,
        })
    }
}

/// PUBLISH (client → server): a message for everyone in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Room name without the `room:` prefix.
    pub room: String,
    /// Client sequence number, echoed in PUBLISH_ACK; lets the client retry
    /// without duplicates and match acks to sends.
    pub seq: u64,
    /// Message body; runs to the end of the frame.
    pub payload: Bytes,
}

impl Body for Publish {
    fn body_len(&self) -> Result<usize, Error> {
        Ok(1 + check_name("room", &self.room)? + 8 + self.payload.len())
    }

    fn write<B: BufMut>(&self, dst: &mut B) {
        wire::put_str8(dst, &self.room);
        dst.put_u64(self.seq);
        dst.put_slice(&self.payload);
    }

    fn read(r: &mut Reader) -> Result<Self, Error> {
        Ok(Publish {
            room: read_name(r, "room")?,
            seq: r.u64("seq")?,
            payload: r.rest(),
        })
    }
}

/// PUBLISH_ACK (server → client): the outcome of one PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    /// The PUBLISH's `seq`.
    pub seq: u64,
    /// `Status::OK` once the message is accepted for delivery, else why not.
    pub status: Status,
}

impl Body for PublishAck {
    fn body_len(&self) -> Result<usize, Error> {
        Ok(10)
    }

    fn write<B: BufMut>(&self, dst: &mut B) {
        dst.put_u64(self.seq);
        dst.put_u16(self.status.0);
    }

    fn read(r: &mut Reader) -> Result<Self, Error> {
        Ok(PublishAck {
            seq: r.u64("seq")?,
            status: Status(r.u16("status")?),
        })
    }
}
