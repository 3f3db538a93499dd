//! agentd's benchmark: `cargo bench --bench agentd` (full, a few minutes) or
//! `cargo bench --bench agentd -- --quick` (under a minute); `-- --only <words>` runs only the
//! scenarios whose name contains them.
//!
//! It starts the real release `agentd` on port 0 in a temp dir for each scenario (the tests'
//! [`TestApp`]), drives it over HTTP like a client would, and prints one table: min, median, p99
//! and max of every figure, with the figure's natural floor measured in the same run where one
//! exists. `AGENTD_BIN=/path/to/agentd` measures another build instead (say, before a change).
//! `AGENTD_BENCH_SCENARIOS="round trips,front door"` runs only the scenarios whose names contain
//! one of those words; `AGENTD_TEST_DATABASE_URL=postgres://...` runs them on PostgreSQL (each
//! server in a fresh schema, as the tests do) instead of SQLite.
//!
//! One file: each scenario is one function over the shared `TestApp`, and `main` lists them.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::{agentd_bin, pid_exists, rss_kib, TestApp, WorkerProcess};

/// Samples of one figure.
#[derive(Default, Clone)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, v: f64) {
        self.0.push(v);
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }
    fn pct(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let idx = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
        v[idx.min(v.len() - 1)]
    }
    fn median(&self) -> f64 {
        self.pct(50.0)
    }
}

/// One line of the result table.
struct Row {
    figure: String,
    unit: &'static str,
    samples: Samples,
    floor: Option<(String, Samples)>,
    target: String,
}

impl Row {
    fn new(figure: &str, unit: &'static str, samples: Samples, target: &str) -> Row {
        Row {
            figure: figure.into(),
            unit,
            samples,
            floor: None,
            target: target.into(),
        }
    }
    fn with_floor(mut self, name: &str, floor: Samples) -> Row {
        self.floor = Some((name.into(), floor));
        self
    }
}

