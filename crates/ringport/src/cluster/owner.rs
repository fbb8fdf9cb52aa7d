//! Publishes forwarded to their stream's owner node (request/reply on
//! `{prefix}.node.{id}.publish`, see docs/architecture.md, "One sequence per stream").
//!
//! A node that receives a push or client PUBLISH for a stream another live node owns does
//! not number it: it sends it to the owner, which numbers it in its epoch, delivers it to its
//! own members, hands the numbered message to the bus (every node keeps it and delivers it
//! with the owner's epoch and offset) and answers `ok EPOCH OFFSET [REASON]`,
//! `busy TEXT` or `rejected TEXT`. When the owner does not answer within
//! `cluster.publish_timeout_ms` (or the broker is unreachable) the forwarding node numbers
//! the message itself, in its own epoch, and counts it as not having crossed the bus:
//! delivered, never lost silently, possibly in an epoch of its own.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use ringport_io::EngineHandle;

use super::{subject, ClusterBus, DropReason, Outbound};
use crate::gateway::{GatewayHandler, Message, PublishError, Published, Shared, Target};
use crate::metrics::DeliveryKind;

/// Header: the message is urgent.
pub(super) const URGENT: &str = "Rp-Urgent";
/// Header: a client PUBLISH (not an API push).
pub(super) const CLIENT_PUBLISH: &str = "Rp-Publish";
/// Header: the node that published it (for logs and debugging).
pub(super) const ORIGIN: &str = "Rp-Origin";
/// Header: the stream's subject (a forwarded publish travels on the owner's inbox).
const TARGET: &str = "Rp-Target";
/// Header: `NODE_EPOCH SEQ`, the numbering node's incarnation and its sequence of the
/// messages it numbered (`handover.rs`).
pub(super) const SEQ: &str = "Rp-Seq";
/// Headers: the owner's numbering of a message on a stream subject.
pub(super) const EPOCH: &str = "Rp-Epoch";
pub(super) const OFFSET: &str = "Rp-Offset";

/// The owner's answer to a forwarded publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnerAnswer {
    /// Numbered by the owner; `not_forwarded` when the owner could not hand it to the bus.
    Numbered {
        epoch: u32,
        offset: u64,
        not_forwarded: Option<DropReason>,
    },
    /// Not published (the owner's shards are behind, or the message is refused).
    Refused(PublishError),
}

/// The headers every message on the bus carries.
pub(super) fn headers(bus: &ClusterBus, m: &Outbound) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(ORIGIN, bus.node_id.as_str());
    if m.urgent {
        h.insert(URGENT, "1");
    }
    if m.client_publish {
        h.insert(CLIENT_PUBLISH, "1");
    }
    if let Some((epoch, offset)) = m.numbered {
        h.insert(EPOCH, epoch.to_string().as_str());
        h.insert(OFFSET, offset.to_string().as_str());
    }
    if m.to_owner.is_some() {
        h.insert(TARGET, m.subject.as_str());
    }
    if m.seq > 0 {
        let epoch = bus.epoch.load(Ordering::Relaxed);
        h.insert(SEQ, format!("{epoch} {}", m.seq).as_str());
    }
    h
}

/// The numbering node of a message, its incarnation and sequence (`Rp-Origin`, `Rp-Seq`).
pub(super) fn sequence(h: Option<&HeaderMap>) -> Option<(&str, u32, u64)> {
    let origin = header(h, ORIGIN)?;
    let (epoch, seq) = header(h, SEQ)?.split_once(' ')?;
    Some((origin, epoch.parse().ok()?, seq.parse().ok()?))
}

fn header<'a>(h: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    h.and_then(|h| h.get(name)).map(|v| v.as_str())
}

/// The owner's numbering in a message's headers.
pub(super) fn numbering(h: Option<&HeaderMap>) -> Option<(u32, u64)> {
    let epoch = header(h, EPOCH)?.parse().ok()?;
    let offset = header(h, OFFSET)?.parse().ok()?;
    Some((epoch, offset))
}

/// The message a bus message carries for `target`.
pub(super) fn message(target: Target, h: Option<&HeaderMap>, payload: Bytes) -> Message {
    let flag = |name: &str| header(h, name) == Some("1");
    let kind = match (&target, flag(CLIENT_PUBLISH)) {
        (_, true) => DeliveryKind::Publish,
        (Target::Room(_), false) => DeliveryKind::Room,
        (Target::User(_), false) => DeliveryKind::User,
        (Target::Everyone, false) => DeliveryKind::Broadcast,
    };
    Message {
        target,
        kind,
        payload,
        urgent: flag(URGENT),
        at: Instant::now(),
        tally: None,
    }
}

fn encode_answer(r: &Result<Published, PublishError>) -> Bytes {
    let text = match r {
        Ok(p) => match p.not_forwarded {
            Some(reason) => format!("ok {} {} {}", p.epoch, p.offset, reason.as_str()),
            None => format!("ok {} {}", p.epoch, p.offset),
        },
        Err(PublishError::Busy(m)) => format!("busy {m}"),
        Err(PublishError::Rejected(m)) => format!("rejected {m}"),
    };
    Bytes::from(text)
}

