//! Server-sent events, for every stream agentd serves (the API's event stream, the chat and agent
//! messages answers, the conversations stream and feed): frames written in the field order each
//! API has always used, and one response shape.
//!
//! Written here rather than taken from `actix-web-lab`'s `sse` module: that encoder always puts
//! `id:` before `event:` and `data:`, its keep-alive comment reads `keep-alive`, and its
//! response sets `cache-control: no-cache` only, while clients of these APIs read `event:`,
//! `data:`, `id:` in that order, `: keepalive`, and `no-cache, no-transform`. The frames are a
//! few lines; the rest is a channel.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::{Arc, Mutex};

use actix_web::{HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

/// Set once the server begins to shut down: every open stream then ends with a last
/// `event: shutdown` frame, so clients can tell a shutdown from a dropped connection. One
/// server per process, so one flag.
static SHUTDOWN: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::channel(false).0);

/// Ends every open event stream (each with its `event: shutdown` frame), and any opened later.
pub fn shut_down_streams() {
    SHUTDOWN.send_replace(true);
}

async fn shutting_down() {
    let mut rx = SHUTDOWN.subscribe();
    let _ = rx.wait_for(|down| *down).await;
}

/// The last frame of a stream cut by the shutdown.
fn shutdown_frame() -> Bytes {
    Frame::new()
        .event("shutdown")
        .data(r#"{"reason":"agentd is shutting down"}"#)
        .bytes()
}

/// One event, its fields in the order they were added, each on its own line.
#[derive(Debug, Default)]
pub struct Frame(String);

impl Frame {
    pub fn new() -> Frame {
        Frame::default()
    }

    fn field(mut self, name: &str, value: &str) -> Frame {
        // A newline inside a value would end the field early: each line gets the field's name.
        for line in value.split('\n') {
            self.0.push_str(name);
            self.0.push_str(": ");
            self.0.push_str(line.strip_suffix('\r').unwrap_or(line));
            self.0.push('\n');
        }
        self
    }

    /// `event: <name>`.
    pub fn event(self, name: &str) -> Frame {
        self.field("event", name)
    }

    /// `id: <id>`.
    pub fn id(self, id: &str) -> Frame {
        self.field("id", id)
    }

    /// `data: <data>`.
    pub fn data(self, data: &str) -> Frame {
        self.field("data", data)
    }

    /// The frame, ended by its blank line.
    pub fn bytes(mut self) -> Bytes {
        self.0.push('\n');
        Bytes::from(self.0)
    }
}

/// A comment line (`: text`), which clients ignore: stream openings, keepalives, farewells.
pub fn comment(text: &str) -> Bytes {
    Bytes::from(format!(": {text}\n\n"))
}

/// A frame with only `data:`: JSON as it is, or a bare string (such as `[DONE]`).
pub fn data(v: &serde_json::Value) -> Bytes {
    match v {
        serde_json::Value::String(s) => Frame::new().data(s).bytes(),
        v => Frame::new().data(&v.to_string()).bytes(),
    }
}

/// An event-stream response over `frames`.
pub fn response<S>(frames: S) -> HttpResponse
where
    S: Stream<Item = Bytes> + 'static,
{
    response_from(HttpResponse::Ok(), frames)
}

/// [`response`] on a response that already has headers of its own. The stream ends early, with
/// an `event: shutdown` frame, when the server shuts down.
pub fn response_from<S>(mut builder: HttpResponseBuilder, frames: S) -> HttpResponse
where
    S: Stream<Item = Bytes> + 'static,
{
    let farewell = futures_util::stream::once(async { *SHUTDOWN.borrow() })
        .filter_map(|down| std::future::ready(down.then(shutdown_frame)));
    let frames = frames.take_until(shutting_down()).chain(farewell);
    builder
        .insert_header(("content-type", "text/event-stream"))
        .insert_header(("cache-control", "no-cache, no-transform"))
        // Proxies such as nginx would otherwise hold frames back.
        .insert_header(("x-accel-buffering", "no"))
        .streaming({
            // The client counts as connected for as long as its stream is alive.
            let client = crate::observe::sse_client();
            frames.map(move |f| {
                let _ = &client;
                Ok::<_, actix_web::Error>(f)
            })
        })
}

/// Caps on open subscription streams (`SSE_MAX_PER_CLIENT`, `SSE_MAX_TOTAL`): an idle stream
/// costs a connection, a task and a buffer, so a client cannot open them without bound.
pub struct StreamLimits {
    per_client: usize,
    total: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    /// Streams per client; a client leaves the map with its last stream, so the map never holds
    /// more entries than there are open streams.
    by_client: HashMap<String, usize>,
    total: usize,
}

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    /// This client has `limit` streams open already (HTTP 429).
    #[error(
        "This client has {limit} event streams open already (SSE_MAX_PER_CLIENT); close one first."
    )]
    PerClient { limit: usize },
    /// agentd serves `limit` streams already (HTTP 503).
    #[error("agentd serves {limit} event streams already (SSE_MAX_TOTAL); try again later.")]
    Total { limit: usize },
}

