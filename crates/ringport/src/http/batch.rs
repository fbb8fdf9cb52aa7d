//! `POST /v1/publish/batch`: many pushes to rooms, users and everyone in one request,
//! answered with one outcome per item, in order (Centrifugo's batch API is the model).
//!
//! Items are published one after the other, so pushes of one batch to one stream get
//! consecutive offsets in item order, and a batch's pushes reach the shards together (they
//! leave in one gathered send per connection). An item that cannot be published (bad name,
//! bad payload, refused by the gateway, idempotency conflict) gets its error in its slot and
//! the others still go out. Each item may carry its own `idempotency_key`; a retried batch
//! then publishes only the items that were not published the first time.
//!
//! A body that is not `{"items": [...]}` is 400, and a batch of more than
//! `admin.max_batch_items` items is 413 `batch_too_large` — in both cases nothing is
//! published.
//!
//! With `?wait=delivered` every published item's outcome also carries its `recipients`, as
//! on the single-push routes. The items are still sequenced one after the other in item
//! order (each item's publishing runs up to its first wait before the next item starts);
//! then the batch waits for all deliveries at once, so a batch takes one delivery round, not
//! one per item.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::gateway::{Push, PushOutcome, PushTarget};
use super::routes::{
    check_key, check_name, decode_payload, publish_one, wait_delivered, ApiError, AppState,
    PushQueryResult,
};
use crate::metrics::limits::hit;
use crate::metrics::Limit;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    /// Parsed one by one, so a malformed item fails alone.
    items: Vec<serde_json::Value>,
}

/// One item: exactly one of `room`, `user` and `broadcast: true`; exactly one of `payload`
/// and `payload_base64`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    room: Option<String>,
    user: Option<String>,
    #[serde(default)]
    broadcast: bool,
    payload: Option<String>,
    payload_base64: Option<String>,
    #[serde(default)]
    urgent: bool,
    idempotency_key: Option<String>,
}

/// One item's outcome: the push's stream, epoch and offset, or an error.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum ItemResult {
    Published(PushOutcome),
    Failed {
        error: &'static str,
        message: String,
    },
}

impl From<ApiError> for ItemResult {
    fn from(e: ApiError) -> ItemResult {
        ItemResult::Failed {
            error: e.code,
            message: e.message,
        }
    }
}

fn parse_item(value: serde_json::Value) -> Result<(PushTarget, Push, Option<String>), ApiError> {
    let item: BatchItem = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid item: {e}")))?;
    let target = match (item.room, item.user, item.broadcast) {
        (Some(room), None, false) => {
            check_name("room", &room)?;
            PushTarget::Room(room)
        }
        (None, Some(user), false) => {
            check_name("user", &user)?;
            PushTarget::User(user)
        }
        (None, None, true) => PushTarget::Broadcast,
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of room, user and broadcast: true",
            ))
        }
    };
    let payload = decode_payload(item.payload, item.payload_base64)?;
    if let Some(key) = &item.idempotency_key {
        check_key(key)?;
    }
    Ok((
        target,
        Push::new(payload, item.urgent),
        item.idempotency_key,
    ))
}

pub(super) async fn publish_batch(
    State(s): State<AppState>,
    query: PushQueryResult,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let wait = wait_delivered(query)?;
    let body = body?;
    let batch: BatchBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if batch.items.len() > s.max_batch_items {
        hit(
            Limit::BatchItems,
            1,
            &format_args!(
                "admin.max_batch_items ({}) exceeded: refusing a batch",
                s.max_batch_items
            ),
        );
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "{} items in one batch; at most admin.max_batch_items ({})",
                batch.items.len(),
                s.max_batch_items
            ),
        ));
    }
    let s = &s;
    let items = batch.items.into_iter().map(|value| async move {
        match parse_item(value) {
            Ok((target, mut push, key)) => {
                push.wait_delivered = wait;
                match publish_one(s, target, push, key.as_deref()).await {
                    Ok((outcome, _replayed)) => ItemResult::Published(outcome),
                    Err(e) => e.into(),
                }
            }
            Err(e) => e.into(),
        }
    });
    let results = if wait {
        in_order(items.map(Box::pin).collect()).await
    } else {
        let mut results = Vec::new();
        for item in items {
            results.push(item.await);
        }
        results
    };
    Ok(Json(serde_json::json!({ "results": results })).into_response())
}

/// Runs `futures` together and returns their outputs in order; each is first polled in
/// order, so whatever one does before its first wait (an item's sequencing) happens before
/// the next one starts. Those still waiting then wait in a `FuturesUnordered`, which polls
/// only the ones that were woken (not every pending item at every wake).
async fn in_order<F: std::future::Future + Unpin>(futures: Vec<F>) -> Vec<F::Output> {
    use futures_util::stream::{FuturesUnordered, StreamExt as _};
    use std::task::Poll;
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    let mut waiting = FuturesUnordered::new();
    {
        // A `move` closure over `&mut`s: it holds no shared borrow of `waiting`, so this
        // future is Send without `FuturesUnordered` being Sync.
        let (out, add) = (&mut outputs, &mut waiting);
        let mut first = Some(futures);
        std::future::poll_fn(move |cx| {
            for (i, mut f) in first.take().into_iter().flatten().enumerate() {
                match std::pin::Pin::new(&mut f).poll(cx) {
                    Poll::Ready(v) => out[i] = Some(v),
                    // Polled again by `waiting` (a wake meanwhile reaches this task, which
                    // polls `waiting`, which polls every newly added future).
                    Poll::Pending => add.push(async move { (i, f.await) }),
                }
            }
            Poll::Ready(())
        })
        .await;
    }
    while let Some((i, v)) = waiting.next().await {
        outputs[i] = Some(v);
    }
    outputs.into_iter().flatten().collect()
}
