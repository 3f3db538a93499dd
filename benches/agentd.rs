//! agentd's benchmark: `cargo bench --bench agentd` (full, a few minutes) or
//! `cargo bench --bench agentd -- --quick` (under a minute).
//!
//! It starts the real release `agentd` on port 0 in a temp dir for each scenario, drives it over
//! HTTP like a client would, and prints one table: min, median, p99 and max of every figure, with
//! the figure's natural floor measured in the same run where one exists.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

type Res<T> = Result<T, String>;

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

struct Opts {
    quick: bool,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let opts = Opts { quick };
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
    let mut rows = Vec::new();
    type Scenario =
        fn(&Opts) -> std::pin::Pin<Box<dyn std::future::Future<Output = Res<Vec<Row>>>>>;
    let scenarios: Vec<(&str, Scenario)> = vec![
        ("start/stop", |o| Box::pin(start_stop(o.quick))),
        ("reaping", |o| Box::pin(reaping(o.quick))),
        ("ping vs health", |o| Box::pin(ping_throughput(o.quick))),
        ("many workers", |o| Box::pin(many_workers(o.quick))),
        ("dispatch latency", |o| Box::pin(dispatch_latency(o.quick))),
        ("round trips", |o| Box::pin(round_trips(o.quick))),
        ("batch sealing", |o| Box::pin(seal_lateness(o.quick))),
        ("front door", |o| Box::pin(front_door(o.quick))),
    ];
    for (name, f) in scenarios {
        eprintln!("… {name}");
        match rt.block_on(f(&opts)) {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => eprintln!("scenario {name} failed: {e}"),
        }
    }
    print_table(&rows);
    println!("total time: {:.1} s", started.elapsed().as_secs_f64());
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

struct Server {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

fn echo_graph() -> Value {
    json!({"name": "echo", "auto_start": false, "graph": {"nodes": [
        {"type": "extension", "name": "echo", "addon": "echo", "property": {"stream": true}}
    ], "connections": []}})
}

fn sleeper_graph() -> Value {
    json!({"name": "sleeper", "nodes": [],
        "runtime": {"command": ["sh", "-c", "exec sleep 3600"], "ready": "settle", "settle_ms": 1, "restart": "never"}})
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Res<Server> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let root = dir.path();
        std::fs::create_dir_all(root.join("graphs")).map_err(|e| e.to_string())?;
        let doc = json!({"ten": {"predefined_graphs": [echo_graph()]}});
        std::fs::write(root.join("property.json"), doc.to_string()).map_err(|e| e.to_string())?;
        std::fs::write(
            root.join("graphs/sleeper.json"),
            sleeper_graph().to_string(),
        )
        .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentd"));
        cmd.arg("serve")
            .current_dir(root)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("SERVER_PORT", "0")
            .env("DATA_DIR", root.join("data"))
            .env("LOG_PATH", root.join("logs"))
            .env("PROPERTY_JSON", root.join("property.json"))
            .env("GRAPHS_DIR", root.join("graphs"))
            .env("WORKERS_MAX", "2000")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(u) = line.strip_prefix("agentd listening on ") {
                    let _ = tx.send(u.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| "agentd did not start".to_string())?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Server {
            child,
            url,
            dir,
            http,
        })
    }

