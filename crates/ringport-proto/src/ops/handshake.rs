//! HELLO, WELCOME and RESUME_RESULT: the handshake and session resumption.

use bytes::{BufMut, Bytes};

use super::Body;
use crate::codes::Status;
use crate::error::Error;
use crate::stream::StreamName;
use crate::wire::{self, Reader};

/// HELLO (client → server), the first frame on every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Opaque credential the gateway verifies (e.g. a JWT); u16-prefixed.
    pub token: Bytes,
    /// Free-form client description ("sdk/1.2 android/14") for logs and metrics.
    pub client_info: String,
    /// Present when the client reconnects and wants missed messages.
    pub resume: Option<Resume>,
}

/// What a reconnecting client already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Session id from the previous WELCOME; never 0 (0 means "no resume").
    pub session_id: u64,
    /// Per-stream positions the client has fully received.
    pub streams: Vec<ResumePoint>,
}

/// One stream's position in a [`Resume`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// Stream the position refers to.
    pub stream: StreamName,
    /// Epoch the offset belongs to (offsets restart when the epoch changes).
    pub epoch: u32,
    /// Last offset the client received; delivery resumes at `last_offset + 1`.
    pub last_offset: u64,
}

impl Body for Hello {
    fn body_len(&self) -> Result<usize, Error> {
        let mut n = 2 + wire::check_len("token", self.token.len(), u16::MAX.into())?;
        n += 2 + wire::check_len("client info", self.client_info.len(), u16::MAX.into())?;
        n += 8 + 2;
        if let Some(r) = &self.resume {
            if r.session_id == 0 {
                return Err(Error::InvalidValue {
                    field: "session id",
                    value: 0,
                });
            }
            wire::check_len("resume streams", r.streams.len(), u16::MAX.into())?;
            for p in &r.streams {
                n += p.stream.encoded_len()? + 4 + 8;
            }
        }
        Ok(n)
    }

    fn write<B: BufMut>(&self, dst: &mut B) {
        wire::put_blob16(dst, &self.token);
        wire::put_blob16(dst, self.client_info.as_bytes());
        match &self.resume {
            None => {
                dst.put_u64(0);
                dst.put_u16(0);
            }
            Some(r) => {
                dst.put_u64(r.session_id);
                dst.put_u16(r.streams.len() as u16);
                for p in &r.streams {
                    p.stream.put(dst);
                    dst.put_u32(p.epoch);
                    dst.put_u64(p.last_offset);
                }
            }
        }
    }

    fn read(r: &mut Reader) -> Result<Self, Error> {
        let token = r.blob16("token")?;
        let client_info = r.str16("client info")?;
        let session_id = r.u64("session id")?;
        let count = r.u16("resume count")?;
        if session_id == 0 {
            if count != 0 {
                return Err(Error::InvalidValue {
                    field: "resume count without session id",
                    value: count.into(),
                });
            }
            return Ok(Hello {
                token,
                client_info,
                resume: None,
            });
        }
        // No with_capacity(count): the vector grows only as entries parse.
        let mut streams = Vec::new();
        for _ in 0..count {
            let stream = StreamName::read(r)?;
            let epoch = r.u32("resume epoch")?;
            let last_offset = r.u64("resume offset")?;
            streams.push(ResumePoint {
                stream,
                epoch,
                last_offset,
            });
        }
        Ok(Hello {
            token,
            client_info,
            resume: Some(Resume {
                session_id,
                streams,
            }),
        })
    }
}

/// WELCOME (server → client): the handshake succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Id to present in a later HELLO's resume data; never 0.
    pub session_id: u64,
    /// Epoch of the client's user inbox; ACK offsets refer to it.
    pub epoch: u32,
    /// Tail of the user inbox when this connection was registered for it:
    /// offsets above it are delivered live (0 for anonymous clients).
    pub inbox_tail: u64,
    /// Epoch of the broadcast stream `room:*`.
    pub broadcast_epoch: u32,
    /// Tail of the broadcast stream when this connection became a recipient
    /// of it: offsets above it (in `broadcast_epoch`) are delivered live.
    pub broadcast_tail: u64,
    /// How often the client must send something (PING if idle), in ms.
    pub heartbeat_interval_ms: u32,
    /// Longest heartbeat interval a SLEEP may be granted, in ms.
    pub max_sleep_interval_ms: u32,
    /// Largest payload length the server accepts.
    pub max_payload: u32,
    /// Most rooms this connection may be joined to at once.
    pub max_rooms: u16,
    /// Server wall-clock time in ms since the Unix epoch, for clock skew.
    pub server_time_ms: u64,
    /// The authenticated user id: the inbox is `user:<user>`. Empty for
    /// anonymous clients (no inbox).
    pub user: String,
}

impl Body for Welcome {
    fn body_len(&self) -> Result<usize, Error> {
        let user = wire::check_len("user", self.user.len(), u8::MAX.into())?;
        Ok(8 + 4 + 8 + 4 + 8 + 4 + 4 + 4 + 2 + 8 + 1 + user)
    }