fn decode_answer(b: &[u8]) -> Option<OwnerAnswer> {
    let text = std::str::from_utf8(b).ok()?;
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    match word {
        "ok" => {
            let mut it = rest.split(' ');
            let epoch = it.next()?.parse().ok()?;
            let offset = it.next()?.parse().ok()?;
            let not_forwarded = it
                .next()
                .and_then(|r| DropReason::ALL.into_iter().find(|d| d.as_str() == r));
            Some(OwnerAnswer::Numbered {
                epoch,
                offset,
                not_forwarded,
            })
        }
        "busy" => Some(OwnerAnswer::Refused(PublishError::Busy(rest.to_owned()))),
        "rejected" => Some(OwnerAnswer::Refused(PublishError::Rejected(
            rest.to_owned(),
        ))),
        _ => None,
    }
}

/// Sends `m` (whose `to_owner` is set) to its owner and waits for the answer, at most
/// `cluster.publish_timeout_ms`. `Err` says why the owner was not reached (counted).
async fn request(
    client: &Client,
    bus: &ClusterBus,
    m: &Outbound,
) -> Result<OwnerAnswer, DropReason> {
    let owner = m.to_owner.as_deref().unwrap_or_default();
    let req = async_nats::Request::new()
        .payload(m.payload.clone())
        .headers(headers(bus, m))
        .timeout(Some(bus.owner_timeout));
    let reason = match client
        .send_request(subject::owner_inbox(&bus.prefix, owner), req)
        .await
    {
        Ok(reply) => match decode_answer(&reply.payload) {
            Some(a) => {
                bus.forwarded.fetch_add(1, Ordering::Relaxed);
                return Ok(a);
            }
            None => DropReason::Unreachable,
        },
        Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => DropReason::Timeout,
        Err(_) => DropReason::Unreachable,
    };
    bus.dropped(reason);
    Err(reason)
}

impl ClusterBus {
    /// Forwards a publish for `target` to `owner` and waits for its numbering (an HTTP
    /// push). `Err`: the owner was not reached in time (counted); the caller numbers it.
    pub(crate) async fn request_owner(
        &self,
        owner: String,
        target: &Target,
        payload: &Bytes,
        urgent: bool,
        client_publish: bool,
    ) -> Result<OwnerAnswer, DropReason> {
        let Some(client) = self.client.get() else {
            self.dropped(DropReason::Unreachable);
            return Err(DropReason::Unreachable);
        };
        let mut m = self.outbound_for(target, payload, urgent, client_publish);
        m.to_owner = Some(owner);
        request(client, self, &m).await
    }
}

/// The bridge's side of a publish a shard handed over for its owner (a client PUBLISH): ask
/// the owner; if it cannot be reached, number it here (delivered, in this node's epoch).
pub(super) async fn forward(
    client: Client,
    bus: Arc<ClusterBus>,
    m: Outbound,
    shared: Weak<Shared>,
    handle: EngineHandle<GatewayHandler>,
) {
    if request(&client, &bus, &m).await.is_ok() {
        return;
    }
    let (Some(shared), Some(target)) = (shared.upgrade(), subject::target(&bus.prefix, &m.subject))
    else {
        return;
    };
    let msg = message(target, Some(&headers(&bus, &m)), m.payload);
    if let Err(e) = shared.publish_owned(&handle, msg) {
        tracing::warn!(node = %bus.node_id, "cluster: a publish its owner did not take was refused here too: {e:?}");
    }
}

/// Numbers the publishes other nodes forward to this one (it owns their streams).
pub(super) async fn serve(
    client: Client,
    sub: async_nats::Subscriber,
    bus: Arc<ClusterBus>,
    shared: Weak<Shared>,
    handle: EngineHandle<GatewayHandler>,
) {
    let b = Arc::clone(&bus);
    super::bridge::serve_requests(client, sub, &bus, shared, move |msg, shared| {
        let h = msg.headers.as_ref();
        let target = header(h, TARGET).and_then(|s| subject::target(&b.prefix, s));
        // Numbered here, in the order the requests arrive; only the answer waits.
        let answer = match target {
            Some(target) => {
                let m = message(target, h, msg.payload.clone());
                if b.leaving.load(Ordering::Acquire) {
                    // Sent before the sender heard this node leave: the stream's new owner
                    // numbers it (the answer then carries no position).
                    shared.publish(&handle, m)
                } else {
                    shared.publish_owned(&handle, m)
                }
            }
            None => Err(PublishError::Rejected("no stream subject".into())),
        };
        let body = encode_answer(&answer);
        Some(async move { Some(body) })
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringport_proto::StreamName;

    #[test]
    fn answers_round_trip() {
        let ok = Ok(Published {
            stream: StreamName::Room("r".into()),
            epoch: 7,
            offset: 42,
            not_forwarded: Some(DropReason::QueueFull),
        });
        assert_eq!(
            decode_answer(&encode_answer(&ok)),
            Some(OwnerAnswer::Numbered {
                epoch: 7,
                offset: 42,
                not_forwarded: Some(DropReason::QueueFull)
            })
        );
        let busy = Err(PublishError::Busy("later please".into()));
        assert_eq!(
            decode_answer(&encode_answer(&busy)),
            Some(OwnerAnswer::Refused(PublishError::Busy(
                "later please".into()
            )))
        );
        assert_eq!(decode_answer(b"what"), None);
        assert_eq!(decode_answer(b"ok 1"), None);
    }
}
