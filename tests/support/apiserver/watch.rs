//! WATCH: a chunked stream of newline-delimited `{"type": ..., "object": ...}` events, as the apiserver sends it.
//!
//! The stream starts after the requested resourceVersion (replaying history), or now after synthetic ADDED events
//! when none (or `0`) is given. A version older than the history gets one ERROR event with a 410 Expired `Status`,
//! which is how a real apiserver tells a watcher to relist. BOOKMARKs come every `Settings::bookmark_every` when
//! asked for, and the stream ends at `timeoutSeconds` or when the test drops watches.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::error::ApiError;
use super::handler::{is_true, Body, Query, Shared};
use super::select::Filter;
use super::store::{Change, ChangeType, Res, Start, Subscription};

/// Without `timeoutSeconds`, a real apiserver picks 30 to 60 minutes.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// What one watch sends.
struct Spec {
    res: Res,
    namespace: Option<String>,
    filter: Filter,
    kind: String,
}

impl Spec {
    /// The event a change becomes for this watch, if any: a modification that moves an object into or out of
    /// the selector is an ADDED or a DELETED, as on a real apiserver.
    fn event(&self, c: &Change) -> Option<Bytes> {
        if c.res != self.res || self.namespace.as_ref().is_some_and(|n| *n != c.namespace) {
            return None;
        }
        let now = self.filter.matches(&c.object);
        let before = c.old.as_ref().is_some_and(|o| self.filter.matches(o));
        let kind = match (c.kind, before, now) {
            (ChangeType::Added, _, true) => "ADDED",
            (ChangeType::Modified, true, true) => "MODIFIED",
            (ChangeType::Modified, false, true) => "ADDED",
            (ChangeType::Modified, true, false) => "DELETED",
            (ChangeType::Deleted, _, true) => "DELETED",
            _ => return None,
        };
        Some(line(kind, &c.object))
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if initial_events_end {
            metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        line("BOOKMARK", &json!({ "kind": self.kind, "apiVersion": self.res.api_version(), "metadata": metadata }))
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut out = serde_json::to_vec(&json!({ "type": kind, "object": object })).expect("JSON values serialize");
    out.push(b'\n');
    out.into()
}

pub fn start(
    shared: &Arc<Shared>,
    res: Res,
    namespace: Option<String>,
    filter: Filter,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let send_initial = is_true(q.get("sendInitialEvents"));
    let start = match q.get("resourceVersion").map(String::as_str) {
        _ if send_initial => Start::Now,
        None | Some("" | "0") => Start::Now,
        Some(rv) => {
            Start::After(rv.parse().map_err(|_| ApiError::bad_request(&format!("invalid resourceVersion {rv:?}")))?)
        }
    };
    let bookmarks = is_true(q.get("allowWatchBookmarks"));
    let timeout =
        q.get("timeoutSeconds").and_then(|t| t.parse().ok()).map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
    let kind = shared.store.kind_of(&res).unwrap_or_default();
    let (tx, rx) = mpsc::channel(64);
    match shared.store.subscribe(&res, namespace.as_deref(), start) {
        Err(e) => {
            // A fresh channel has room: the one ERROR event is sent, then the stream ends.
            let _ = tx.try_send(line("ERROR", &e.to_status()));
        }
        Ok(sub) => {
            let spec = Spec { res, namespace, filter, kind };
            let drops = shared.drops.subscribe();
            let every = bookmarks.then_some(shared.settings.bookmark_every);
            tokio::spawn(run(tx, sub, spec, send_initial, every, timeout, drops));
        }
    }
    let body = StreamBody::new(ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b))));
    Ok(Response::builder()
        .status(200)
        .header(CONTENT_TYPE, "application/json")
        .body(body.boxed())
        .expect("valid response"))
}

async fn run(
    tx: mpsc::Sender<Bytes>,
    sub: Subscription,
    spec: Spec,
    send_initial: bool,
    bookmark_every: Option<Duration>,
    timeout: Duration,
    mut drops: tokio::sync::watch::Receiver<u64>,
) {
    let Subscription { initial, replay, rv, mut feed } = sub;
    let mut first = Vec::new();
    first.extend(initial.iter().filter(|o| spec.filter.matches(o)).map(|o| line("ADDED", o)));
    if send_initial {
        first.push(spec.bookmark(rv, true));
    }
    first.extend(replay.iter().filter_map(|c| spec.event(c)));
    for l in first {
        if tx.send(l).await.is_err() {
            return;
        }
    }
    // Every change reaches every watch, so after the last one seen nothing up to `last` is still to come.
    let mut last = rv;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let every = bookmark_every.unwrap_or(Duration::from_secs(3600));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        // Biased: once the test drops watches, the changes written after that are not delivered on this stream.
        let out = tokio::select! {
            biased;
            _ = drops.changed() => return,
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            c = feed.recv() => match c {
                None => return,
                Some(c) => {
                    last = c.rv;
                    spec.event(&c)
                }
            },
            _ = tick.tick(), if bookmark_every.is_some() => Some(spec.bookmark(last, false)),
        };
        if let Some(l) = out {
            if tx.send(l).await.is_err() {
                return;
            }
        }
    }
}
