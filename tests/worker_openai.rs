//! The `openai_chat` addon's provider client against a local OpenAI-compatible stand-in.

#[path = "fixtures/openai_standin.rs"]
mod openai_standin;

use std::time::Duration;

use agentd::worker::addons::openai_chat::{OpenAiChat, ProviderError};
use openai_standin::Standin;
use serde_json::json;

fn addon(standin: &Standin, model: &str) -> OpenAiChat {
    OpenAiChat::from_property(&json!({
        "base_url": standin.url, "api_key": "sk-test", "model": model,
        "temperature": 0.2, "max_tokens": 50
    }))
    .unwrap()
}

async fn collect(
    o: &OpenAiChat,
) -> Result<(Vec<String>, Option<serde_json::Value>), ProviderError> {
    let mut d = o
        .start(&[json!({"role": "user", "content": "hi there"})])
        .await?;
    let mut out = Vec::new();
    while let Some(x) = d.next().await {
        out.push(x?);
    }
    Ok((out, d.usage.clone()))
}

#[tokio::test]
async fn streams_deltas_until_done_with_usage() {
    let s = Standin::start();
    let (deltas, usage) = collect(&addon(&s, "gpt-test")).await.unwrap();
    assert_eq!(deltas.concat(), "You said: hi there");
    assert!(deltas.len() >= 3, "{deltas:?}");
    assert_eq!(usage.unwrap()["prompt_tokens"], 9);
    let r = &s.requests()[0];
    assert_eq!(r.headers["authorization"], "Bearer sk-test");
    assert_eq!(r.body["stream"], true);
    assert_eq!(r.body["model"], "gpt-test");
    assert_eq!(r.body["max_tokens"], 50);
}

#[tokio::test]
async fn unauthorized_is_not_retryable() {
    let s = Standin::start();
    let e = collect(&addon(&s, "unauthorized")).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Auth { status: 401, .. }),
        "{e:?}"
    );
    assert!(!e.retryable());
    assert!(e.to_string().contains("Incorrect API key"), "{e}");
}

#[tokio::test]
async fn rate_limit_carries_retry_after() {
    let s = Standin::start();
    let e = collect(&addon(&s, "rate_limited")).await.unwrap_err();
    assert_eq!(
        e,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            message: "Rate limit reached for requests".into()
        }
    );
    assert!(e.retryable());
}

#[tokio::test]
async fn server_error_is_retryable() {
    let s = Standin::start();
    let e = collect(&addon(&s, "server_error")).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Server { status: 500, .. }),
        "{e:?}"
    );
    assert!(e.retryable());
}

#[tokio::test]
async fn a_cut_stream_is_broken_after_its_first_deltas() {
    let s = Standin::start();
    let o = addon(&s, "cut");
    let mut d = o
        .start(&[json!({"role": "user", "content": "a b c d e"})])
        .await
        .unwrap();
    let mut got = Vec::new();
    let err = loop {
        match d.next().await {
            Some(Ok(x)) => got.push(x),
            Some(Err(e)) => break e,
            None => panic!("a cut stream must not end cleanly"),
        }
    };
    assert_eq!(got.concat(), "You said: ");
    assert!(matches!(err, ProviderError::Broken(_)), "{err:?}");
    assert!(err.retryable());
}

#[tokio::test]
async fn unreachable_provider_is_a_retryable_network_error() {
    let o = OpenAiChat::from_property(&json!({"base_url": "http://127.0.0.1:9/v1", "model": "m"}))
        .unwrap();
    let e = collect(&o).await.unwrap_err();
    assert!(matches!(e, ProviderError::Network(_)), "{e:?}");
    assert!(e.retryable());
}
