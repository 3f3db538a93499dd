//! Server-sent events, for every stream agentd serves (the API's event stream, the chat and agent
//! messages answers, the conversations stream and feed): frames written in the field order each
//! API has always used, and one response shape.
//!
//! Written here rather than taken from `actix-web-lab`'s `sse` module: that encoder always puts
//! `id:` before `event:` and `data:`, its keep-alive comment reads `keep-alive`, and its
//! response sets `cache-control: no-cache` only, while clients of these APIs read `event:`,
//! `data:`, `id:` in that order, `: keepalive`, and `no-cache, no-transform`. The frames are a
//! few lines; the rest is a channel.

use std::sync::LazyLock;

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
}