impl StreamRefused {
    /// The HTTP status: 429 for this client's cap, 503 for the server's.
    pub fn status(self) -> actix_web::http::StatusCode {
        match self {
            StreamRefused::PerClient { .. } => actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            StreamRefused::Total { .. } => actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable code of the JSON envelopes.
    pub fn code(self) -> &'static str {
        match self {
            StreamRefused::PerClient { .. } => "TOO_MANY_STREAMS",
            StreamRefused::Total { .. } => "STREAMS_FULL",
        }
    }

    /// Seconds a refused client is told to wait (`Retry-After`).
    pub const RETRY_AFTER_SECS: u64 = 5;
}

/// One open stream, counted until it is dropped (when the client goes or the stream ends).
pub struct StreamPermit {
    limits: Arc<StreamLimits>,
    client: String,
    /// The client's socket, watched for a hang-up (see [`held_response`]).
    peer: Option<Peer>,
}

impl StreamPermit {
    /// Watches the connection of `req` for a hang-up while the stream is served.
    pub fn watching(mut self, req: &actix_web::HttpRequest) -> StreamPermit {
        self.peer = req.conn_data::<Peer>().copied();
        self
    }
}

/// The socket of a connection, recorded when it is accepted ([`on_connect`]).
#[derive(Debug, Clone, Copy)]
pub struct Peer(std::os::fd::RawFd);

/// Records each TCP connection's socket in its connection data.
pub fn on_connect(conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    use std::os::fd::AsRawFd;
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        data.insert(Peer(tcp.as_raw_fd()));
    }
}

/// How often a held stream looks whether its client hung up.
const HANGUP_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Resolves once the client of `peer` has closed its side of the connection (or the socket
/// failed). Without this, actix notices a closed stream only when its next frame fails to be
/// written: an idle stream would keep its place under the caps until its next keep-alive.
async fn hung_up(peer: Option<Peer>) {
    let Some(Peer(fd)) = peer else {
        return std::future::pending().await;
    };
    let mut every =
        tokio::time::interval_at(tokio::time::Instant::now() + HANGUP_CHECK, HANGUP_CHECK);
    loop {
        every.tick().await;
        // The connection's dispatcher polls this future and owns the socket, so `fd` is this
        // connection's for as long as it runs. A peek that reads nothing: 0 bytes is the client's FIN, an error other than "nothing
        // to read yet" a reset or dead socket; data waiting means the client is there.
        use nix::errno::Errno;
        use nix::sys::socket::{recv, MsgFlags};
        let mut byte = [0u8; 1];
        match recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return,
            Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

impl StreamLimits {
    pub fn new(per_client: usize, total: usize) -> StreamLimits {
        StreamLimits {
            per_client,
            total,
            open: Mutex::new(Open::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new stream of `client`, or says which cap it would break.
    pub fn admit(self: &Arc<Self>, client: String) -> Result<StreamPermit, StreamRefused> {
        let mut open = self.lock();
        let mine = open.by_client.get(&client).copied().unwrap_or(0);
        if mine >= self.per_client {
            return Err(StreamRefused::PerClient {
                limit: self.per_client,
            });
        }
        if open.total >= self.total {
            return Err(StreamRefused::Total { limit: self.total });
        }
        open.total += 1;
        *open.by_client.entry(client.clone()).or_insert(0) += 1;
        Ok(StreamPermit {
            limits: self.clone(),
            client,
            peer: None,
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

/// An event-stream response over `frames` that holds `permit` for as long as it is served. The
/// stream ends, and gives its place back, within a second of its client hanging up.
pub fn held_response<S>(permit: StreamPermit, frames: S) -> HttpResponse
where
    S: Stream<Item = Bytes> + 'static,
{
    let gone = hung_up(permit.peer);
    response(frames.take_until(gone).map(move |b| {
        let _counted = &permit;
        b
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_order_and_lines_their_names() {
        let f = Frame::new()
            .event("chat.created")
            .data("{}")
            .id("x1")
            .bytes();
        assert_eq!(f, "event: chat.created\ndata: {}\nid: x1\n\n");
        let f = Frame::new().event("message").id("m").data("a\nb").bytes();
        assert_eq!(f, "event: message\nid: m\ndata: a\ndata: b\n\n");
        assert_eq!(comment("keepalive"), ": keepalive\n\n");
        assert_eq!(
            data(&serde_json::Value::String("[DONE]".into())),
            "data: [DONE]\n\n"
        );
        assert_eq!(data(&serde_json::json!({"a": 1})), "data: {\"a\":1}\n\n");
    }

    #[test]
    fn streams_are_capped_per_client_and_in_total() {
        let limits = Arc::new(StreamLimits::new(2, 3));
        let a1 = limits.admit("a".into()).unwrap();
        let _a2 = limits.admit("a".into()).unwrap();
        assert_eq!(
            limits.admit("a".into()).err(),
            Some(StreamRefused::PerClient { limit: 2 })
        );
        let _b1 = limits.admit("b".into()).unwrap();
        assert_eq!(
            limits.admit("c".into()).err(),
            Some(StreamRefused::Total { limit: 3 })
        );
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _c1 = limits.admit("c".into()).unwrap();
        assert_eq!(limits.lock().by_client.len(), 3);
    }
}
