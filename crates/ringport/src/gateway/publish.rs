//! Fan-out: one message, numbered once, encoded once, shared by every recipient.
//!
//! 1. [`Shared::publish`] (any thread: the HTTP API or a shard handling a client PUBLISH)
//!    takes the stream's sequencing stripe ([`Sequencer`]: per stream, not one global lock),
//!    asks the [`StreamSink`](crate::offsets::StreamSink) for the stream's next offset with
//!    a closure that encodes the PUSH frame once into `Bytes`, and queues the resulting
//!    [`Delivery`] for **every** shard ([`super::handoff::DeliveryQueues`]) before letting go
//!    of the stripe — so each shard sees a stream's offsets in increasing order. The
//!    publisher gets the stream, epoch and offset back at once; it does not wait for the
//!    shards unless it asked to (a [`Tally`]).
//! 2. On each shard, the drain task takes the whole queue and [`GatewayHandler::deliver`]
//!    hands each shared frame to each local recipient's session (`offer_push`: sent, held
//!    while asleep, or skipped past the holdback) and queues what the session transmits with
//!    `ctx.send` — a `Bytes` clone, no copy. Everything queued to one connection in one loop
//!    turn leaves in one gathered send.
//! 3. A connection that already got an offset of that stream (offset ≤ its last delivered)
//!    drops it as a duplicate: replayed history and live traffic can overlap without gaps or
//!    doubles.
//!
//! With `rooms.batch_window_ms > 0`, a shard sends each room's messages at most once per
//! window: a room message goes out at once if the shard sent nothing of that room for a
//! whole window (no delay when traffic is light; a busy room does not hold a quiet one), and
//! the ones after it wait until the window since that send has passed
//! (checked every loop turn, so at timer-tick precision) and then go out together. An
//! urgent message does not wait, but first sends its stream's batched messages: every stream
//! reaches a connection in offset order (docs/protocol.md 4.8).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use ringport_io::EngineHandle;
use ringport_proto::{PushClass, PushEncoder, StreamName, MAX_NAME_LEN};

use super::handler::GatewayHandler;
use super::handoff::Tally;
use super::{Shared, BROADCAST_ROOM};
use crate::metrics::DeliveryKind;

/// Who a message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Room(String),
    User(String),
    Everyone,
}

impl Target {
    pub(crate) fn stream(&self) -> StreamName {
        match self {
            Target::Room(r) => StreamName::Room(r.clone()),
            Target::User(u) => StreamName::User(u.clone()),
            Target::Everyone => StreamName::Room(BROADCAST_ROOM.to_owned()),
        }
    }
}

/// One numbered, encoded message on its way to the shards.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The stream it was numbered on; says who receives it (a room's members, a user's
    /// connections, or everyone for the broadcast stream `room:*`).
    pub stream: StreamName,
    /// The epoch it was numbered in (another node's, for a stream that node owns).
    pub epoch: u32,
    pub offset: u64,
    /// The encoded PUSH frame, shared by every recipient.
    pub frame: Bytes,
    pub class: PushClass,
    pub kind: DeliveryKind,
    /// When the push arrived (API call or client PUBLISH), for the push-to-send histogram.
    pub at: Instant,
    /// Recipient counts for a publisher waiting for delivery (`?wait=delivered`).
    pub tally: Option<Tally>,
}

/// Where a published message went: its stream, epoch and offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    pub stream: StreamName,
    pub epoch: u32,
    pub offset: u64,
    /// In a cluster: why the message could not be handed to the other nodes (it was
    /// delivered on this node only).
    pub not_forwarded: Option<crate::cluster::DropReason>,
}

/// Sequencing locks, striped by stream name: pushes to one stream are numbered and queued
/// for the shards one at a time (so every shard sees its offsets in order), while pushes to
/// different streams rarely wait for each other.
#[derive(Debug)]
pub(crate) struct Sequencer {
    stripes: Box<[Mutex<()>]>,
}

