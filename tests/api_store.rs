//! Chat and dispatch API at the Rust level: the service calls the supervisor and front doors use.
//! On SQLite, or on a PostgreSQL schema of the test's own with `AGENTD_TEST_DATABASE_URL`.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use agentd::catalog::watch::CatalogHandle;
use agentd::catalog::Catalog;
use agentd::settings::{Database, Settings};
use agentd::store::Store;
use support::TestSchema;

/// Where a test's store lives: a temp dir, and its PostgreSQL schema when the tests run there.
struct Place {
    dir: tempfile::TempDir,
    schema: Option<TestSchema>,
}

impl Place {
    fn new() -> Place {
        Place {
            dir: tempfile::tempdir().unwrap(),
            schema: TestSchema::create().transpose().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

async fn store(place: &Place) -> Store {
    let dir = place.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let catalog =
        Catalog::load(&root.join("property.json"), &root.join("graphs")).expect("bundled catalog");
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("DISPATCH_MODE".into(), "immediate".into());
    let settings = Arc::new(Settings::from_source(&env, dir).unwrap());
    let database = match &place.schema {
        Some(s) => Database::Postgres(s.url()),
        None => Database::Sqlite(dir.join("agentd.db")),
    };
    Store::connect(&database, settings, CatalogHandle::fixed(catalog))
        .await
        .unwrap()
}

#[tokio::test]
async fn chat_for_channel_is_atomic_and_stable() {
    let place = Place::new();
    let s = store(&place).await;
    let calls = (0..16).map(|_| {
        let s = s.clone();
        tokio::spawn(async move { s.chat_for_channel("room-1", "echo").await.unwrap() })
    });
    let ids: Vec<String> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    assert_eq!(ids[0].len(), 21);
    let chat = s.get_chat(&ids[0]).await.unwrap();
    assert_eq!(chat["agent_ids"], serde_json::json!(["echo"]));
    let other = s.chat_for_channel("room-2", "echo").await.unwrap();
    assert_ne!(other, ids[0]);
    s.close().await;
    // Stable across reopen.
    let s = store(&place).await;
    assert_eq!(s.chat_for_channel("room-1", "echo").await.unwrap(), ids[0]);
    s.close().await;
}

/// A channel's chat made with an id chosen ahead (as `/start` does while the worker starts) gets
/// that id; when the channel has a chat already, the answer is that chat's id, and nothing new is
/// made. `channel_chat` reads it without making one.
#[tokio::test]
async fn a_channel_chat_made_with_an_id_chosen_ahead() {
    let place = Place::new();
    let s = store(&place).await;
    assert_eq!(s.channel_chat("ahead").await.unwrap(), None);
    let chosen = agentd::ids::new_id();
    let made = s
        .chat_for_channel_as("ahead", "echo", &chosen)
        .await
        .unwrap();
    assert_eq!(made, chosen);
    assert_eq!(s.channel_chat("ahead").await.unwrap(), Some(chosen.clone()));
    let chat = s.get_chat(&chosen).await.unwrap();
    assert_eq!(chat["agent_ids"], serde_json::json!(["echo"]));
    // Someone else's id for the same channel: the existing chat wins.
    let late = agentd::ids::new_id();
    assert_eq!(
        s.chat_for_channel_as("ahead", "echo", &late).await.unwrap(),
        chosen
    );
    assert!(s.get_chat(&late).await.is_err());
    assert_eq!(s.chat_for_channel("ahead", "echo").await.unwrap(), chosen);
    s.close().await;
}

#[tokio::test]
async fn service_api_posts_and_streams_events() {
    let place = Place::new();
    let s = store(&place).await;
    let mut bus = s.subscribe();
    let chat = s
        .chat_for_key("frontdoor:conv-9", "echo", "Conversation 9", None)
        .await
        .unwrap();
    s.post_user_message(&chat, "hello", None).await.unwrap();
    let batches = s
        .claim(agentd::store::dispatch::Claim {
            worker_id: "w".into(),
            lease_ms: 5000,
            wait_ms: 1000,
            limit: 1,
            filter: agentd::store::dispatch::ClaimFilter {
                chat_id: Some(chat.clone()),
                agent_id: None,
            },
        })
        .await
        .unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0]["compiledContent"], "hello");
    let m = s
        .create_message(
            &chat,
            agentd::store::NewMessage {
                role: "agent".into(),
                sender_id: "echo".into(),
                content: Some("hi!".into()),
                streaming: false,
                trace: None,
            },
        )
        .await
        .unwrap();
    s.complete(batches[0]["batchId"].as_str().unwrap(), "w")
        .await
        .unwrap();
    let list = s.list_messages(&chat, 10, None).await.unwrap();
    assert_eq!(list["data"][0]["id"], m["id"]);
    let mut kinds = Vec::new();
    while let Ok(e) = bus.try_recv() {
        kinds.push(e.kind.clone());
    }
    assert_eq!(
        kinds,
        ["chat.created", "message.created", "message.created"]
    );
    s.close().await;
}
