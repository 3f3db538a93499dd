//! Passing a supervisor request on to the node that owns its channel (or that placement chose),
//! and its answer back unchanged.

use bytes::Bytes;

use super::Cluster;

/// Set on a forwarded request: the node that gets it answers itself and never forwards again.
pub const FORWARDED_HEADER: &str = "x-agentd-forwarded";

/// Headers a forwarded request keeps: the key, and how the body is written.
const KEPT: [&str; 3] = ["authorization", "x-api-key", "content-type"];

/// The other node's answer.
#[derive(Debug)]
pub struct Forwarded {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Cluster {
    /// POSTs `body` to `path` on the node at `address`, with the request's key; the answer as it
    /// came, or why the node could not be reached.
    pub async fn forward(
        &self,
        address: &str,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<Forwarded, String> {
        let mut req = self
            .inner
            .client
            .post(format!("{address}{path}"))
            .timeout(self.inner.forward_timeout)
            .header(FORWARDED_HEADER, "1")
            .body(body);
        for (k, v) in headers {
            if KEPT.contains(&k.to_ascii_lowercase().as_str()) {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let res = req.send().await.map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = res.bytes().await.map_err(|e| e.to_string())?;
        Ok(Forwarded {
            status,
            content_type,
            body,
        })
    }
}
