//! Boots and runs the server: settings, directories, catalog, store, supervisor, front doors,
//! HTTP, signals, and the graceful shutdown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::middleware::Condition;
use actix_web::{web, App, HttpServer};
use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};

use crate::frontdoor::FrontDoor;
use crate::http::AppState;
use crate::settings::{Settings, SettingsError};
use crate::store::Store;
use crate::supervisor::Supervisor;

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("{0}")]
    Settings(#[from] SettingsError),
    #[error("{what} {path} is not usable: {source}")]
    Dir {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("no graphs: neither PROPERTY_JSON ({property_json}) nor GRAPHS_DIR ({graphs_dir}) exists; set one of them to where your graphs are")]
    NoGraphs {
        property_json: String,
        graphs_dir: String,
    },
    #[error("graph catalog: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("supervisor: {0}")]
    Supervisor(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How long in-flight HTTP requests (including SSE streams) get after the workers are gone.
const HTTP_SHUTDOWN_SECS: u64 = 1;

/// A built server: listening, with its store, supervisor and front doors running, not yet
/// serving. Built and run are separate so the port is known (and can be 0) before serving.
pub struct Application {
    port: u16,
    base_url: String,
    server: Server,
    state: AppState,
    /// Keeps the catalog's file watcher alive.
    _watch: crate::catalog::watch::WatchGuard,
}

impl Application {
    /// Checks the settings and directories, loads the catalog, binds the listener, opens the
    /// store, and starts the supervisor and the front doors.
    pub async fn build(settings: Settings) -> Result<Application, ServeError> {
        let settings = Arc::new(settings);
        settings.check_exposure()?;
        ensure_writable_dir("DATA_DIR", &settings.data_dir)?;
        if !settings.log_stdout {
            ensure_writable_dir("LOG_PATH", &settings.log_path)?;
        }

        let (catalog, watch) =
            crate::catalog::watch::start(&settings.property_json, &settings.graphs_dir)?;
        check_graph_sources(&settings, catalog.current().graphs().len())?;

        let addr = SocketAddr::new(settings.host, settings.port);
        let listener =
            TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
        // `HttpServer::backlog` applies only to addresses it binds itself; this listener is
        // bound here (so the port is known before serving): listening again sets its backlog.
        set_backlog(&listener, settings.http_backlog)
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener.local_addr()?;
        let base_url = format!("http://{}", loopback_of(local));

        let store = Store::connect(&settings.database, settings.clone(), catalog.clone()).await?;
        let supervisor = Supervisor::new(settings.clone(), catalog.clone(), base_url.clone())
            .await
            .map_err(|e| ServeError::Supervisor(e.to_string()))?;

        // A worker that is gone hands its leases back at once instead of at lease expiry.
        let gone_store = store.clone();
        supervisor.on_worker_gone(move |worker_id| {
            let (store, id) = (gone_store.clone(), worker_id.to_string());
            tokio::spawn(async move { store.worker_gone(&id).await });
        });
        // So do the workers of a previous agentd (after a crash or `kill -9`): they are all gone.
        for id in supervisor.take_leftover_workers() {
            store.worker_gone(&id).await;
        }

        // Several nodes share a PostgreSQL database: this one joins them.
        let cluster = match &settings.database {
            crate::settings::Database::Postgres(_) => Some(
                crate::cluster::Cluster::join(
                    &settings,
                    store.clone(),
                    supervisor.clone(),
                    base_url.clone(),
                )
                .await?,
            ),
            crate::settings::Database::Sqlite(_) => None,
        };

        let frontdoor = FrontDoor::new(
            store.clone(),
            supervisor.clone(),
            catalog.clone(),
            settings.clone(),
        );
        frontdoor.start();
        let mut state = AppState::new(settings.clone(), catalog, supervisor, store, frontdoor);
        state.cluster = cluster;
        let app_state = state.clone();
        let http_settings = settings.clone();
        let body_timeout = settings.body_timeout;
        let server = HttpServer::new(move || {
            App::new()
                .wrap_fn(move |req, srv| crate::http::slow::body_deadline(req, srv, body_timeout))
                .app_data(web::Data::new(app_state.clone()))
                .app_data(web::PayloadConfig::new(http_settings.max_body_bytes))
                .wrap(Condition::new(
                    !http_settings.cors_origins.is_empty(),
                    cors(&http_settings),
                ))
                .wrap(actix_web::middleware::from_fn(
                    crate::http::method::method_envelope,
                ))
                // Outermost last: the access log sees the honest status before `ten_status`.
                .wrap(actix_web::middleware::from_fn(
                    crate::http::access_log::access_log,
                ))
                // So do the metrics: a request counts under its honest status in either mode.
                .wrap(actix_web::middleware::from_fn(crate::http::metrics::count))
                .wrap(actix_web::middleware::from_fn(
                    crate::http::ten_error::ten_status,
                ))
                .configure(crate::http::configure)
                .default_service(web::to(crate::http::supervisor::not_found))
        })
        // Each connection's socket, so held event streams notice a client that hung up.
        .on_connect(crate::http::sse::on_connect)
        .workers(settings.http_workers)
        // Slow clients: a head trickled in is cut off with a 408, an idle keep-alive connection
        // is closed, and past the connection cap new clients wait in the kernel's backlog.
        .client_request_timeout(settings.client_request_timeout)
        .client_disconnect_timeout(settings.client_disconnect_timeout)
        .keep_alive(keep_alive(settings.keep_alive))
        .max_connections(
            settings
                .http_max_connections
                .div_ceil(settings.http_workers.max(1))
                .max(1),
        )
        .backlog(settings.http_backlog)
        .disable_signals()
        .shutdown_timeout(HTTP_SHUTDOWN_SECS)
        .listen(listener)?
        .run();
        Ok(Application {
            port: local.port(),
            base_url,
            server,
            state,
            _watch: watch,
        })
    }

    /// The port the server listens on (the real one when `SERVER_PORT=0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully: new starts are refused with
    /// 503, every worker is stopped in parallel (a second signal kills them at once), in-flight
    /// requests get a moment, and the WAL is checkpointed.
    pub async fn run_until_stopped(self) -> Result<(), ServeError> {
        let Application {
            base_url,
            server,
            state,
            _watch,
            ..
        } = self;
        let supervisor = state.supervisor.clone();
        let handle = server.handle();
        let mut server_task = tokio::spawn(server);

        // Tests and scripts read this line to learn the port when SERVER_PORT=0.
        println!("agentd listening on {base_url}");
        // The line above says it to a person; this one is for log collectors only.
        tracing::debug!(%base_url, graphs = state.catalog.current().graphs().len(), "agentd listening");

        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            res = &mut server_task => {
                supervisor.kill_all_now();
                return match res {
                    Ok(r) => r.map_err(ServeError::Io),
                    Err(e) => Err(ServeError::Io(std::io::Error::other(e))),
                };
            }
        }

        // The supervisor's flag is the one shutdown flag: it refuses new starts from here on
        // (and `/health` answers 503 draining).
        if let Some(c) = &state.cluster {
            c.begin_leaving();
        }
        let graceful = supervisor.shutdown();
        crate::http::sse::shut_down_streams();
        tokio::select! {
            _ = graceful => tracing::info!("every worker stopped"),
            _ = term.recv() => { tracing::warn!("second signal: killing every worker now"); supervisor.kill_all_now(); }
            _ = int.recv() => { tracing::warn!("second signal: killing every worker now"); supervisor.kill_all_now(); }
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(HTTP_SHUTDOWN_SECS + 1),
            handle.stop(true),
        )
        .await;
        if let Some(c) = &state.cluster {
            c.leave().await;
        }
        state.store.close().await;
        tracing::info!("agentd stopped");
        Ok(())
    }
}

/// `agentd serve`: settings from the environment, then [`Application`] until a signal.
pub async fn serve() -> Result<(), ServeError> {
    let settings = Settings::from_env()?;
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}

/// actix's keep-alive for a duration: zero turns it off.
fn keep_alive(d: Duration) -> actix_web::http::KeepAlive {
    if d.is_zero() {
        actix_web::http::KeepAlive::Disabled
    } else {
        actix_web::http::KeepAlive::Timeout(d)
    }
}

fn set_backlog(listener: &TcpListener, backlog: u32) -> std::io::Result<()> {
    let backlog = nix::sys::socket::Backlog::new(backlog.min(i32::MAX as u32) as i32)
        .map_err(std::io::Error::from)?;
    nix::sys::socket::listen(listener, backlog).map_err(std::io::Error::from)
}

/// The address agentd's own children use to reach it: loopback when bound to every interface.
fn loopback_of(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// Says which graph source is missing (a typo in a path otherwise starts agentd with no
/// graphs and no word why), and refuses to start when both are and no graph exists.
fn check_graph_sources(settings: &Settings, graphs: usize) -> Result<(), ServeError> {
    let prop_missing = !settings.property_json.is_file();
    let dir_missing = !settings.graphs_dir.is_dir();
    if prop_missing && dir_missing && graphs == 0 {
        return Err(ServeError::NoGraphs {
            property_json: settings.property_json.display().to_string(),
            graphs_dir: settings.graphs_dir.display().to_string(),
        });
    }
    if prop_missing {
        tracing::warn!(path = %settings.property_json.display(), "PROPERTY_JSON does not exist: no graphs from a property file");
    }
    if dir_missing {
        tracing::warn!(path = %settings.graphs_dir.display(), "GRAPHS_DIR does not exist: no graphs from a graphs directory");
    }
    Ok(())
}

fn ensure_writable_dir(what: &'static str, dir: &Path) -> Result<(), ServeError> {
    let err = |source| ServeError::Dir {
        what,
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(format!(".agentd-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(err)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn cors(settings: &Settings) -> Cors {
    // Credentials (cookies) are never allowed: agentd authenticates with a header.
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([
            "authorization",
            "content-type",
            "idempotency-key",
            "x-api-key",
            "last-event-id",
            "x-instance-secret",
        ])
        .expose_headers([
            "retry-after",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ])
        .max_age(600);
    if settings.cors_origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin().send_wildcard();
    } else {
        for o in &settings.cors_origins {
            cors = cors.allowed_origin(o);
        }
    }
    cors
}
