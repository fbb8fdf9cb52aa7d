//! ringport wire protocol, sans-IO.
//!
//! This crate is the whole protocol and nothing else: no sockets, no clock, no
//! threads, no `unsafe`. The gateway (or a client) feeds it bytes and a
//! monotonic `now` in milliseconds and sends what it returns. Every behaviour
//! is therefore testable with a virtual clock.
//!
//! - [`Decoder`] turns a receive buffer into [`Frame`]s incrementally: an
//!   incomplete frame is `Ok(None)`, never an error; an oversized length is
//!   rejected from the 8-byte header before any body byte is read; nothing is
//!   allocated from a length read off the wire; no input panics.
//! - [`Decoder::view`] finds a whole frame without decoding or copying it; a PUSH decodes
//!   from that view in place ([`FrameView::push`] → [`PushRef`], name and payload
//!   borrowed), for clients that receive millions of messages a second.
//! - [`Frame::encode`] appends to a `BytesMut` or `Vec<u8>`;
//!   [`Frame::to_bytes`] returns shareable `Bytes` (encode a PUSH once, send
//!   it to every recipient).
//! - [`Session`] is the server side of one connection: handshake deadline,
//!   heartbeat (tolerate, probe, close), sleep/wake with bounded holdback, and
//!   protocol-error closes for frames in the wrong state.
//! - [`ClientSession`] is its mirror, the client side: resume entries,
//!   per-stream dedupe and loss reports, inbox ACKs, heartbeat duty and
//!   sleep/wake — the reference for the client rules of the protocol.
//! - [`Error`] is the one error type; each variant names its cause.
//!
//! The wire format is specified in `docs/protocol.md` (v1).
//!
//! ```
//! use bytes::BytesMut;
//! use ringport_proto::{Decoder, Frame, Hello};
//!
//! let hello = Frame::Hello(Hello {
//!     token: "secret".into(),
//!     client_info: "demo/1".into(),
//!     resume: None,
//! });
//! let mut buf = BytesMut::new();
//! hello.encode(&mut buf).unwrap();
//! let mut partial = buf.split_to(5);
//! let decoder = Decoder::default();
//! assert_eq!(decoder.decode(&mut partial).unwrap(), None); // need more bytes
//! partial.unsplit(buf);
//! assert_eq!(decoder.decode(&mut partial).unwrap(), Some(hello));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
mod codec;
mod codes;
mod error;
mod frame;
mod heartbeat;
mod ops;
pub mod session;
mod stream;
mod wire;

#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod spec;

pub use client::{ClientConfig, ClientEvent, ClientEventRef, ClientSession, ClientState};
pub use codec::{Decoder, FrameView};
pub use codes::{CloseReason, Status};
pub use error::Error;
pub use frame::{
    Header, Op, DEFAULT_MAX_PAYLOAD, FLAG_URGENT, HANDSHAKE_MAX_PAYLOAD, HEADER_LEN, VERSION,
};
pub use ops::{
    Ack, Frame, Hello, Publish, PublishAck, Push, PushEncoder, PushRef, Resume, ResumeOutcome,
    ResumePoint, ResumeResult, RoomRequest, RoomResult, Skipped, WakeAck, Welcome,
};
pub use session::{Event, PushClass, PushOutcome, Session, SessionConfig, State, WelcomeParams};
pub use stream::{is_valid_name, StreamName, StreamRef, KIND_ROOM, KIND_USER, MAX_NAME_LEN};