    async fn post(&self, path: &str, body: Value) -> Res<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str) -> Res<(u16, Value)> {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn start_worker(&self, channel: &str, graph: &str, timeout: i64) -> Res<Value> {
        let (st, body) = self
            .post(
                "/start",
                json!({"channel_name": channel, "graph_name": graph, "timeout": timeout}),
            )
            .await?;
        if st != 200 {
            return Err(format!("/start {channel}: {st} {body}"));
        }
        Ok(body["data"].clone())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait; returns how long the exit took.
    fn terminate(mut self) -> Duration {
        let t0 = Instant::now();
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let d = t0.elapsed();
        let _ = &self.dir;
        d
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

// ------------------------------------------------------------------ scenarios

/// `/start` to ready and `/stop` of the built-in echo worker, beside the floor: the same worker
/// binary spawned directly and waited for until it sends READY=1.
async fn start_stop(quick: bool) -> Res<Vec<Row>> {
    let n = if quick { 10 } else { 40 };
    let server = Server::start(&[])?;
    let mut start = Samples::default();
    let mut stop = Samples::default();
    for i in 0..n {
        let ch = format!("bench-start-{i}");
        let t0 = Instant::now();
        server.start_worker(&ch, "echo", -1).await?;
        start.push(ms(t0.elapsed()));
        let t0 = Instant::now();
        let (st, body) = server.post("/stop", json!({"channel_name": ch})).await?;
        if st != 200 {
            return Err(format!("/stop: {st} {body}"));
        }
        stop.push(ms(t0.elapsed()));
    }
    let mut floor = Samples::default();
    let mut floor_stop = Samples::default();
    let prop = server.dir.path().join("floor-property.json");
    std::fs::write(
        &prop,
        json!({"ten": {"predefined_graphs": [echo_graph()]}}).to_string(),
    )
    .map_err(|e| e.to_string())?;
    for i in 0..n {
        let (spawn, stop_t) = spawn_ready_floor(&server.url, &prop, i)?;
        floor.push(spawn);
        floor_stop.push(stop_t);
    }
    Ok(vec![
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
    ])
}

/// Spawns `agentd worker` directly with its own notify socket; returns (ms to READY=1, ms to exit
/// after SIGTERM).
fn spawn_ready_floor(url: &str, prop: &Path, i: usize) -> Res<(f64, f64)> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("agentd-bench-{}-{i}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| e.to_string())?;
    let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentd"))
        .arg("worker")
        .arg("--property")
        .arg(prop)
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .env("AGENTD_API_URL", format!("{url}/api/v1"))
        .env("AGENTD_SERVER_URL", url)
        .env("AGENTD_GRAPH", "echo")
        .env("AGENTD_AGENT_ID", "echo")
        .env("AGENTD_CHANNEL", format!("floor-{i}"))
        .env("AGENTD_CLAIM_AGENT_ID", "floor-none")
        .env("AGENTD_WORKER_ID", format!("floor-{i}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let ready = loop {
        let n = sock
            .recv(&mut buf)
            .map_err(|e| format!("no READY=1: {e}"))?;
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            break ms(t0.elapsed());
        }
    };
    let t1 = Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    Ok((ready, ms(t1.elapsed())))
}

/// 200 workers whose deadlines fall together: how late each is stopped.
async fn reaping(quick: bool) -> Res<Vec<Row>> {
    let n = if quick { 50 } else { 200 };
    let timeout_s = 2;
    let server = Arc::new(Server::start(&[])?);
    let chans: Vec<String> = (0..n).map(|i| format!("bench-reap-{i}")).collect();
    run_concurrent(&chans, 32, |ch| {
        let s = server.clone();
        async move { s.start_worker(&ch, "sleeper", timeout_s).await.map(|_| ()) }
    })
    .await?;
    // Ping all at once: each deadline is then the ping's answer time + timeout.
    let acks: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    run_concurrent(&chans, 64, |ch| {
        let s = server.clone();
        let acks = acks.clone();
        async move {
            let (st, b) = s.post("/ping", json!({"channel_name": ch})).await?;
            if st != 200 {
                return Err(format!("/ping: {st} {b}"));
            }
            acks.lock().unwrap().insert(ch, Instant::now());
            Ok(())
        }
    })
    .await?;
    let acks = acks.lock().unwrap().clone();
    let mut gone: HashMap<String, Instant> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(timeout_s as u64 + 10);
    while gone.len() < n && Instant::now() < deadline {
        let (_, list) = server.get("/list").await?;
        let now = Instant::now();
        let live: std::collections::HashSet<String> = list["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w["channel_name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for ch in &chans {
            if !live.contains(ch) {
                gone.entry(ch.clone()).or_insert(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut late = Samples::default();
    for ch in &chans {
        if let (Some(a), Some(g)) = (acks.get(ch), gone.get(ch)) {
            let due = *a + Duration::from_secs(timeout_s as u64);
            late.push(g.saturating_duration_since(due).as_secs_f64() * 1000.0);
        }
    }
    Ok(vec![Row::new(
        &format!("idle reaping: stop time − deadline, {n} workers together"),
        "ms",
        late,
        "p99 ≤ 100 ms",
    )])
}

/// `/ping` throughput under concurrent keep-alive load, beside `/health` under the same load.
async fn ping_throughput(quick: bool) -> Res<Vec<Row>> {
    let secs = if quick { 1.0 } else { 3.0 };
    let rounds = if quick { 2 } else { 3 };
    let server = Arc::new(Server::start(&[])?);
    let chans: Vec<String> = (0..4).map(|i| format!("bench-ping-{i}")).collect();
    for ch in &chans {
        server.start_worker(ch, "sleeper", -1).await?;
    }
    let mut ping = Samples::default();
    let mut health = Samples::default();
    for _ in 0..rounds {
        health.push(load(&server, secs, None).await?);
        ping.push(load(&server, secs, Some(&chans)).await?);
    }
    Ok(vec![Row::new(
        "/ping throughput, 64 keep-alive clients",
        "req/s",
        ping,
        "≥ 0.9 × /health",
    )
    .with_floor("/health req/s", health)])
}

async fn load(server: &Arc<Server>, secs: f64, chans: Option<&[String]>) -> Res<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = server.clone();
        let count = count.clone();
        let ch = chans.map(|c| c[i % c.len()].clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let ok = match &ch {
                    Some(ch) => s
                        .http
                        .post(format!("{}/ping", s.url))
                        .json(&json!({"channel_name": ch}))
                        .send()
                        .await
                        .map(|r| r.status().is_success()),
                    None => s
                        .http
                        .get(format!("{}/health", s.url))
                        .send()
                        .await
                        .map(|r| r.status().is_success()),
                };
                if matches!(ok, Ok(true)) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / secs)
}

/// 1,000 idle echo workers: time to start all, agentd RSS, median worker RSS, shutdown of all.
async fn many_workers(quick: bool) -> Res<Vec<Row>> {
    let n = if quick { 100 } else { 1000 };
    let server = Arc::new(Server::start(&[])?);
    let chans: Vec<String> = (0..n).map(|i| format!("bench-many-{i}")).collect();
    let pids: Arc<std::sync::Mutex<Vec<u32>>> = Default::default();
    let t0 = Instant::now();
    run_concurrent(&chans, 32, |ch| {
        let s = server.clone();
        let pids = pids.clone();
        async move {
            let d = s.start_worker(&ch, "echo", -1).await?;
            if let Some(p) = d["pid"].as_u64() {
                pids.lock().unwrap().push(p as u32);
            }
            Ok(())
        }
    })
    .await?;
    let start_all = ms(t0.elapsed()) / 1000.0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let agentd_rss = rss_kb(server.pid()).unwrap_or(0) as f64 / 1024.0;
    let pids = pids.lock().unwrap().clone();
    let mut worker_rss = Samples::default();
    for p in &pids {
        if let Some(kb) = rss_kb(*p) {
            worker_rss.push(kb as f64 / 1024.0);
        }
    }
    let server = Arc::try_unwrap(server).map_err(|_| "server still shared")?;
    let shutdown = server.terminate().as_secs_f64();
    let survivors = pids
        .iter()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .count();
    let one = |v: f64| Samples(vec![v]);
    Ok(vec![
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
    ])
}

async fn create_chat(server: &Server, agent: &str) -> Res<String> {
    let (st, body) = server
        .post(
            "/api/v1/chats",
            json!({"agentIds": [agent], "modelId": "default"}),
        )
        .await?;
    if st != 201 {
        return Err(format!("create chat: {st} {body}"));
    }
    body["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "chat without id".into())
}

async fn post_user(server: &Server, chat: &str, text: &str) -> Res<()> {
    let (st, body) = server
        .post(
            &format!("/api/v1/chats/{chat}/messages"),
            json!({"role": "user", "senderId": "user:primary", "content": text}),
        )
        .await?;
    if st != 201 {
        return Err(format!("post message: {st} {body}"));
    }
    Ok(())
}

/// User message to claimable batch (immediate mode, a claim already waiting), and user message to
/// the first streamed chunk of the echo worker seen on the event stream.
async fn dispatch_latency(quick: bool) -> Res<Vec<Row>> {
    let n = if quick { 20 } else { 100 };
    let server = Arc::new(Server::start(&[
        ("DISPATCH_MODE", "immediate"),
        ("WRITE_RATE_LIMIT_MAX", "100000000"),
    ])?);
    let chat = create_chat(&server, "echo").await?;
    let mut claim_lat = Samples::default();
    let mut rtt = Samples::default();
    for i in 0..n {
        let s = server.clone();
        let c = chat.clone();
        let claim = tokio::spawn(async move {
            let r = s
                .post(
                    "/api/v1/dispatch/claim",
                    json!({"workerId": "bench", "waitMs": 5000, "chatId": c}),
                )
                .await;
            (Instant::now(), r)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        post_user(&server, &chat, &format!("m{i}")).await?;
        let (t1, r) = claim.await.map_err(|e| e.to_string())?;
        let (st, batch) = r?;
        if st != 200 {
            return Err(format!("claim: {st} {batch}"));
        }
        claim_lat.push(ms(t1.duration_since(t0)));
        let id = batch["batchId"].as_str().unwrap_or_default().to_string();
        server
            .post(
                &format!("/api/v1/dispatch/{id}/complete"),
                json!({"workerId": "bench"}),
            )
            .await?;
        let t0 = Instant::now();
        server.get("/health").await?;
        rtt.push(ms(t0.elapsed()));
    }

    // Echo worker answering on a channel's chat; chunks observed on the event stream.
    let data = server.start_worker("bench-chunk", "echo", -1).await?;
    let chat = data["chat_id"]
        .as_str()
        .ok_or("/start gave no chat_id")?
        .to_string();
    let resp = server
        .http
        .get(format!("{}/api/v1/events/stream", server.url))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let mut events = eventsource_stream::EventStream::new(resp.bytes_stream());
    let mut first_chunk = Samples::default();
    for i in 0..n {
        let t0 = Instant::now();
        post_user(&server, &chat, &format!("hello {i}")).await?;
        let deadline = t0 + Duration::from_secs(10);
        loop {
            let ev = tokio::time::timeout_at(deadline.into(), events.next())
                .await
                .map_err(|_| "no chunk within 10 s")?
                .ok_or("event stream ended")?
                .map_err(|e| e.to_string())?;
            if ev.event == "message.streaming.chunk" && ev.data.contains(&chat) {
                first_chunk.push(ms(t0.elapsed()));
                break;
            }
        }
        // Let the answer finish before the next message.
        loop {
            let ev = tokio::time::timeout_at(deadline.into(), events.next())
                .await
                .map_err(|_| "answer did not complete")?
                .ok_or("event stream ended")?
                .map_err(|e| e.to_string())?;
            if ev.event == "message.streaming.complete" && ev.data.contains(&chat) {
                break;
            }
        }
    }
    Ok(vec![
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
    ])
}

/// Full round trips (post, claim, streamed answer, complete) across 50 chats.
async fn round_trips(quick: bool) -> Res<Vec<Row>> {
    let secs = if quick { 3 } else { 10 };
    let server = Arc::new(Server::start(&[
        ("DISPATCH_MODE", "immediate"),
        ("WRITE_RATE_LIMIT_MAX", "100000000"),
    ])?);
    let mut chats = Vec::new();
    for _ in 0..50 {
        chats.push(create_chat(&server, "echo").await?);
    }
    let count = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (i, chat) in chats.into_iter().enumerate() {
        let s = server.clone();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let w = format!("w{i}");
            while Instant::now() < end {
                let step = async {
                    post_user(&s, &chat, "ping").await?;
                    let (st, b) = s
                        .post(
                            "/api/v1/dispatch/claim",
                            json!({"workerId": w, "waitMs": 5000, "chatId": chat}),
                        )
                        .await?;
                    if st != 200 {
                        return Err(format!("claim {st}"));
                    }
                    let batch = b["batchId"].as_str().unwrap_or_default().to_string();
                    let (_, m) = s
                        .post(
                            &format!("/api/v1/chats/{chat}/messages"),
                            json!({"role": "agent", "senderId": "echo", "streaming": true}),
                        )
                        .await?;
                    let mid = m["id"].as_str().unwrap_or_default().to_string();
                    s.post(
                        &format!("/api/v1/messages/{mid}/chunks"),
                        json!({"deltaText": "ping"}),
                    )
                    .await?;
                    s.post(&format!("/api/v1/messages/{mid}/complete"), json!({}))
                        .await?;
                    let (st, _) = s
                        .post(
                            &format!("/api/v1/dispatch/{batch}/complete"),
                            json!({"workerId": w}),
                        )
                        .await?;
                    if st != 204 {
                        return Err(format!("complete {st}"));
                    }
                    Ok::<(), String>(())
                };
                match step.await {
                    Ok(()) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("round trip failed: {e}");
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let rate = count.load(Ordering::Relaxed) as f64 / secs as f64;
    Ok(vec![Row::new(
        &format!("full round trips across 50 chats for {secs} s"),
        "per s",
        Samples(vec![rate]),
        "≥ 2,000 per s",
    )])
}

/// `batched_sequential`: batch seal time minus the debounce deadline.
async fn seal_lateness(quick: bool) -> Res<Vec<Row>> {
    let n = if quick { 20 } else { 100 };
    let debounce = 100u64;
    let server = Arc::new(Server::start(&[
        ("DISPATCH_MODE", "batched_sequential"),
        ("DISPATCH_BATCH_DEBOUNCE_MS", "100"),
        ("WRITE_RATE_LIMIT_MAX", "100000000"),
    ])?);
    let mut chats = Vec::new();
    for _ in 0..10 {
        chats.push(create_chat(&server, "echo").await?);
    }
    let late: Arc<std::sync::Mutex<Samples>> = Default::default();
    let per = n / chats.len();
    let mut tasks = Vec::new();
    for (i, chat) in chats.into_iter().enumerate() {
        let s = server.clone();
        let late = late.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                let w = format!("seal{i}");
                let s2 = s.clone();
                let c2 = chat.clone();
                let w2 = w.clone();
                let claim = tokio::spawn(async move {
                    let r = s2
                        .post(
                            "/api/v1/dispatch/claim",
                            json!({"workerId": w2, "waitMs": 5000, "chatId": c2}),
                        )
                        .await;
                    (Instant::now(), r)
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
                post_user(&s, &chat, "x").await?;
                let acked = Instant::now();
                let (t, r) = claim.await.map_err(|e| e.to_string())?;
                let (st, b) = r?;
                if st != 200 {
                    return Err(format!("claim {st}"));
                }
                let due = acked + Duration::from_millis(debounce);
                late.lock()
                    .unwrap()
                    .push(t.saturating_duration_since(due).as_secs_f64() * 1000.0);
                let id = b["batchId"].as_str().unwrap_or_default().to_string();
                s.post(
                    &format!("/api/v1/dispatch/{id}/complete"),
                    json!({"workerId": w}),
                )
                .await?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let samples = late.lock().unwrap().clone();
    Ok(vec![Row::new(
        "batch seal time − debounce deadline (batched_sequential)",
        "ms",
        samples,
        "p99 ≤ 20 ms",
    )])
}

/// `POST /agents/:id/chat`, warm and cold (the agent started on demand).
async fn front_door(quick: bool) -> Res<Vec<Row>> {
    let n = if quick { 10 } else { 50 };
    let mut cold = Samples::default();
    let cold_n = if quick { 3 } else { 10 };
    for _ in 0..cold_n {
        let server = Server::start(&[])?;
        let t0 = Instant::now();
        let (st, b) = server
            .post("/agents/echo/chat", json!({"message": "hello"}))
            .await?;
        if st != 200 {
            return Err(format!("/agents/echo/chat: {st} {b}"));
        }
        cold.push(ms(t0.elapsed()));
    }
    let server = Server::start(&[])?;
    server
        .post("/agents/echo/chat", json!({"message": "warm up"}))
        .await?;
    let mut warm = Samples::default();
    for i in 0..n {
        let t0 = Instant::now();
        let (st, b) = server
            .post(
                "/agents/echo/chat",
                json!({"message": format!("hello {i}")}),
            )
            .await?;
        if st != 200 {
            return Err(format!("/agents/echo/chat: {st} {b}"));
        }
        warm.push(ms(t0.elapsed()));
    }
    Ok(vec![
        Row::new("POST /agents/:id/chat, warm", "ms", warm, "median ≤ 5 ms"),
        Row::new(
            "POST /agents/:id/chat, cold (started on demand)",
            "ms",
            cold,
            "median ≤ 30 ms",
        ),
    ])
}

/// Runs `f` for every item with at most `width` in flight; the first error wins.
async fn run_concurrent<F, Fut>(items: &[String], width: usize, f: F) -> Res<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Res<()>>,
{
    let mut stream =
        futures_util::stream::iter(items.iter().cloned().map(f)).buffer_unordered(width);
    while let Some(r) = stream.next().await {
        r?;
    }
    Ok(())
}
