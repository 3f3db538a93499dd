//! Three agentd nodes (real processes) on one PostgreSQL schema: any node answers for any
//! channel, placement, and a `kill -9` of a node whose channels start again on the others with
//! their chats; a node cut off from the database stops its workers. PostgreSQL only: skipped
//! with a message when `AGENTD_TEST_DATABASE_URL` is unset.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{on_postgres, pid_alive, started, wait_for, wait_until, TestApp, TestSchema, SOON};

/// Short, so the test is quick; the heartbeat runs every 500 ms.
const LEASE_MS: u64 = 1500;

/// A node of the test on `schema`, with room for `workers_max` workers.
fn node_builder(id: &str, schema: &TestSchema, workers_max: &str) -> support::Builder {
    TestApp::builder()
        .bundled()
        .fast_dispatch()
        .env("DISPATCH_MODE", "immediate")
        .env("NODE_ID", id)
        .env("NODE_LEASE_MS", LEASE_MS.to_string())
        .env("WORKERS_MAX", workers_max)
        .env("WORKER_STOP_GRACE_MS", "200")
        .schema(schema)
}

fn node(id: &str, database_url: Option<String>, schema: &TestSchema) -> TestApp {
    let b = node_builder(id, schema, "4");
    match database_url {
        Some(url) => b.env("DATABASE_URL", url).start(),
        None => b.start(),
    }
}

fn schema() -> Option<TestSchema> {
    if !on_postgres() {
        eprintln!("skipped: needs PostgreSQL (AGENTD_TEST_DATABASE_URL)");
        return None;
    }
    Some(TestSchema::create()?.expect("a test schema"))
}

/// The `/list` entry of `channel` as `app` sees it.
async fn entry(app: &TestApp, channel: &str) -> Option<Value> {
    app.worker(channel).await
}