    fn write<B: BufMut>(&self, dst: &mut B) {
        dst.put_u64(self.session_id);
        dst.put_u32(self.epoch);
        dst.put_u64(self.inbox_tail);
        dst.put_u32(self.broadcast_epoch);
        dst.put_u64(self.broadcast_tail);
        dst.put_u32(self.heartbeat_interval_ms);
        dst.put_u32(self.max_sleep_interval_ms);
        dst.put_u32(self.max_payload);
        dst.put_u16(self.max_rooms);
        dst.put_u64(self.server_time_ms);
        wire::put_str8(dst, &self.user);
    }

    fn read(r: &mut Reader) -> Result<Self, Error> {
        Ok(Welcome {
            session_id: r.u64("session id")?,
            epoch: r.u32("epoch")?,
            inbox_tail: r.u64("inbox tail")?,
            broadcast_epoch: r.u32("broadcast epoch")?,
            broadcast_tail: r.u64("broadcast tail")?,
            heartbeat_interval_ms: r.u32("heartbeat interval")?,
            max_sleep_interval_ms: r.u32("max sleep interval")?,
            max_payload: r.u32("max payload")?,
            max_rooms: r.u16("max rooms")?,
            server_time_ms: r.u64("server time")?,
            user: r.str8("user")?,
        })
    }
}

/// How resuming one stream turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// Everything after `last_offset` will be delivered; nothing was lost.
    Resumed,
    /// NOT_RECOVERED: offsets `missing_from..missing_to` (same epoch) are gone;
    /// delivery continues at `missing_to`.
    Gap,
    /// NOT_RECOVERED: the stream restarted in `new_epoch`; everything after
    /// `last_offset` in `old_epoch` is gone; delivery continues at
    /// `missing_to` in `new_epoch`.
    EpochChanged,
    /// The server refused to resume the stream, for the reason given
    /// (`FORBIDDEN`, `LIMIT_EXCEEDED`, ...; never `OK`): the connection is not
    /// a member of it and none of its messages follow.
    Refused(Status),
}

impl ResumeOutcome {
    /// The wire value of the `outcome` field.
    pub fn code(self) -> u8 {
        match self {
            ResumeOutcome::Resumed => 0,
            ResumeOutcome::Gap => 1,
            ResumeOutcome::EpochChanged => 2,
            ResumeOutcome::Refused(_) => 3,
        }
    }

    /// The wire value of the `status` field: `OK` unless refused.
    pub fn status(self) -> Status {
        match self {
            ResumeOutcome::Refused(s) => s,
            _ => Status::OK,
        }
    }
}

/// RESUME_RESULT (server → client): one per stream in the HELLO's resume data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeResult {
    /// Stream this result is about.
    pub stream: StreamName,
    /// Whether the stream resumed cleanly, with loss, or not at all.
    pub outcome: ResumeOutcome,
    /// Epoch the client asked to resume.
    pub old_epoch: u32,
    /// Epoch delivery continues in (equals `old_epoch` unless `EpochChanged`).
    pub new_epoch: u32,
    /// First lost offset (0 when `Resumed`).
    pub missing_from: u64,
    /// Offset delivery continues at; with `missing_from` a half-open lost range.
    pub missing_to: u64,
}

impl Body for ResumeResult {
    fn body_len(&self) -> Result<usize, Error> {
        if self.outcome == ResumeOutcome::Refused(Status::OK) {
            return Err(Error::InvalidValue {
                field: "resume status",
                value: 0,
            });
        }
        Ok(self.stream.encoded_len()? + 1 + 2 + 4 + 4 + 8 + 8)
    }

    fn write<B: BufMut>(&self, dst: &mut B) {
        self.stream.put(dst);
        dst.put_u8(self.outcome.code());
        dst.put_u16(self.outcome.status().0);
        dst.put_u32(self.old_epoch);
        dst.put_u32(self.new_epoch);
        dst.put_u64(self.missing_from);
        dst.put_u64(self.missing_to);
    }

    fn read(r: &mut Reader) -> Result<Self, Error> {
        let stream = StreamName::read(r)?;
        let code = r.u8("resume outcome")?;
        let status = Status(r.u16("resume status")?);
        let outcome = match (code, status) {
            (0, Status::OK) => ResumeOutcome::Resumed,
            (1, Status::OK) => ResumeOutcome::Gap,
            (2, Status::OK) => ResumeOutcome::EpochChanged,
            (3, s) if s != Status::OK => ResumeOutcome::Refused(s),
            (0..=2, s) => {
                return Err(Error::InvalidValue {
                    field: "resume status",
                    value: s.0.into(),
                })
            }
            (v, _) => {
                return Err(Error::InvalidValue {
                    field: "resume outcome",
                    value: v.into(),
                })
            }
        };
        Ok(ResumeResult {
            stream,
            outcome,
            old_epoch: r.u32("old epoch")?,
            new_epoch: r.u32("new epoch")?,
            missing_from: r.u64("missing from")?,
            missing_to: r.u64("missing to")?,
        })
    }
}
