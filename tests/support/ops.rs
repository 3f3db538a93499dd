//! agentd's own routes: `/ops/...` (the worker feed, a worker's log, the dispatch queue) and the
//! console's files under `/console`.

use serde_json::Value;

use super::app::{Reply, TestApp};
use super::sse::EventStream;

/// `text` percent-encoded for one path segment (everything but unreserved characters).
pub fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The TEN envelope's code and the HTTP status of an answer.
pub fn ten_code(r: &Reply) -> (u16, String) {
    (r.status, r.body["code"].as_str().unwrap_or("?").to_string())
}

impl TestApp {
    /// `GET /ops/workers/stream{query}`, which must open; its events as they come.
    pub async fn worker_feed(&self, query: &str) -> EventStream {
        let req = self.request(reqwest::Method::GET, &format!("/ops/workers/stream{query}"));
        match self.open_stream(req).await {
            Ok(s) => s,
            Err(r) => panic!("the worker feed did not open: {} {}", r.status, r.text),
        }
    }

    /// `GET /ops/workers/{channel}/logs{query}`, without following.
    pub async fn worker_log(&self, channel: &str, query: &str) -> Reply {
        self.get(&format!(
            "/ops/workers/{}/logs{query}",
            path_segment(channel)
        ))
        .await
    }

    /// The lines `GET /ops/workers/{channel}/logs?lines=N` gives; panics on an error.
    pub async fn worker_log_lines(&self, channel: &str, n: usize) -> Vec<String> {
        let r = self.worker_log(channel, &format!("?lines={n}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["data"]["lines"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `GET /ops/workers/{channel}/logs?follow{more}`, which must open; its events as they come.
    pub async fn follow_log(&self, channel: &str, more: &str) -> EventStream {
        let path = format!("/ops/workers/{}/logs?follow{more}", path_segment(channel));
        match self
            .open_stream(self.request(reqwest::Method::GET, &path))
            .await
        {
            Ok(s) => s,
            Err(r) => panic!("the log did not open: {} {}", r.status, r.text),
        }
    }

    /// `GET /ops/dispatch`.
    pub async fn dispatch_queue(&self) -> Reply {
        self.get("/ops/dispatch").await
    }

    /// The `data` of `GET /ops/dispatch`; panics on an error.
    pub async fn queue(&self) -> Value {
        let r = self.dispatch_queue().await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["data"].clone()
    }
}