/// Waits until `app` runs `channel` itself (its own entry, with a pid); its `/list` entry, or
/// `None` when it never does.
async fn runs_here(app: &TestApp, channel: &str, node: &str) -> Option<Value> {
    wait_for(SOON, || async {
        entry(app, channel)
            .await
            .filter(|e| e["node"] == node && e["pid"].is_number())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_answers_for_any_channel_and_a_killed_nodes_channels_answer_again_elsewhere() {
    let Some(schema) = schema() else { return };
    let a = node("node-a", None, &schema);
    let b = node("node-b", None, &schema);
    let c = node("node-c", None, &schema);

    // Equal capacity: each start stays on the node it was sent to (the one with the most room,
    // ties to itself).
    let ch_a = started(&a.start("ch-a", "echo", json!({"timeout": -1})).await);
    let ch_b = started(&b.start("ch-b", "echo", json!({"timeout": -1})).await);
    started(&c.start("ch-c", "echo", json!({"timeout": -1})).await);

    // /list on any node shows the whole cluster, each worker with its node.
    let list = a.list().await;
    let nodes: Vec<(String, String)> = list
        .iter()
        .map(|e| {
            (
                e["channel_name"].as_str().unwrap_or_default().to_string(),
                e["node"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("ch-a".to_string(), "node-a".to_string()),
            ("ch-b".to_string(), "node-b".to_string()),
            ("ch-c".to_string(), "node-c".to_string()),
        ],
        "{list:?}"
    );
    // This node's own entry is full; another node's carries its worker id.
    assert_eq!(list[0]["pid"], ch_a.pid);
    assert_eq!(list[1]["worker_id"], ch_b.data["worker_id"], "{list:?}");

    // /ping and /stop through a node that does not run the channel reach the one that does.
    let ping = c.ping("ch-a").await;
    assert_eq!(ping.status, 200, "{}", ping.text);
    assert_eq!(ping.body["data"]["channel_name"], "ch-a");
    assert_eq!(ping.body["data"]["timeout"], -1);
    // A channel nobody runs is still "not found", wherever it is asked.
    let missing = c.ping("nobody").await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    assert_eq!(missing.body["code"], "10002");

    // A second start of a live channel is busy on every node.
    let again = c.start("ch-b", "echo", json!({})).await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(again.body["code"], "10003");

    // A start through a node with less room goes to the one with the most (B and C tie; the
    // first by id wins).
    started(&a.start("ch-a2", "echo", json!({"timeout": -1})).await);
    let placed = started(&a.start("ch-placed", "echo", json!({"timeout": -1})).await);
    let placed_on = entry(&a, "ch-placed").await.expect("ch-placed listed")["node"].clone();
    assert_eq!(placed_on, "node-b", "A has the fewest free slots");
    assert!(placed.pid > 0);

    // kill -9 of node B: a message posted just before and one just after are both answered,
    // by a worker of another node, on the same chat.
    let chat = ch_b.chat();
    let worker_b = ch_b.pid;
    a.post_user(&chat, "before the kill").await;
    let killed_at = Instant::now();
    let remains = b.kill9();
    a.post_user(&chat, "after the kill").await;
    // Its worker dies with it (PR_SET_PDEATHSIG).
    assert!(
        wait_until(Duration::from_secs(10), || async { !pid_alive(worker_b) }).await,
        "node B's worker {worker_b} outlived it"
    );
    let answered = wait_for(SOON, || async {
        let answers = a.answers(&chat).await;
        answers.iter().any(|t| t == "after the kill").then_some(())
    })
    .await;
    let took = killed_at.elapsed();
    println!(
        "kill -9 of a node -> its channel answers again on another node: {} ms (NODE_LEASE_MS {LEASE_MS}, target <= {} ms)",
        took.as_millis(),
        2 * LEASE_MS
    );
    assert!(
        answered.is_some(),
        "never answered after the kill: {:?}\nA:\n{}\nC:\n{}",
        a.answers(&chat).await,
        a.output(),
        c.output()
    );
    assert!(
        a.wait_answer(&chat, "before the kill").await.is_some(),
        "the message posted before the kill was lost: {:?}",
        a.answers(&chat).await
    );
    // Generous for a loaded machine: the target is 2 x the lease.
    assert!(
        took < Duration::from_millis(2 * LEASE_MS) + Duration::from_secs(10),
        "took {took:?}"
    );
    let moved = entry(&c, "ch-b").await.expect("ch-b listed after the kill");
    assert!(
        moved["node"] == "node-a" || moved["node"] == "node-c",
        "{moved}"
    );
    assert_eq!(moved["chat_id"], chat.as_str(), "{moved}");
    assert_eq!(moved["restarts"], 1, "{moved}");
    // Counted as a restart, and said in the log of the node that took it.
    let taker = if moved["node"] == "node-a" { &a } else { &c };
    assert!(taker
        .output()
        .contains("the channel's node stopped renewing its lease"));
    let metrics = taker.get("/metrics").await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("agentd_worker_restarts_total{graph=\"echo\"}")),
        "{metrics}"
    );
    // The dead node's other channel moved too; nothing is listed on it any more.
    assert!(
        wait_until(SOON, || async {
            let list = a.list().await;
            list.iter().all(|e| e["node"] != "node-b")
                && list.iter().any(|e| e["channel_name"] == "ch-placed")
        })
        .await,
        "{:?}",
        a.list().await
    );

    // /stop through a node that does not run the channel stops it for good, everywhere.
    let stop = c.stop("ch-a").await;
    assert_eq!(stop.status, 200, "{}", stop.text);
    assert_eq!(stop.body["data"]["channel_name"], "ch-a");
    assert!(
        !pid_alive(ch_a.pid)
            || wait_until(Duration::from_secs(5), || async { !pid_alive(ch_a.pid) }).await
    );
    assert!(a.gone("ch-a").await && c.gone("ch-a").await);
    // Its ownership went with it: the channel can start again anywhere, here on C.
    let restarted = c.start("ch-a", "echo", json!({"timeout": -1})).await;
    assert_eq!(restarted.status, 200, "{}", restarted.text);
    drop(remains);
}

/// A TCP proxy to PostgreSQL that the test can cut: every connection through it, and the
/// listener, close at once.
struct Proxy {
    addr: std::net::SocketAddr,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn to(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                held.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Proxy { addr, tasks }
    }

    /// The database is out of reach from now on.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// `url` with its `host:port` replaced by `addr`.
fn through(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (format!("{auth}@"), rest),
        None => (String::new(), rest),
    };
    let path = rest.find(['/', '?']).map_or("", |i| &rest[i..]);
    format!("{scheme}://{auth}{addr}{path}")
}

/// `host:port` of `url`.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").expect("a URL").1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let hp = &rest[..end];
    if hp.contains(':') {
        hp.to_string()
    } else {
        format!("{hp}:5432")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_database_stops_its_workers_and_another_takes_its_channels() {
    let Some(schema) = schema() else { return };
    let proxy = Proxy::to(host_port(&schema.url())).await;
    let x = node("node-x", Some(through(&schema.url(), proxy.addr)), &schema);
    let y = node("node-y", None, &schema);

    let ch = started(&x.start("ch-x", "echo", json!({"timeout": -1})).await);
    assert_eq!(entry(&y, "ch-x").await.expect("listed")["node"], "node-x");
    assert_eq!(x.health().await.body["data"]["node"]["fenced"], false);

    proxy.cut();
    let cut_at = Instant::now();
    // X stops its worker by itself, before its lease runs out, and says so.
    assert!(
        wait_until(SOON, || async { !pid_alive(ch.pid) }).await,
        "the cut-off node's worker still runs:\n{}",
        x.output()
    );
    let stopped = cut_at.elapsed();
    let health = x.health().await;
    assert_eq!(health.status, 503, "{}", health.text);
    assert_eq!(
        health.body["data"]["node"]["fenced"], true,
        "{}",
        health.text
    );
    assert!(x.output().contains("FENCED"));
    println!(
        "database cut -> the node's worker stopped: {} ms (fence at 0.8 x NODE_LEASE_MS = {} ms)",
        stopped.as_millis(),
        LEASE_MS * 8 / 10
    );
    // A start there is refused honestly meanwhile.
    let refused = x.start("ch-new", "echo", json!({})).await;
    assert_eq!(refused.status, 503, "{}", refused.text);

    // Y starts the channel again once X's lease has run out, with its chat.
    let moved = runs_here(&y, "ch-x", "node-y")
        .await
        .unwrap_or_else(|| panic!("ch-x never moved to Y:\n{}", y.output()));
    assert_eq!(moved["chat_id"], ch.data["chat_id"], "{moved}");
    assert!(
        y.ask(&ch.chat(), "still there?", "still there?")
            .await
            .is_some(),
        "the moved channel does not answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_hands_its_channels_to_another_at_once() {
    let Some(schema) = schema() else { return };
    let mut x = node("node-x", None, &schema);
    let y = node("node-y", None, &schema);
    let ch = started(&x.start("ch-x", "echo", json!({"timeout": -1})).await);

    let stopped_at = Instant::now();
    assert!(
        x.terminate(Duration::from_secs(20)).is_some(),
        "node X did not stop"
    );
    assert!(!pid_alive(ch.pid));
    // Its lease ended with it: Y takes the channel at its next heartbeat, not a lease later.
    let moved = runs_here(&y, "ch-x", "node-y")
        .await
        .unwrap_or_else(|| panic!("ch-x never moved to Y:\n{}", y.output()));
    println!(
        "SIGTERM of a node -> its channel runs on another: {} ms",
        stopped_at.elapsed().as_millis()
    );
    assert_eq!(moved["chat_id"], ch.data["chat_id"], "{moved}");
    assert!(x.output().contains("node left"), "{}", x.output());
}

/// `POST /start` handled by `app` itself (a forwarded request is never placed elsewhere).
async fn start_here(app: &TestApp, channel: &str, graph: &str) -> support::Reply {
    let body =
        json!({"channel_name": channel, "graph_name": graph, "request_id": "r1", "timeout": -1});
    app.send(
        app.request(reqwest::Method::POST, "/start")
            .header("x-agentd-forwarded", "1")
            .json(&body),
    )
    .await
}

/// A node of the test with its own capacity and its own version of the graph `flaky`.
fn node_with(id: &str, schema: &TestSchema, workers_max: &str, flaky: Value) -> TestApp {
    node_builder(id, schema, workers_max)
        .graph_file("flaky", flaky)
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_that_fails_to_start_is_handed_to_another_node() {
    let Some(schema) = schema() else { return };
    let works = json!({"nodes": [{"type": "extension", "name": "echo", "addon": "echo"}], "connections": []});
    // On Y the graph's program cannot start (say, a binary this machine lacks).
    let fails = json!({"nodes": [{"name": "e", "addon": "echo"}],
                       "runtime": {"command": ["sh", "-c", "exit 7"], "restart": "never"}});
    let x = node_with("node-x", &schema, "4", works.clone());
    let y = node_with("node-y", &schema, "4", fails);
    // Z is full until the test frees it, so Y takes the channel first. Both starts stay where
    // they are sent.
    let z = node_with("node-z", &schema, "1", works);
    started(&start_here(&z, "filler", "echo").await);
    let ch = started(&start_here(&x, "fl", "flaky").await);

    let _remains = x.kill9();
    assert!(
        y.wait_output("failed to start here", SOON).await,
        "Y never tried the channel:\n{}",
        y.output()
    );
    // Z has room again: it takes the channel Y handed on, with its chat.
    assert_eq!(z.stop("filler").await.status, 200);
    let moved = runs_here(&z, "fl", "node-z").await.unwrap_or_else(|| {
        panic!(
            "fl never moved to Z:\nY:\n{}\nZ:\n{}",
            y.output(),
            z.output()
        )
    });
    assert_eq!(moved["chat_id"], ch.data["chat_id"], "{moved}");
    assert!(
        z.ask(&ch.chat(), "still here?", "still here?")
            .await
            .is_some(),
        "the handed-on channel does not answer"
    );
}
