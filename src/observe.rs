//! agentd's metrics, in one place: what the services count as it happens (starts, stops,
//! crashes, leases, commits, HTTP requests...) and what `GET /metrics` reads at scrape time
//! (workers, their memory and CPU, the dispatch queue), written in the Prometheus/OpenMetrics
//! text format by `prometheus-client`.
//!
//! The services call the small functions below; none of them sees the registry, and this module
//! knows nothing of the supervisor, the store or HTTP (the scrape handler hands it a
//! [`Snapshot`] of plain values). The counters live in one process-wide registry, as metrics
//! do: they describe the process, and every service reaches them without being handed a handle.
//!
//! Label values are bounded: graphs come from the catalog, routes are matched patterns (never a
//! raw path), channels are bounded by `WORKERS_MAX`.

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GraphLabel {
    graph: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StartLabels {
    graph: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StopLabels {
    graph: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    family: &'static str,
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpRouteLabels {
    family: &'static str,
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    graph: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    channel: String,
    graph: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    kind: &'static str,
    state: &'static str,
}

type Timed = Family<GraphLabel, Histogram, fn() -> Histogram>;
type TimedHttp = Family<HttpRouteLabels, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Seconds from 1 ms to about 33 s: starts, stops and HTTP answers.
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Seconds from 50 µs to about 1.6 s: SQLite commits.
fn commit_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Everything counted as it happens.
struct Metrics {
    starts: Family<StartLabels, Counter>,
    start_seconds: Timed,
    stops: Family<StopLabels, Counter>,
    stop_seconds: Timed,
    crashes: Family<GraphLabel, Counter>,
    restarts: Family<GraphLabel, Counter>,
    reaped: Counter,
    claims_waiting: Gauge,
    lease_expiries: Counter,
    retries: Counter,
    terminal_failures: Counter,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: TimedHttp,
    writer_queue: Gauge,
    commit_seconds: Histogram,
    sse_clients: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            starts: Family::default(),
            start_seconds: Family::new_with_constructor(seconds_buckets as fn() -> Histogram),
            stops: Family::default(),
            stop_seconds: Family::new_with_constructor(seconds_buckets as fn() -> Histogram),
            crashes: Family::default(),
            restarts: Family::default(),
            reaped: Counter::default(),
            claims_waiting: Gauge::default(),
            lease_expiries: Counter::default(),
            retries: Counter::default(),
            terminal_failures: Counter::default(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(seconds_buckets as fn() -> Histogram),
            writer_queue: Gauge::default(),
            commit_seconds: commit_buckets(),
            sse_clients: Gauge::default(),
        }
    }

    /// Registers every family (each a cheap handle on the same values) for one scrape.
    fn register(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "agentd_worker_starts",
            "Worker starts (POST /start and the front doors' starts on demand), by graph and outcome (ok, failed)",
            m.starts.clone(),
        );
        r.register_with_unit(
            "agentd_worker_start",
            "Time from a start's launch to the worker being ready (or the start failing), by graph",
            Unit::Seconds,
            m.start_seconds.clone(),
        );
        r.register(
            "agentd_worker_stops",
            "Workers stopped for good by agentd, by graph and reason (requested: /stop or shutdown; idle: inactivity timeout)",
            m.stops.clone(),
        );
        r.register_with_unit(
            "agentd_worker_stop",
            "Time to stop a worker and reap its processes (SIGTERM, grace, SIGKILL), by graph",
            Unit::Seconds,
            m.stop_seconds.clone(),
        );
        r.register(
            "agentd_worker_crashes",
            "Worker processes that failed (exited unsuccessfully, missed the watchdog, went over runtime.memory_max), by graph",
            m.crashes.clone(),
        );
        r.register(
            "agentd_worker_restarts",
            "Worker processes restarted after a failure, by graph",
            m.restarts.clone(),
        );
        r.register(
            "agentd_orphans_reaped",
            "Exited descendants of workers that agentd reaped (as their subreaper, or as members of a stopped worker's process group)",
            m.reaped.clone(),
        );
        r.register(
            "agentd_dispatch_claims_waiting",
            "Dispatch claims (POST /api/v1/dispatch/claim and claim-many) waiting for work now",
            m.claims_waiting.clone(),
        );
        r.register(
            "agentd_dispatch_lease_expiries",
            "Dispatch leases that expired without a heartbeat or an answer",
            m.lease_expiries.clone(),
        );
        r.register(
            "agentd_dispatch_retries",
            "Dispatch batches put back to wait for a retry after a retryable failure",
            m.retries.clone(),
        );
        r.register(
            "agentd_dispatch_terminal_failures",
            "Dispatch batches failed for good (attempts used up, or a failure that was not retryable)",
            m.terminal_failures.clone(),
        );
        r.register(
            "agentd_http_requests",
            "HTTP requests answered, by API family, method, route pattern and status",
            m.http_requests.clone(),
        );
        r.register_with_unit(
            "agentd_http_request",
            "Time to answer an HTTP request (to the response head, for event streams), by API family, method and route pattern",
            Unit::Seconds,
            m.http_seconds.clone(),
        );
        r.register(
            "agentd_sqlite_writer_queue",
            "Writes queued for the SQLite writer thread, not yet taken into a transaction",
            m.writer_queue.clone(),
        );
        r.register_with_unit(
            "agentd_sqlite_commit",
            "Time the SQLite writer takes for one group of writes, from BEGIN to COMMIT and its callers answered",
            Unit::Seconds,
            m.commit_seconds.clone(),
        );
        r.register(
            "agentd_sse_clients",
            "Event-stream (SSE) responses open now, over every API family",
            m.sse_clients.clone(),
        );
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// A worker start ended: ready (`ok`) or not, after `took`.
pub fn worker_started(graph: &str, ok: bool, took: Duration) {
    let graph = graph.to_string();
    let outcome = if ok { "ok" } else { "failed" };
    METRICS
        .starts
        .get_or_create(&StartLabels {
            graph: graph.clone(),
            outcome,
        })
        .inc();
    METRICS
        .start_seconds
        .get_or_create(&GraphLabel { graph })
        .observe(took.as_secs_f64());
}

/// A worker was stopped for good: at a request (`idle` false) or for inactivity.
pub fn worker_stopped(graph: &str, idle: bool, took: Duration) {
    let graph = graph.to_string();
    let reason = if idle { "idle" } else { "requested" };
    METRICS
        .stops
        .get_or_create(&StopLabels {
            graph: graph.clone(),
            reason,
        })
        .inc();
    METRICS
        .stop_seconds
        .get_or_create(&GraphLabel { graph })
        .observe(took.as_secs_f64());
}

/// A worker process failed.
pub fn worker_crashed(graph: &str) {
    METRICS
        .crashes
        .get_or_create(&GraphLabel {
            graph: graph.to_string(),
        })
        .inc();
}

/// A failed worker process is being restarted.
pub fn worker_restarted(graph: &str) {
    METRICS
        .restarts
        .get_or_create(&GraphLabel {
            graph: graph.to_string(),
        })
        .inc();
}

/// An exited descendant of a worker (not its leader) was reaped.
pub fn orphan_reaped() {
    METRICS.reaped.inc();
}

/// Counts a claim as waiting until the returned guard is dropped.
pub fn claim_waiting() -> GaugeGuard {
    GaugeGuard::new(&METRICS.claims_waiting)
}

/// A dispatch lease expired.
pub fn lease_expired() {
    METRICS.lease_expiries.inc();
}

/// A dispatch batch will be retried.
pub fn dispatch_retried() {
    METRICS.retries.inc();
}

/// A dispatch batch failed for good.
pub fn dispatch_failed_for_good() {
    METRICS.terminal_failures.inc();
}

/// An HTTP request was answered. `route` is the matched pattern (`None`: no route matched).
pub fn http_answered(method: &str, route: Option<&str>, status: u16, took: Duration) {
    let family = family_of(route);
    let route = route.unwrap_or("unmatched").to_string();
    let method = method.to_string();
    METRICS
        .http_requests
        .get_or_create(&HttpLabels {
            family,
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    METRICS
        .http_seconds
        .get_or_create(&HttpRouteLabels {
            family,
            method,
            route,
        })
        .observe(took.as_secs_f64());
}

/// Which API family a route pattern belongs to.
pub fn family_of(route: Option<&str>) -> &'static str {
    let Some(route) = route else {
        return "none";
    };
    let mut parts = route.trim_start_matches('/').split('/');
    let first = parts.next().unwrap_or("");
    match first {
        "" | "health" | "start" | "stop" | "ping" | "list" | "graphs" | "token" => "supervisor",
        // The chat API answers under `/api` too.
        "api" if matches!(parts.next(), Some("agents" | "teams")) => "chat",
        "api" => "api",
        "agents" | "teams" => "chat",
        "v1" => "agent_messages",
        "conversations" | "messages" | "stream" | "events" => "conversations",
        "ops" => "ops",
        "console" => "console",
        "metrics" | "openapi.json" | "docs" => "meta",
        _ => "other",
    }
}

/// A write was queued for the SQLite writer.
pub fn write_queued() {
    METRICS.writer_queue.inc();
}

/// The SQLite writer took `n` queued writes into a transaction.
pub fn writes_taken(n: usize) {
    METRICS.writer_queue.dec_by(n as i64);
}

/// The SQLite writer committed (or rolled back) a group of writes in `took`.
pub fn group_committed(took: Duration) {
    METRICS.commit_seconds.observe(took.as_secs_f64());
}

/// Counts an SSE client as connected until the returned guard is dropped.
pub fn sse_client() -> GaugeGuard {
    GaugeGuard::new(&METRICS.sse_clients)
}

/// Holds a gauge one higher while it lives.
pub struct GaugeGuard(&'static Gauge);

impl GaugeGuard {
    fn new(g: &'static Gauge) -> GaugeGuard {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One worker as the scrape sees it.
#[derive(Debug, Clone)]
pub struct WorkerSample {
    pub channel: String,
    pub graph: String,
    /// `starting`, `running`, `stopping` or `restarting`.
    pub state: &'static str,
    /// Resident memory in bytes, as last sampled (`None` before the first sample).
    pub memory_bytes: Option<u64>,
    /// CPU seconds, as last sampled.
    pub cpu_seconds: Option<f64>,
}

/// How many items wait in one state of the dispatch queue, and the oldest's age.
#[derive(Debug, Clone, Copy)]
pub struct QueueSample {
    /// `inputs` or `batches`.
    pub kind: &'static str,
    /// `pending`, `delayed` or `leased`.
    pub state: &'static str,
    pub count: u64,
    /// Seconds since the oldest was created; `None` when there is none (or not known).
    pub oldest_age_secs: Option<f64>,
}

/// What the scrape reads from the services at that moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub workers: Vec<WorkerSample>,
    /// Empty when the queue could not be read (the scrape still answers).
    pub queue: Vec<QueueSample>,
}

/// The scrape's text: the counters, then the snapshot's gauges, then `# EOF`.
pub fn render(snap: &Snapshot) -> String {
    let mut counted = Registry::default();
    METRICS.register(&mut counted);
    let live = live_registry(snap);
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail; the encoder returns fmt::Result only for other writers.
    let _ = encode_registry(&mut out, &counted);
    let _ = encode_registry(&mut out, &live);
    let _ = encode_eof(&mut out);
    out
}

/// The scrape-time families, made afresh: a worker that is gone leaves no stale series.
fn live_registry(snap: &Snapshot) -> Registry {
    let mut r = Registry::default();
    let workers = Family::<StateLabels, Gauge>::default();
    let memory = Family::<WorkerLabels, Gauge>::default();
    let cpu = Family::<WorkerLabels, Counter<f64, AtomicU64>>::default();
    for w in &snap.workers {
        workers
            .get_or_create(&StateLabels {
                graph: w.graph.clone(),
                state: w.state,
            })
            .inc();
        let labels = WorkerLabels {
            channel: w.channel.clone(),
            graph: w.graph.clone(),
        };
        if let Some(b) = w.memory_bytes {
            memory
                .get_or_create(&labels)
                .set(i64::try_from(b).unwrap_or(i64::MAX));
        }
        if let Some(s) = w.cpu_seconds {
            cpu.get_or_create(&labels).inc_by(s.max(0.0));
        }
    }
    let items = Family::<QueueLabels, Gauge>::default();
    let age = Family::<QueueLabels, FloatGauge>::default();
    for q in &snap.queue {
        let labels = QueueLabels {
            kind: q.kind,
            state: q.state,
        };
        items
            .get_or_create(&labels)
            .set(i64::try_from(q.count).unwrap_or(i64::MAX));
        age.get_or_create(&labels)
            .set(q.oldest_age_secs.unwrap_or(0.0));
    }
    r.register(
        "agentd_workers",
        "Workers now, by graph and state (starting, running, stopping, restarting)",
        workers,
    );
    r.register_with_unit(
        "agentd_worker_memory",
        "Resident memory of a worker and everything it started, as last sampled, by channel and graph",
        Unit::Bytes,
        memory,
    );
    r.register_with_unit(
        "agentd_worker_cpu",
        "CPU time of a worker's current process and everything it started, as last sampled, by channel and graph",
        Unit::Seconds,
        cpu,
    );
    r.register(
        "agentd_dispatch_queue_items",
        "Dispatch queue items now, by kind (inputs, batches) and state (pending, delayed, leased); delayed batches are also counted as pending",
        items,
    );
    r.register_with_unit(
        "agentd_dispatch_queue_oldest_age",
        "Age of the oldest item of each kind and state of the dispatch queue (0 when there is none)",
        Unit::Seconds,
        age,
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_come_from_the_route_pattern() {
        assert_eq!(family_of(Some("/start")), "supervisor");
        assert_eq!(family_of(Some("/")), "supervisor");
        assert_eq!(family_of(Some("/api/v1/chats/{id}")), "api");
        assert_eq!(
            family_of(Some("/v1/agents/{agent_id}/messages")),
            "agent_messages"
        );
        assert_eq!(family_of(Some("/teams/{id}/chat")), "chat");
        assert_eq!(family_of(Some("/api/agents/{id}/chat")), "chat");
        assert_eq!(family_of(Some("/token/generate")), "supervisor");
        assert_eq!(family_of(Some("/stream/{id}")), "conversations");
        assert_eq!(family_of(Some("/metrics")), "meta");
        assert_eq!(family_of(None), "none");
    }

    #[test]
    fn the_text_ends_with_eof_and_has_the_snapshot() {
        let snap = Snapshot {
            workers: vec![WorkerSample {
                channel: "c".into(),
                graph: "echo".into(),
                state: "running",
                memory_bytes: Some(4096),
                cpu_seconds: Some(0.25),
            }],
            queue: vec![QueueSample {
                kind: "batches",
                state: "pending",
                count: 2,
                oldest_age_secs: Some(1.5),
            }],
        };
        let text = render(&snap);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("agentd_workers{graph=\"echo\",state=\"running\"} 1"));
        assert!(text.contains("agentd_worker_memory_bytes{channel=\"c\",graph=\"echo\"} 4096"));
        assert!(text.contains("agentd_dispatch_queue_items{kind=\"batches\",state=\"pending\"} 2"));
    }
}
