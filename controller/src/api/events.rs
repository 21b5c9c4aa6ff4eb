//! `GET /api/v1/events`: the event stream as Server-Sent Events (see
//! [`crate::knowledge::events`]). Each event carries its id (`id:`), its
//! kind (`event:`) and a JSON object (`data:` with `id`, `at_unix_ms`,
//! `kind`, `data`). A client that reconnects with `Last-Event-ID` gets
//! every event after it; when some are no longer kept, an `event: gap`
//! (without an id) first names them. A client that falls too far behind is
//! dropped (the stream ends); the controller never waits for it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tracing::info;

use super::{ApiError, ApiState};
use crate::knowledge::events::{EventBus, Stamped};

fn sse_event(e: &Stamped) -> Event {
    Event::default()
        .id(e.id.to_string())
        .event(e.kind)
        .data(serde_json::to_string(e).unwrap_or_default())
}

/// The `Last-Event-ID` of a request: absent, or a number (anything else
/// is a 400).
pub fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be an event id (a number)".into()))
}

/// `GET /api/v1/events`.
pub async fn events(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last = last_event_id(&headers)?;
    Ok(Sse::new(event_stream(&s.knowledge.events, last))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The stream of one client: the `gap` notice and the backlog after
/// `last` (when resuming), then every new event until the client falls
/// more than the bus's per-client buffer behind (then it ends).
pub fn event_stream(
    bus: &EventBus,
    last: Option<u64>,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let sub = bus.subscribe(last);
    let mut first: Vec<Event> = Vec::with_capacity(sub.backlog.len() + 1);
    if let Some((a, b)) = sub.gap {
        first.push(
            Event::default()
                .event("gap")
                .data(serde_json::json!({"first_lost": a, "last_lost": b}).to_string()),
        );
    }
    first.extend(sub.backlog.iter().map(|e| sse_event(e)));
    let live = stream::unfold(sub.rx, |mut rx| async move {
        match rx.recv().await {
            Ok(e) => Some((Ok::<Event, Infallible>(sse_event(&e)), rx)),
            Err(RecvError::Lagged(n)) => {
                info!(
                    behind = n,
                    "event stream client too slow: dropped (it may resume with Last-Event-ID)"
                );
                None
            }
            Err(RecvError::Closed) => None,
        }
    });
    stream::iter(first.into_iter().map(Ok::<Event, Infallible>)).chain(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A client that does not poll its stream while more events than its
    /// buffer are published is dropped: polled at last, its stream ends
    /// (no event after the lag). A client polled meanwhile gets them all.
    #[tokio::test]
    async fn a_client_that_does_not_read_is_dropped_and_the_others_are_not() {
        let bus = EventBus::new(64, 8);
        let slow = event_stream(&bus, None);
        let fast = event_stream(&bus, None);
        tokio::pin!(slow);
        tokio::pin!(fast);
        let mut got = 0;
        for i in 0..20 {
            bus.publish("t", json!(i));
            assert!(fast.next().await.is_some(), "the reading client is served");
            got += 1;
        }
        assert_eq!(got, 20);
        assert!(
            slow.next().await.is_none(),
            "the slow client was not dropped"
        );
        // Resuming after the last event it had (none): everything kept.
        let back = event_stream(&bus, Some(0));
        tokio::pin!(back);
        let mut n = 0;
        while let Ok(Some(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(50), back.next()).await
        {
            n += 1;
        }
        assert_eq!(n, 20);
    }

    #[test]
    fn a_bad_last_event_id_is_a_400() {
        let mut h = HeaderMap::new();
        assert_eq!(last_event_id(&h).unwrap(), None);
        h.insert("last-event-id", "41".parse().unwrap());
        assert_eq!(last_event_id(&h).unwrap(), Some(41));
        h.insert("last-event-id", "x1".parse().unwrap());
        assert_eq!(last_event_id(&h).unwrap_err().status().as_u16(), 400);
    }
}