impl Sequencer {
    pub fn new(stripes: usize) -> Sequencer {
        Sequencer {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Returns once every numbering that held a stripe when it was called has let go
    /// (cluster departure: everything numbered here was handed to the bus).
    pub fn barrier(&self) {
        for stripe in self.stripes.iter() {
            drop(stripe.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    fn lock(&self, stream: &StreamName) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        stream.hash(&mut h);
        let i = (h.finish() % self.stripes.len() as u64) as usize;
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Delivery {
    /// The room it is for, unless it is a user or broadcast message.
    pub(super) fn room(&self) -> Option<&str> {
        match &self.stream {
            StreamName::Room(room) if room != BROADCAST_ROOM => Some(room),
            _ => None,
        }
    }
}

/// Why a message was not published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublishError {
    /// The message itself is refused (bad name, too large): do not retry as is.
    Rejected(String),
    /// The shards are too far behind (`rooms.max_pending_deliveries`): retry later.
    Busy(String),
}

/// One message to publish.
#[derive(Debug)]
pub(crate) struct Message {
    pub target: Target,
    pub kind: DeliveryKind,
    pub payload: Bytes,
    pub urgent: bool,
    /// When the push arrived.
    pub at: Instant,
    /// Set when the publisher waits for the recipient count.
    pub tally: Option<Tally>,
}

/// Who numbers a message.
#[derive(Clone, Copy)]
enum Numbering<'a> {
    /// This node: the next offset of its log; in a cluster also handed to the bus, numbered.
    Here(Option<&'a crate::cluster::ClusterBus>),
    /// Another node (the stream's owner) numbered it `(epoch, offset)`.
    Given(u32, u64),
}

impl Shared {
    /// Numbers `m` on its target's stream, encodes its PUSH once and queues the delivery for
    /// every shard, under the stream's sequencing stripe; in a cluster, also hands it to the
    /// bus for the other nodes. `Err` says why the message was not published (nothing was
    /// numbered then).
    ///
    /// In a cluster, a stream another live node owns is numbered there: the message is
    /// handed to the bridge, which forwards it to the owner, and comes back numbered like
    /// any message from the bus. The answer then carries no position (epoch and offset 0;
    /// a client PUBLISH_ACK has none). Only when that hand-off fails is the message numbered
    /// here (in this node's epoch), with `not_forwarded` saying why.
    pub(crate) fn publish(
        &self,
        handle: &EngineHandle<GatewayHandler>,
        m: Message,
    ) -> Result<Published, PublishError> {
        let Some(bus) = &self.cluster else {
            return self.publish_local(handle, m);
        };
        let stream = m.target.stream();
        let Some(owner) = bus.remote_owner(&stream) else {
            return self.publish_owned(handle, m);
        };
        self.handoff_room()?;
        let client_publish = m.kind == DeliveryKind::Publish;
        match bus.forward(
            &m.target,
            &m.payload,
            m.urgent,
            client_publish,
            None,
            Some(owner),
        ) {
            Ok(()) => Ok(Published {
                stream,
                epoch: 0,
                offset: 0,
                not_forwarded: None,
            }),
            Err(reason) => {
                let mut published = self.publish_owned(handle, m)?;
                published.not_forwarded = Some(reason);
                Ok(published)
            }
        }
    }

    /// Numbers `m` on this node whoever owns its stream (this node is the owner, another node
    /// forwarded it here, or the owner cannot be reached) and hands the numbered message to
    /// the bus. Single node: the same as [`Self::publish_local`].
    pub(crate) fn publish_owned(
        &self,
        handle: &EngineHandle<GatewayHandler>,
        m: Message,
    ) -> Result<Published, PublishError> {
        self.handoff_room()?;
        self.sequence(handle, m, Numbering::Here(self.cluster.as_deref()))
            .map_err(PublishError::Rejected)
    }

    /// A message another node numbered: kept in this node's replica of the stream and
    /// delivered to its members with the owner's (epoch, offset); a duplicate is dropped.
    pub(crate) fn publish_numbered(
        &self,
        handle: &EngineHandle<GatewayHandler>,
        m: Message,
        epoch: u32,
        offset: u64,
    ) -> Result<Published, PublishError> {
        self.handoff_room()?;
        self.sequence(handle, m, Numbering::Given(epoch, offset))
            .map_err(PublishError::Rejected)
    }

    /// [`Self::publish`] on this node only: what a message from another node of the cluster
    /// gets (it is not forwarded again).
    pub(crate) fn publish_local(
        &self,
        handle: &EngineHandle<GatewayHandler>,
        m: Message,
    ) -> Result<Published, PublishError> {
        self.handoff_room()?;
        self.sequence(handle, m, Numbering::Here(None))
            .map_err(PublishError::Rejected)
    }

    /// `Err(Busy)` when the shards are `rooms.max_pending_deliveries` behind.
    fn handoff_room(&self) -> Result<(), PublishError> {
        let Err(queued) = self.handoff.check_room() else {
            return Ok(());
        };
        let max = self.handoff.max_pending();
        crate::metrics::limits::hit(
            crate::metrics::Limit::DeliveryBacklog,
            1,
            &format_args!("rooms.max_pending_deliveries ({max}) reached: refusing pushes"),
        );
        Err(PublishError::Busy(format!(
            "{queued} messages wait for a shard (rooms.max_pending_deliveries = {max}); \
             nothing was published, retry later"
        )))
    }

    /// Checks, numbers, encodes and queues `m` (the body of [`Self::publish`]).
    fn sequence(
        &self,
        handle: &EngineHandle<GatewayHandler>,
        m: Message,
        numbering: Numbering<'_>,
    ) -> Result<Published, String> {
        let Message {
            target,
            kind,
            payload,
            urgent,
            at,
            tally,
        } = m;
        let stream = target.stream();
        let name = stream.name();
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(format!(
                "name must be 1 to {MAX_NAME_LEN} bytes (got {})",
                name.len()
            ));
        }
        if matches!(&target, Target::Room(r) if r == BROADCAST_ROOM) {
            return Err(format!(
                "room {BROADCAST_ROOM:?} is reserved for broadcasts (use /v1/broadcast)"
            ));
        }
        // PUSH body: stream (2 + name) + epoch (4) + offset (8) + payload.
        let body = 2 + name.len() + 12 + payload.len();
        if body > self.session.max_payload as usize {
            return Err(format!(
                "payload of {} bytes makes a PUSH payload over protocol.max_payload ({})",
                payload.len(),
                self.session.max_payload
            ));
        }
        let class = match (&target, urgent) {
            (_, true) => PushClass::Urgent,
            (Target::User(_), false) => PushClass::Direct,
            _ => PushClass::Room,
        };
        // Every encoding rule is checked before an offset is taken, so a refused message
        // never leaves a hole in the stream; encoding at the offset cannot fail.
        let push = PushEncoder::new(&stream, &payload).map_err(|e| e.to_string())?;
        let now = self.clock.unix_ms(at);
        let _order = self.sequencer.lock(&stream);
        let (epoch, offset, frame, not_forwarded) = match numbering {
            Numbering::Here(bus) => {
                // A replica handed over by a node that left is continued in its epoch only
                // by the stream's owner (not by a node numbering it because it is cut off).
                let adopt = bus.is_some_and(|b| b.owns(&stream));
                let (epoch, offset, frame) =
                    self.sink.append(&stream, now, adopt, &mut |epoch, offset| {
                        push.encode(epoch, offset, urgent)
                    });
                // Handed to the bus under the stream's stripe: the bus carries each stream's
                // offsets in order.
                let not_forwarded = match bus {
                    Some(bus) => {
                        let publish = kind == DeliveryKind::Publish;
                        let numbered = Some((epoch, offset));
                        bus.forward(&target, &payload, urgent, publish, numbered, None)
                            .err()
                    }
                    None => None,
                };
                (epoch, offset, frame, not_forwarded)
            }
            Numbering::Given(epoch, offset) => {
                let kept = self
                    .sink
                    .insert(&stream, epoch, offset, now, &mut |offset| {
                        push.encode(epoch, offset, urgent)
                    });
                let Some(frame) = kept else {
                    // Already kept and delivered here.
                    return Ok(Published {
                        stream,
                        epoch,
                        offset,
                        not_forwarded: None,
                    });
                };
                (epoch, offset, frame, None)
            }
        };
        let d = Arc::new(Delivery {
            stream: stream.clone(),
            epoch,
            offset,
            frame,
            class,
            kind,
            at,
            tally,
        });
        self.handoff.post(handle, &d);
        Ok(Published {
            stream,
            epoch,
            offset,
            not_forwarded,
        })
    }
}