type Scenario = fn(bool) -> Pin<Box<dyn Future<Output = Vec<Row>> + Send>>;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--only <words>`: the scenarios whose name contains them (say, `--only start`).
    let only_arg: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    println!(
        "agentd benchmark ({})",
        if quick { "quick" } else { "full" }
    );
    println!("machine: {}", machine());
    println!("binary: {}", binary().display());
    println!(
        "database: {}",
        if support::on_postgres() {
            "PostgreSQL (AGENTD_TEST_DATABASE_URL)"
        } else {
            "SQLite"
        }
    );
    // Both ways of choosing scenarios add up: the flag and the variable.
    let only: Vec<String> = std::env::var("AGENTD_BENCH_SCENARIOS")
        .unwrap_or_default()
        .split(',')
        .chain(only_arg.as_deref())
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty())
        .collect();
    if std::env::var_os("AGENTD_BIN").is_none() && cfg!(debug_assertions) {
        eprintln!("note: not built by `cargo bench`; these are the figures of a debug build");
    }
    let mut rows = Vec::new();
    let scenarios: Vec<(&str, Scenario)> = vec![
        ("start/stop", |q| Box::pin(start_stop(q))),
        ("prewarmed start", |q| Box::pin(prewarmed_start(q))),
        ("reaping", |q| Box::pin(reaping(q))),
        ("ping vs health", |q| Box::pin(ping_throughput(q))),
        ("many workers", |q| Box::pin(many_workers(q))),
        ("dispatch latency", |q| Box::pin(dispatch_latency(q))),
        ("round trips", |q| Box::pin(round_trips(q))),
        ("round trips, 8 agents", |q| {
            Box::pin(round_trips_agents(q, 8))
        }),
        ("round trips, 32 agents", |q| {
            Box::pin(round_trips_agents(q, 32))
        }),
        ("round trips, three nodes", |q| {
            Box::pin(round_trips_nodes(q))
        }),
        ("memory per 1,000 chats", |q| Box::pin(chat_memory(q))),
        ("batch sealing", |q| Box::pin(seal_lateness(q))),
        ("front door", |q| Box::pin(front_door(q))),
        ("chat reads under a writer", |q| Box::pin(chat_reads(q))),
    ];
    for (name, f) in scenarios {
        if !only.is_empty() && !only.iter().any(|w| name.contains(w.as_str())) {
            continue;
        }
        eprintln!("… {name}");
        // On a task of its own: a scenario that panics (a failed request) fails alone.
        match rt.block_on(rt.spawn(f(quick))) {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => eprintln!("scenario {name} failed: {}", why(e)),
        }
    }
    print_table(&rows);
    println!("total time: {:.1} s", started.elapsed().as_secs_f64());
}

/// What a scenario's task died of.
fn why(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| figure | unit | n | min | median | p99 | max | floor (median) | ratio | target |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let s = &r.samples;
        let (floor, ratio) = match &r.floor {
            Some((name, f)) => (
                format!("{name}: {:.2}", f.median()),
                format!("{:.2}", s.median() / f.median()),
            ),
            None => ("".into(), "".into()),
        };
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            r.figure,
            r.unit,
            s.0.len(),
            s.pct(0.0),
            s.median(),
            s.pct(99.0),
            s.pct(100.0),
            floor,
            ratio,
            r.target
        );
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {:.1} GiB, Linux {}",
        mem_kb as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

// ------------------------------------------------------------------ server under test

/// The agentd measured: `AGENTD_BIN`, or the build Cargo made for this target (under
/// `cargo bench`, the release build).
fn binary() -> PathBuf {
    std::env::var_os("AGENTD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(agentd_bin)
}

fn echo_graph() -> Value {
    json!({"name": "echo", "auto_start": false, "graph": {"nodes": [
        {"type": "extension", "name": "echo", "addon": "echo", "property": {"stream": true}}
    ], "connections": []}})
}

/// The echo graph with `n` workers kept waiting for a channel.
fn warm_echo_graph(n: u32) -> Value {
    let mut g = echo_graph();
    g["name"] = json!("warm_echo");
    g["runtime"] = json!({"prewarm": n});
    g
}

fn sleeper_graph() -> Value {
    json!({"name": "sleeper", "nodes": [],
        "runtime": {"command": ["sh", "-c", "exec sleep 3600"], "ready": "settle", "settle_ms": 1, "restart": "never"}})
}

/// A server with the echo and sleeper graphs, warnings only, agentd's own count of HTTP
/// workers, room for a thousand workers, and `env`.
fn server(env: &[(&str, &str)]) -> TestApp {
    TestApp::builder()
        .binary(binary())
        .property_json(json!({"ten": {"predefined_graphs": [echo_graph()]}}))
        .graph_file("sleeper", sleeper_graph())
        .env("RUST_LOG", "warn")
        .env("WORKERS_MAX", "2000")
        .unset("HTTP_WORKERS")
        .envs(env)
        .start()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ------------------------------------------------------------------ scenarios

/// `/start` to ready and `/stop` of the built-in echo worker, beside the floor: the same worker
/// binary spawned directly and waited for until it sends READY=1.
async fn start_stop(quick: bool) -> Vec<Row> {
    let n = if quick { 10 } else { 40 };
    let s = server(&[]);
    let mut start = Samples::default();
    let mut stop = Samples::default();
    for i in 0..n {
        let ch = format!("bench-start-{i}");
        let t0 = Instant::now();
        s.start_ok(&ch, "echo", json!({"timeout": -1})).await;
        start.push(ms(t0.elapsed()));
        let t0 = Instant::now();
        let r = s.stop(&ch).await;
        assert_eq!(r.status, 200, "/stop: {}", r.text);
        stop.push(ms(t0.elapsed()));
    }
    let mut floor = Samples::default();
    let mut floor_stop = Samples::default();
    for i in 0..n {
        let (spawn, stop_t) = spawn_ready_floor(&s.base_url, i);
        floor.push(spawn);
        floor_stop.push(stop_t);
    }
    vec![
        Row::new(
            "/start to ready, built-in echo worker",
            "ms",
            start,
            "median ≤ 15 ms; ≤ 1.5 × floor",
        )
        .with_floor("spawn+READY", floor),
        Row::new(
            "/stop of a cooperative worker until its group is gone",
            "ms",
            stop,
            "median ≤ 10 ms",
        )
        .with_floor("SIGTERM+wait", floor_stop),
    ]
}

/// `/start` to ready when a prewarmed echo worker waits, beside a cold `/start` of the same
/// worker in the same run. Each start waits until the pool has had time to refill (a cold
/// start takes a few ms; the pause is 200 ms), so every start finds a waiting worker. A
/// `GET /health` after the same pause shows what the pause alone costs a request.
async fn prewarmed_start(quick: bool) -> Vec<Row> {
    let n = if quick { 10 } else { 40 };
    // A server of its own: the waiting workers would weigh on the other scenarios.
    let s = TestApp::builder()
        .binary(binary())
        .property_json(json!({"ten": {"predefined_graphs": [echo_graph(), warm_echo_graph(2)]}}))
        .env("RUST_LOG", "warn")
        .unset("HTTP_WORKERS")
        .start();
    let mut warm = Samples::default();
    let mut cold = Samples::default();
    let mut idle = Samples::default();
    // The pool fills as the server boots.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..n {
        let ch = format!("bench-warm-{i}");
        let t0 = Instant::now();
        s.start_ok(&ch, "warm_echo", json!({"timeout": -1})).await;
        warm.push(ms(t0.elapsed()));
        let ch_cold = format!("bench-cold-{i}");
        let t0 = Instant::now();
        s.start_ok(&ch_cold, "echo", json!({"timeout": -1})).await;
        cold.push(ms(t0.elapsed()));
        s.stop(&ch).await;
        s.stop(&ch_cold).await;
        // The same pause before a request that does nothing: what any request costs a server
        // that was idle that long (on a VM its caches are cold by then).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t0 = Instant::now();
        let r = s.health().await;
        assert_eq!(r.status, 200, "/health: {}", r.text);
        idle.push(ms(t0.elapsed()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    vec![
        Row::new(
            "/start to ready, prewarmed echo worker (runtime.prewarm)",
            "ms",
            warm,
            "median ≤ 1 ms; ≤ 0.3 × cold",
        )
        .with_floor("cold /start", cold),
        Row::new(
            "GET /health after the same 200 ms pause (what any request costs here)",
            "ms",
            idle,
            "",
        ),
    ]
}

/// Spawns `agentd worker` directly with its own notify socket; (ms to READY=1, ms to exit
/// after SIGTERM).
fn spawn_ready_floor(url: &str, i: usize) -> (f64, f64) {
    let mut w = WorkerProcess::builder(json!({"ten": {"predefined_graphs": [echo_graph()]}}))
        .binary(binary())
        .env("AGENTD_API_URL", format!("{url}/api/v1"))
        .env("AGENTD_SERVER_URL", url)
        .env("AGENTD_GRAPH", "echo")
        .env("AGENTD_AGENT_ID", "echo")
        .env("AGENTD_CHANNEL", format!("floor-{i}"))
        .env("AGENTD_CLAIM_AGENT_ID", "floor-none")
        .env("AGENTD_WORKER_ID", format!("floor-{i}"))
        .quiet()
        .spawn();
    assert!(w.wait_ready(Duration::from_secs(10)), "no READY=1");
    let ready = ms(w.spawned_at.elapsed());
    let (_, took) = w
        .terminate(Duration::from_secs(10))
        .expect("the worker exits on SIGTERM");
    (ready, ms(took))
}

/// 200 workers whose deadlines fall together: how late each is stopped.
async fn reaping(quick: bool) -> Vec<Row> {
    let n = if quick { 50 } else { 200 };
    let timeout_s = 2;
    let s = Arc::new(server(&[]));
    let chans: Vec<String> = (0..n).map(|i| format!("bench-reap-{i}")).collect();
    run_concurrent(&chans, 32, |ch| {
        let s = s.clone();
        async move {
            s.start_ok(&ch, "sleeper", json!({"timeout": timeout_s}))
                .await;
        }
    })
    .await;
    // Ping all at once: each deadline is then the ping's answer time + timeout.
    let acks: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    run_concurrent(&chans, 64, |ch| {
        let s = s.clone();
        let acks = acks.clone();
        async move {
            let r = s.ping(&ch).await;
            assert_eq!(r.status, 200, "/ping: {}", r.text);
            lock(&acks).insert(ch, Instant::now());
        }
    })
    .await;
    let acks = lock(&acks).clone();
    // Each worker's end as agentd tells it on the workers' event stream (no polling of /list,
    // whose cost with 200 workers weighed on the figure it measured).
    let mut events = s
        .open_stream(s.request(reqwest::Method::GET, "/ops/workers/stream"))
        .await
        .unwrap_or_else(|r| panic!("/ops/workers/stream: {}", r.text));
    let mut gone: HashMap<String, Instant> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(timeout_s as u64 + 10);
    while gone.len() < n && Instant::now() < deadline {
        let within = deadline.saturating_duration_since(Instant::now());
        let Some(e) = events
            .next_matching(within, |e| {
                e.event == "worker.gone" || e.event == "snapshot"
            })
            .await
        else {
            break;
        };
        let now = Instant::now();
        if e.event == "worker.gone" {
            if let Some(ch) = e.data["channel_name"].as_str() {
                gone.entry(ch.to_string()).or_insert(now);
            }
            continue;
        }
        // A snapshot (the first, or after this client fell behind): who is not in it is gone.
        let live: HashSet<&str> = e.data["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["channel_name"].as_str())
            .collect();
        for ch in &chans {
            if !live.contains(ch.as_str()) {
                gone.entry(ch.clone()).or_insert(now);
            }
        }
    }
    let mut late = Samples::default();
    for ch in &chans {
        if let (Some(a), Some(g)) = (acks.get(ch), gone.get(ch)) {
            let due = *a + Duration::from_secs(timeout_s as u64);
            late.push(g.saturating_duration_since(due).as_secs_f64() * 1000.0);
        }
    }
    vec![Row::new(
        &format!("idle reaping: stop time − deadline, {n} workers together"),
        "ms",
        late,
        "p99 ≤ 100 ms",
    )]
}

/// `/ping` throughput under concurrent keep-alive load, beside `/health` under the same load.
async fn ping_throughput(quick: bool) -> Vec<Row> {
    let secs = if quick { 1.0 } else { 3.0 };
    let rounds = if quick { 2 } else { 3 };
    let s = Arc::new(server(&[]));
    let chans: Vec<String> = (0..4).map(|i| format!("bench-ping-{i}")).collect();
    for ch in &chans {
        s.start_ok(ch, "sleeper", json!({"timeout": -1})).await;
    }
    let mut ping = Samples::default();
    let mut health = Samples::default();
    for _ in 0..rounds {
        health.push(load(&s, secs, None).await);
        ping.push(load(&s, secs, Some(&chans)).await);
    }
    vec![Row::new(
        "/ping throughput, 64 keep-alive clients",
        "req/s",
        ping,
        "≥ 0.9 × /health",
    )
    .with_floor("/health req/s", health)]
}

/// Requests per second that 64 clients get answered in `secs`: `/ping` of `chans` in turn, or
/// `/health`. Sent bare (the answer is not read): the load generator shares the machine.
async fn load(s: &Arc<TestApp>, secs: f64, chans: Option<&[String]>) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = s.clone();
        let count = count.clone();
        let ch = chans.map(|c| c[i % c.len()].clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let req = match &ch {
                    Some(ch) => s
                        .client
                        .post(s.url("/ping"))
                        .json(&json!({"channel_name": ch})),
                    None => s.client.get(s.url("/health")),
                };
                if req.send().await.is_ok_and(|r| r.status().is_success()) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    count.load(Ordering::Relaxed) as f64 / secs
}

/// 1,000 idle echo workers: time to start all, agentd RSS, median worker RSS, shutdown of all.
async fn many_workers(quick: bool) -> Vec<Row> {
    let n = if quick { 100 } else { 1000 };
    let s = Arc::new(server(&[]));
    let chans: Vec<String> = (0..n).map(|i| format!("bench-many-{i}")).collect();
    let pids: Arc<Mutex<Vec<i32>>> = Default::default();
    let t0 = Instant::now();
    run_concurrent(&chans, 32, |ch| {
        let s = s.clone();
        let pids = pids.clone();
        async move {
            let w = s.start_ok(&ch, "echo", json!({"timeout": -1})).await;
            lock(&pids).push(w.pid);
        }
    })
    .await;
    let start_all = ms(t0.elapsed()) / 1000.0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let agentd_rss = rss_kib(s.pid()).unwrap_or(0) as f64 / 1024.0;
    let pids = lock(&pids).clone();
    let mut worker_rss = Samples::default();
    for p in &pids {
        if let Some(kb) = rss_kib(*p) {
            worker_rss.push(kb as f64 / 1024.0);
        }
    }
    let Ok(mut s) = Arc::try_unwrap(s) else {
        panic!("the server is still shared")
    };
    let t0 = Instant::now();
    s.terminate(Duration::from_secs(60))
        .expect("agentd exits on SIGTERM");
    let shutdown = t0.elapsed().as_secs_f64();
    let survivors = pids.iter().filter(|p| pid_exists(**p)).count();
    let one = |v: f64| Samples(vec![v]);
    vec![
        Row::new(
            &format!("{n} idle echo workers: time to start all"),
            "s",
            one(start_all),
            "≤ 15 s",
        ),
        Row::new(
            &format!("{n} idle echo workers: agentd RSS"),
            "MB",
            one(agentd_rss),
            "≤ 100 MB",
        ),
        Row::new(
            &format!("{n} idle echo workers: worker RSS"),
            "MB",
            worker_rss,
            "median ≤ 10 MB",
        ),
        Row::new(
            &format!("{n} idle echo workers: shutdown of all ({survivors} survived)"),
            "s",
            one(shutdown),
            "≤ 5 s",
        ),
    ]
}

/// A claim by `worker` for `chat`, waiting up to 5 s, sent on a task of its own; when its
/// answer came, and the answer.
fn claim_soon(
    s: &Arc<TestApp>,
    worker: &str,
    chat: &str,
) -> tokio::task::JoinHandle<(Instant, Value)> {
    let (s, body) = (
        s.clone(),
        json!({"workerId": worker, "waitMs": 5000, "chatId": chat}),
    );
    tokio::spawn(async move {
        let r = s.claim_with(body).await;
        let at = Instant::now();
        assert_eq!(r.status, 200, "claim: {}", r.text);
        (at, r.body)
    })
}

/// User message to claimable batch (immediate mode, a claim already waiting), and user message to
/// the first streamed chunk of the echo worker seen on the event stream.
async fn dispatch_latency(quick: bool) -> Vec<Row> {
    let n = if quick { 20 } else { 100 };
    let s = Arc::new(server(&[
        ("DISPATCH_MODE", "immediate"),
        ("WRITE_RATE_LIMIT_MAX", "100000000"),
    ]));
    let chat = s.new_chat("echo").await;
    let mut claim_lat = Samples::default();
    let mut rtt = Samples::default();
    for i in 0..n {
        let claim = claim_soon(&s, "bench", &chat);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        s.post_user(&chat, &format!("m{i}")).await;
        let (t1, batch) = claim.await.expect("the claim");
        claim_lat.push(ms(t1.duration_since(t0)));
        s.complete(&batch, "bench").await;
        let t0 = Instant::now();
        s.health().await;
        rtt.push(ms(t0.elapsed()));
    }

    // Echo worker answering on a channel's chat; chunks observed on the event stream.
    let chat = s
        .start_ok("bench-chunk", "echo", json!({"timeout": -1}))
        .await
        .chat();
    let mut events = s.events("", None).await;
    let mut first_chunk = Samples::default();
    for i in 0..n {
        let t0 = Instant::now();
        s.post_user(&chat, &format!("hello {i}")).await;
        let deadline = t0 + Duration::from_secs(10);
        let of_chat = |kind: &'static str| {
            let chat = chat.clone();
            move |e: &support::Ev| e.event == kind && e.raw.contains(&chat)
        };
        let left = || deadline.saturating_duration_since(Instant::now());
        let chunk = events
            .next_matching(left(), of_chat("message.streaming.chunk"))
            .await;
        assert!(chunk.is_some(), "no chunk within 10 s");
        first_chunk.push(ms(t0.elapsed()));
        // Let the answer finish before the next message.
        let done = events
            .next_matching(left(), of_chat("message.streaming.complete"))
            .await;
        assert!(done.is_some(), "answer did not complete");
    }
    vec![
        Row::new(
            "user message to claimable batch (immediate, claim waiting)",
            "ms",
            claim_lat,
            "median ≤ 2 ms",
        )
        .with_floor("GET /health", rtt.clone()),
        Row::new(
            "user message to first streamed chunk on the event stream (echo)",
            "ms",
            first_chunk,
            "median ≤ 10 ms",
        )
        .with_floor("GET /health", rtt),
    ]
}

/// Full round trips (post, claim, streamed answer, complete) across 50 chats.
async fn round_trips(quick: bool) -> Vec<Row> {
    let (secs, rate, floor) = round_trip_rate(quick, 50, &["ping"]).await;
    vec![Row::new(
        &format!("full round trips across 50 chats for {secs} s"),
        "per s",
        Samples(vec![rate]),
        "≥ 2,000 per s",
    )
    .with_floor("the same requests to /health", Samples(vec![floor]))]
}

/// Full round trips as [`round_trips`], with `agents` chats answered at once and a three-chunk
/// answer: each chat's client waits for its answer before it sends the next message.
async fn round_trips_agents(quick: bool, agents: usize) -> Vec<Row> {
    let (secs, rate, floor) = round_trip_rate(quick, agents, &["one ", "two ", "three"]).await;
    vec![Row::new(
        &format!("full round trips (3 chunks), {agents} agents at once for {secs} s"),
        "per s",
        Samples(vec![rate]),
        "",
    )
    .with_floor("the same requests to /health", Samples(vec![floor]))]
}

/// Full round trips across 50 chats on three nodes sharing one PostgreSQL schema, beside one
/// node on the same database: each chat's user talks to one node and its agent to the next, so
/// every round trip crosses nodes (the claim wakes through NOTIFY, the answer's events come
/// back through it). PostgreSQL only (`AGENTD_TEST_DATABASE_URL`); skipped on SQLite.
async fn round_trips_nodes(quick: bool) -> Vec<Row> {
    if !support::on_postgres() {
        eprintln!("  skipped: needs PostgreSQL (AGENTD_TEST_DATABASE_URL)");
        return Vec::new();
    }
    let env = [
        ("DISPATCH_MODE", "immediate"),
        ("WRITE_RATE_LIMIT_MAX", "100000000"),
    ];
    let (secs, one) = round_trip_rate_on(quick, vec![Arc::new(server(&env))], 50, &["ping"]).await;
    let first = server(&env);
    let schema = first.schema().cloned().expect("a PostgreSQL schema");
    let node = || {
        TestApp::builder()
            .binary(binary())
            .property_json(json!({"ten": {"predefined_graphs": [echo_graph()]}}))
            .env("RUST_LOG", "warn")
            .env("WORKERS_MAX", "2000")
            .unset("HTTP_WORKERS")
            .envs(&env)
            .schema(&schema)
            .start()
    };
    let nodes = vec![Arc::new(first), Arc::new(node()), Arc::new(node())];
    let (_, three) = round_trip_rate_on(quick, nodes, 50, &["ping"]).await;
    vec![
        Row::new(
            &format!("full round trips across 50 chats for {secs} s, one node on PostgreSQL"),
            "per s",
            Samples(vec![one]),
            "",
        ),
        Row::new(
            "the same across three nodes (user and agent on different nodes)",
            "per s",
            Samples(vec![three]),
            "",
        ),
    ]
}

/// Round trips per second over `chats` chats, each answered by its own agent with `chunks`
/// streamed: the measuring time in seconds, the rate, and its floor: the rate at which the same
/// clients, one per chat, send as many requests per round trip to `GET /health` (the HTTP
/// exchanges alone, on this machine, with the client's own cost).
async fn round_trip_rate(
    quick: bool,
    chats: usize,
    chunks: &'static [&'static str],
) -> (u64, f64, f64) {
    let s = Arc::new(server(&[
        ("DISPATCH_MODE", "immediate"),
        ("WRITE_RATE_LIMIT_MAX", "100000000"),
    ]));
    let (secs, rate) = round_trip_rate_on(quick, vec![s.clone()], chats, chunks).await;
    // Post, claim, the streaming message, its chunks, its completion, the batch's completion.
    let per_trip = 5 + chunks.len();
    let end = Instant::now() + Duration::from_secs(secs);
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..chats {
        let (s, count) = (s.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                for _ in 0..per_trip {
                    s.get("/health").await;
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        secs,
        rate,
        count.load(Ordering::Relaxed) as f64 / secs as f64,
    )
}

/// [`round_trip_rate`] on these servers (nodes of one database): chat `i`'s user posts through
/// node `i`, its agent claims, streams and completes through node `i + 1`.
async fn round_trip_rate_on(
    quick: bool,
    nodes: Vec<Arc<TestApp>>,
    chats: usize,
    chunks: &'static [&'static str],
) -> (u64, f64) {
    let secs = if quick { 3 } else { 10 };
    let mut ids = Vec::new();
    for _ in 0..chats {
        ids.push(nodes[0].new_chat("echo").await);
    }
    let count = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (i, chat) in ids.into_iter().enumerate() {
        let user = nodes[i % nodes.len()].clone();
        let s = nodes[(i + 1) % nodes.len()].clone();
        let count = count.clone();
        // A failed step ends this chat's loop (its panic is printed); the others go on.
        tasks.push(tokio::spawn(async move {
            let w = format!("w{i}");
            while Instant::now() < end {
                user.post_user(&chat, "ping").await;
                let b = s
                    .claim_with(json!({"workerId": w, "waitMs": 5000, "chatId": chat}))
                    .await;
                assert_eq!(b.status, 200, "claim: {}", b.text);
                let m = s.stream_message(&chat, "echo").await;
                let mid = m.body["id"].as_str().unwrap_or_default().to_string();
                for piece in chunks {
                    s.chunk(&mid, piece).await;
                }
                s.complete_message(&mid, json!({})).await;
                let r = s.complete(&b.body, &w).await;
                assert_eq!(r.status, 204, "complete: {}", r.text);
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (secs, count.load(Ordering::Relaxed) as f64 / secs as f64)
}

/// agentd's resident memory grown by 1,000 chats with 10 messages each, all read back in full.
async fn chat_memory(quick: bool) -> Vec<Row> {
    let chats_n = if quick { 200 } else { 1000 };
    let per_chat = 10;
    let s = Arc::new(server(&[("WRITE_RATE_LIMIT_MAX", "100000000")]));
    // Warm the server's own pools and caches first.
    let warmup = s.new_chat("echo").await;
    s.post_user(&warmup, "warm").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(s.pid()).unwrap_or(0) as f64;
    let chans: Vec<String> = (0..chats_n).map(|i| format!("{i}")).collect();
    let chats: Arc<Mutex<Vec<String>>> = Default::default();
    run_concurrent(&chans, 16, |_| {
        let (s, chats) = (s.clone(), chats.clone());
        async move {
            let chat = s.new_chat("echo").await;
            for m in 0..per_chat {
                s.post_user(&chat, &format!("message {m} with a few words of history"))
                    .await;
            }
            lock(&chats).push(chat);
        }
    })
    .await;
    let all = lock(&chats).clone();
    run_concurrent(&all, 16, |chat| {
        let s = s.clone();
        async move {
            s.history(&chat).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib(s.pid()).unwrap_or(0) as f64;
    let per_1000 = (after - before).max(0.0) / 1024.0 * 1000.0 / chats_n as f64;
    vec![Row::new(
        &format!("agentd RSS growth per 1,000 chats ({per_chat} messages each, read back)"),
        "MB",
        Samples(vec![per_1000]),
        "",
    )]
}

/// `batched_sequential`: batch seal time minus the debounce deadline.
async fn seal_lateness(quick: bool) -> Vec<Row> {
    let n = if quick { 20 } else { 100 };
    let debounce = 100u64;
    let s = Arc::new(server(&[
        ("DISPATCH_MODE", "batched_sequential"),
        ("DISPATCH_BATCH_DEBOUNCE_MS", "100"),
        ("WRITE_RATE_LIMIT_MAX", "100000000"),
    ]));
    let mut chats = Vec::new();
    for _ in 0..10 {
        chats.push(s.new_chat("echo").await);
    }
    let late: Arc<Mutex<Samples>> = Default::default();
    let per = n / chats.len();
    let mut tasks = Vec::new();
    for (i, chat) in chats.into_iter().enumerate() {
        let s = s.clone();
        let late = late.clone();
        tasks.push(tokio::spawn(async move {
            let w = format!("seal{i}");
            for _ in 0..per {
                let claim = claim_soon(&s, &w, &chat);
                tokio::time::sleep(Duration::from_millis(10)).await;
                s.post_user(&chat, "x").await;
                let acked = Instant::now();
                let (t, batch) = claim.await.expect("the claim");
                let due = acked + Duration::from_millis(debounce);
                lock(&late).push(t.saturating_duration_since(due).as_secs_f64() * 1000.0);
                s.complete(&batch, &w).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("a sealing client");
    }
    let samples = lock(&late).clone();
    vec![Row::new(
        "batch seal time − debounce deadline (batched_sequential)",
        "ms",
        samples,
        "p99 ≤ 20 ms",
    )]
}

/// One `POST /agents/echo/chat`, which must be answered.
async fn ask_echo(s: &TestApp, text: &str) {
    let r = s.agent_chat("echo", json!({"message": text})).await;
    assert_eq!(r.status, 200, "/agents/echo/chat: {}", r.text);
}

/// `POST /agents/:id/chat`, warm and cold (the agent started on demand).
async fn front_door(quick: bool) -> Vec<Row> {
    let n = if quick { 10 } else { 50 };
    let mut cold = Samples::default();
    let cold_n = if quick { 3 } else { 10 };
    for _ in 0..cold_n {
        let s = server(&[]);
        let t0 = Instant::now();
        ask_echo(&s, "hello").await;
        cold.push(ms(t0.elapsed()));
    }
    let s = server(&[]);
    ask_echo(&s, "warm up").await;
    let mut warm = Samples::default();
    for i in 0..n {
        let t0 = Instant::now();
        ask_echo(&s, &format!("hello {i}")).await;
        warm.push(ms(t0.elapsed()));
    }
    vec![
        Row::new("POST /agents/:id/chat, warm", "ms", warm, "median ≤ 5 ms"),
        Row::new(
            "POST /agents/:id/chat, cold (started on demand)",
            "ms",
            cold,
            "median ≤ 30 ms",
        ),
    ]
}

/// Concurrent readers of one chat's message list for the read scenario.
const READERS: usize = 32;
/// The read scenario has no target yet: it is what the store's read pool is measured against.
const BASELINE: &str = "baseline for the read pool";

/// 32 clients listing a chat's messages (a full page of 50) while one writer posts to it: reads
/// per second, read latency and the writer's rate, beside the same readers with no writer.
async fn chat_reads(quick: bool) -> Vec<Row> {
    let secs = if quick { 3 } else { 10 };
    let s = Arc::new(server(&[("WRITE_RATE_LIMIT_MAX", "100000000")]));
    let chat = s.new_chat("echo").await;
    // More than a page, so every read returns a full one.
    for i in 0..100 {
        s.post_user(&chat, &format!("seed {i}")).await;
    }
    let alone = read_load(&s, &chat, secs, false).await;
    let busy = read_load(&s, &chat, secs, true).await;
    let what = format!("GET a chat's messages, {READERS} clients, one writer posting");
    vec![
        Row::new(&format!("{what}: reads"), "per s", busy.reads, BASELINE)
            .with_floor("no writer", alone.reads),
        Row::new(
            &format!("{what}: read latency"),
            "ms",
            busy.latency,
            BASELINE,
        )
        .with_floor("no writer", alone.latency),
        Row::new(
            &format!("{what}: the writer's posts"),
            "per s",
            busy.writes,
            "",
        ),
    ]
}

/// What [`read_load`] saw, per second of the run (rates) or per read (latency).
struct ReadLoad {
    reads: Samples,
    latency: Samples,
    writes: Samples,
}

/// [`READERS`] clients read `chat`'s newest messages for `secs` seconds, with or without one
/// client posting user messages to it the whole time. Reads are sent bare (the answer is read,
/// not parsed): the load generator shares the machine.
async fn read_load(s: &Arc<TestApp>, chat: &str, secs: u64, writer: bool) -> ReadLoad {
    let begin = Instant::now();
    let end = begin + Duration::from_secs(secs);
    let path = format!("/api/v1/chats/{chat}/messages");
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (s, url) = (s.clone(), s.url(&path));
            tokio::spawn(async move {
                // (when it was answered, how long it took)
                let mut done: Vec<(Duration, f64)> = Vec::new();
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let res = s.client.get(&url).send().await.expect("a read");
                    assert_eq!(res.status(), 200, "read");
                    res.bytes().await.expect("a read's body");
                    done.push((begin.elapsed(), ms(t0.elapsed())));
                }
                done
            })
        })
        .collect();
    let posts = writer.then(|| {
        let (s, chat) = (s.clone(), chat.to_string());
        tokio::spawn(async move {
            let mut done = Vec::new();
            for n in 0.. {
                if Instant::now() >= end {
                    break;
                }
                s.post_user(&chat, &format!("write {n}")).await;
                done.push(begin.elapsed());
            }
            done
        })
    });
    let mut reads = Vec::new();
    let mut latency = Samples::default();
    for r in readers {
        for (at, took) in r.await.expect("a reader") {
            reads.push(at);
            latency.push(took);
        }
    }
    let writes = match posts {
        Some(p) => p.await.expect("the writer"),
        None => Vec::new(),
    };
    ReadLoad {
        reads: per_second(&reads, secs),
        latency,
        writes: per_second(&writes, secs),
    }
}

/// How many of `times` fall in each whole second of a run of `secs` seconds.
fn per_second(times: &[Duration], secs: u64) -> Samples {
    let mut counts = vec![0.0; secs as usize];
    for t in times {
        if let Some(c) = counts.get_mut(t.as_secs() as usize) {
            *c += 1.0;
        }
    }
    Samples(counts)
}

/// Runs `f` for every item with at most `width` in flight.
async fn run_concurrent<F, Fut>(items: &[String], width: usize, f: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    futures_util::stream::iter(items.iter().cloned().map(f))
        .buffer_unordered(width)
        .collect::<Vec<()>>()
        .await;
}

/// The data behind `m`, even if a task panicked holding it (the samples are still good).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
