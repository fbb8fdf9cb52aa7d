//! A gateway for the crate's unit tests: answers every push with an outcome that depends only
//! on the push, so two routers given the same requests give the same answers; has no
//! connections or rooms.

use super::gateway::{
    ConnectionInfo, Gateway, GatewayError, GatewayStats, Push, PushOutcome, Reply, RoomInfo,
};

/// See the module docs. A push to room `gone` fails as a gateway shutting down would.
pub(crate) struct PushEcho;

fn outcome(stream: String, push: &Push) -> PushOutcome {
    PushOutcome {
        stream,
        epoch: 1,
        offset: push.payload.len() as u64 + u64::from(push.urgent),
        recipients: None,
        warning: None,
    }
}

impl Gateway for PushEcho {
    fn push_room(&self, room: String, push: Push) -> Reply<'_, PushOutcome> {
        Box::pin(async move {
            if room == "gone" {
                return Err(GatewayError::Unavailable("shutting down".into()));
            }
            Ok(outcome(format!("room:{room}"), &push))
        })
    }
    fn push_user(&self, user: String, push: Push) -> Reply<'_, PushOutcome> {
        Box::pin(async move { Ok(outcome(format!("user:{user}"), &push)) })
    }
    fn broadcast(&self, push: Push) -> Reply<'_, PushOutcome> {
        Box::pin(async move { Ok(outcome("room:*".into(), &push)) })
    }
    fn room_info(&self, room: String, _: usize) -> Reply<'_, RoomInfo> {
        Box::pin(async move {
            Ok(RoomInfo {
                room,
                ..RoomInfo::default()
            })
        })
    }
    fn stats(&self) -> Reply<'_, GatewayStats> {
        Box::pin(async { Ok(GatewayStats::default()) })
    }
    fn connection(&self, _: u64) -> Reply<'_, Option<ConnectionInfo>> {
        Box::pin(async { Ok(None) })
    }
    fn kick(&self, _: u64, _: Option<String>) -> Reply<'_, bool> {
        Box::pin(async { Ok(false) })
    }
    fn render_metrics(&self, _: &mut String) {}
}
