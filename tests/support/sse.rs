//! Server-sent event streams as parsed events: read in the background from the moment the stream
//! opens (so a test that looks later is never a slow client the server drops), handed out in
//! order with deadlines.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::app::{Reply, TestApp};

/// One event: its `event:` name, `id:`, and `data:` as JSON (`Value::Null` when it is not JSON,
/// such as `[DONE]`) and as it came.
#[derive(Debug, Clone)]
pub struct Ev {
    pub event: String,
    pub id: String,
    pub data: Value,
    pub raw: String,
}

/// An open event stream.
pub struct EventStream {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    rx: mpsc::UnboundedReceiver<Ev>,
    seen: Vec<Ev>,
}

impl EventStream {
    fn follow(res: reqwest::Response) -> EventStream {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stream = res.bytes_stream().eventsource();
            while let Some(Ok(e)) = stream.next().await {
                let ev = Ev {
                    event: e.event,
                    id: e.id,
                    data: serde_json::from_str(&e.data).unwrap_or(Value::Null),
                    raw: e.data,
                };
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        EventStream {
            status,
            headers,
            rx,
            seen: Vec::new(),
        }
    }

    /// The next event, if one comes before `deadline` (and the stream has not ended).
    async fn next_by(&mut self, deadline: Instant) -> Option<Ev> {
        let e = tokio::time::timeout_at(deadline, self.rx.recv())
            .await
            .ok()??;
        self.seen.push(e.clone());
        Some(e)
    }

    /// The next event matching `pred`, skipping others, if one comes within `within`.
    pub async fn next_matching(
        &mut self,
        within: Duration,
        pred: impl Fn(&Ev) -> bool,
    ) -> Option<Ev> {
        let deadline = Instant::now() + within;
        loop {
            let e = self.next_by(deadline).await?;
            if pred(&e) {
                return Some(e);
            }
        }
    }

    /// Every event up to and including the first that matches `pred`, if one comes within
    /// `within`.
    pub async fn until(&mut self, within: Duration, pred: impl Fn(&Ev) -> bool) -> Option<Vec<Ev>> {
        let from = self.seen.len();
        self.next_matching(within, pred).await?;
        Some(self.seen[from..].to_vec())
    }

    /// Every event that comes during `dur`.
    pub async fn collect(&mut self, dur: Duration) -> Vec<Ev> {
        let deadline = Instant::now() + dur;
        let mut out = Vec::new();
        while let Some(e) = self.next_by(deadline).await {
            out.push(e);
        }
        out
    }

    /// Every event handed out so far, in order.
    pub fn seen(&self) -> &[Ev] {
        &self.seen
    }
}

impl TestApp {
    /// Sends `req` and follows the answer as an event stream; the whole answer if it is not a
    /// success.
    pub async fn open_stream(&self, req: reqwest::RequestBuilder) -> Result<EventStream, Reply> {
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"));
        if res.status().is_success() {
            Ok(EventStream::follow(res))
        } else {
            Err(Reply::read(res).await)
        }
    }

    /// `POST path` with a JSON body, followed as an event stream.
    pub async fn post_stream(&self, path: &str, body: Value) -> Result<EventStream, Reply> {
        self.open_stream(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }
}
