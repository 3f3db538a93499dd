//! Reading [`Settings`] from a [`Source`]: each variable, its default and the form it must have.
//! A bad value is a start-up error that names the variable and the form it expects; nothing
//! falls back silently.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    split_command, CgroupMode, Database, DispatchMode, DispatchSettings, Settings, SettingsError,
    SupervisorStatus, WorkerToken,
};

/// Where settings come from; the process environment in production, a map in unit tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: std::hash::BuildHasher> Source for std::collections::HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

struct Reader<'a> {
    src: &'a dyn Source,
}

impl Reader<'_> {
    /// The raw value, with blank treated as unset.
    fn raw(&self, var: &str) -> Option<String> {
        self.src
            .get(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: T,
        expected: &'static str,
        ok: impl Fn(&T) -> bool,
    ) -> Result<T, SettingsError> {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => match v.parse::<T>() {
                Ok(parsed) if ok(&parsed) => Ok(parsed),
                _ => Err(SettingsError {
                    var,
                    value: v,
                    expected,
                }),
            },
        }
    }

    fn u64(&self, var: &'static str, default: u64, min: u64) -> Result<u64, SettingsError> {
        let expected = if min == 0 {
            "a whole number >= 0"
        } else {
            "a whole number >= 1"
        };
        self.parse(var, default, expected, |v| *v >= min)
    }

    fn bool(&self, var: &'static str, default: bool) -> Result<bool, SettingsError> {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(SettingsError {
                    var,
                    value: v,
                    expected: "true or false",
                }),
            },
        }
    }

    fn path(&self, var: &'static str, default: &Path, base: &Path) -> PathBuf {
        let p = self
            .raw(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| default.to_path_buf());
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    }
}

/// The default retention of events and finished dispatch rows: a week, in seconds.
const WEEK: u64 = 7 * 24 * 3600;

/// A retention in seconds; 0 keeps rows for ever.
fn retention(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

impl Settings {
    /// Reads settings from the process environment; relative paths are resolved against the
    /// current directory once, here, so nothing later depends on it.
    pub fn from_env() -> Result<Settings, SettingsError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Settings::from_source(&ProcessEnv, &cwd)
    }

    /// Reads settings from `src`, resolving relative paths against `base`.
    pub fn from_source(src: &dyn Source, base: &Path) -> Result<Settings, SettingsError> {
        let r = Reader { src };

        let host = r.parse(
            "SERVER_HOST",
            IpAddr::from([127, 0, 0, 1]),
            "an IP address such as 127.0.0.1 or ::1",
            |_| true,
        )?;
        let port = r.parse("SERVER_PORT", 8080u16, "a port number 0-65535", |_| true)?;
        let api_key = r.raw("AGENTD_API_KEY");
        let cors_origins = match r.raw("CORS_ORIGINS") {
            None => Vec::new(),
            Some(v) => {
                let mut origins = Vec::new();
                for o in v.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                    let valid = o == "*"
                        || ((o.starts_with("http://") || o.starts_with("https://"))
                            && !o.ends_with('/')
                            && !o.contains(char::is_whitespace));
                    if !valid {
                        return Err(SettingsError {
                            var: "CORS_ORIGINS",
                            value: v.clone(),
                            expected: "a comma-separated list of origins like https://app.example.com (scheme and host, no path), or *",
                        });
                    }
                    origins.push(o.to_string());
                }
                origins
            }
        };
        let max_body_bytes = r.parse(
            "MAX_BODY_BYTES",
            1_048_576usize,
            "a number of bytes >= 1024",
            |v| *v >= 1024,
        )?;
        let http_workers = r.parse(
            "HTTP_WORKERS",
            std::thread::available_parallelism().map_or(2, |n| n.get()),
            "a whole number >= 1",
            |v| *v >= 1,
        )?;

        let ms = |var: &'static str, default: u64, min: u64| {
            r.u64(var, default, min).map(Duration::from_millis)
        };
        let client_request_timeout = ms("CLIENT_REQUEST_TIMEOUT_MS", 5000, 100)?;
        let client_disconnect_timeout = ms("CLIENT_DISCONNECT_TIMEOUT_MS", 1000, 100)?;
        let keep_alive = Duration::from_secs(r.u64("KEEP_ALIVE_SECONDS", 5, 0)?);
        let body_timeout = ms("BODY_TIMEOUT_MS", 30_000, 100)?;
        let http_max_connections = r.parse(
            "HTTP_MAX_CONNECTIONS",
            4096usize,
            "a whole number >= 2",
            |v| *v >= 2,
        )?;
        let http_backlog = r.parse(
            "HTTP_BACKLOG",
            1024u32,
            "a whole number from 1 to 65535",
            |v| (1..=65535).contains(v),
        )?;

        let supervisor_status = match r
            .raw("SUPERVISOR_STATUS")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("honest") => SupervisorStatus::Honest,
            Some("ten") => SupervisorStatus::Ten,
            Some(other) => {
                return Err(SettingsError {
                    var: "SUPERVISOR_STATUS",
                    value: other.to_string(),
                    expected: "honest or ten",
                })
            }
        };
        let agora = match r.raw("AGORA_APP_ID") {
            None => None,
            Some(app_id) => {
                let cert = r.raw("AGORA_APP_CERTIFICATE");
                match crate::agora::Credentials::new(&app_id, cert.as_deref()) {
                    Ok(c) => Some(c),
                    // The certificate's value is never echoed: it signs every token.
                    Err(crate::agora::TokenError::Certificate) => {
                        return Err(SettingsError {
                            var: "AGORA_APP_CERTIFICATE",
                            value: "<redacted>".into(),
                            expected: "32 hexadecimal characters (the project's primary certificate), or empty",
                        })
                    }
                    Err(_) => {
                        return Err(SettingsError {
                            var: "AGORA_APP_ID",
                            value: app_id,
                            expected: "32 hexadecimal characters (the project's App ID)",
                        })
                    }
                }
            }
        };
        let data_dir = r.path("DATA_DIR", Path::new("data"), base);
        let log_default = data_dir.join("logs");
        let database = match r.raw("DATABASE_URL") {
            None => Database::Sqlite(data_dir.join("agentd.db")),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Database::Postgres(url)
            }
            Some(url) => {
                return Err(SettingsError {
                    var: "DATABASE_URL",
                    // Whatever it is, it may hold a password.
                    value: url.split_once("://").map_or("?", |(s, _)| s).to_string() + "://...",
                    expected:
                        "a postgres://user@host:port/database URL, or unset for SQLite in DATA_DIR",
                });
            }
        };
        let settings = Settings {
            host,
            port,
            api_key,
            cors_origins,
            max_body_bytes,
            http_workers,
            metrics_public_loopback: r.bool("METRICS_PUBLIC_LOOPBACK", false)?,
            client_request_timeout,
            client_disconnect_timeout,
            keep_alive,
            body_timeout,
            http_max_connections,
            http_backlog,
            supervisor_status,
            agora,
            property_json: r.path("PROPERTY_JSON", Path::new("property.json"), base),
            graphs_dir: r.path("GRAPHS_DIR", Path::new("graphs"), base),
            log_path: r.path("LOG_PATH", &log_default, base),
            data_dir,
            database,
            log_stdout: r.bool("LOG_STDOUT", false)?,
            log_max_bytes: r.u64("LOG_MAX_BYTES", 10 * 1024 * 1024, 1024)?,
            log_max_files: r.parse("LOG_MAX_FILES", 3u32, "a whole number >= 1", |v| *v >= 1)?,
            keep_property_files: r.bool("KEEP_PROPERTY_FILES", false)?,

            workers_max: r.parse("WORKERS_MAX", 100usize, "a whole number >= 1", |v| *v >= 1)?,
            worker_quit_timeout_secs: match r.raw("WORKER_QUIT_TIMEOUT_SECONDS") {
                Some(_) => r.u64("WORKER_QUIT_TIMEOUT_SECONDS", 60, 1)?,
                // TEN's original, misspelt name.
                None => r.u64("WORKER_QUIT_TIMEOUT_SECONDES", 60, 1)?,
            },
            worker_stop_grace: Duration::from_millis(r.u64("WORKER_STOP_GRACE_MS", 2000, 0)?),
            worker_start_timeout: Duration::from_millis(r.u64(
                "WORKER_START_TIMEOUT_MS",
                10_000,
                1,
            )?),
            worker_settle: Duration::from_millis(r.u64("WORKER_SETTLE_MS", 300, 0)?),
            worker_command: match r.raw("WORKER_COMMAND") {
                None => None,
                Some(v) => Some(split_command(&v).ok_or(SettingsError {
                    var: "WORKER_COMMAND",
                    value: v.clone(),
                    expected: "a program and its arguments separated by spaces (double quotes group words)",
                })?),
            },
            worker_cgroups: match r.raw("WORKER_CGROUPS").map(|v| v.to_ascii_lowercase()).as_deref() {
                None | Some("auto") => CgroupMode::Auto,
                Some("off") => CgroupMode::Off,
                Some(other) => {
                    return Err(SettingsError {
                        var: "WORKER_CGROUPS",
                        value: other.to_string(),
                        expected: "auto or off",
                    })
                }
            },
            worker_sample_interval: Duration::from_millis(r.parse(
                "WORKER_SAMPLE_INTERVAL_MS",
                2000u64,
                "a number of milliseconds >= 100",
                |v| *v >= 100,
            )?),

            dispatch: DispatchSettings {
                mode: match r.raw("DISPATCH_MODE").as_deref() {
                    None | Some("batched_sequential") => DispatchMode::BatchedSequential,
                    Some("immediate") => DispatchMode::Immediate,
                    Some("sequential") => DispatchMode::Sequential,
                    Some(other) => {
                        return Err(SettingsError {
                            var: "DISPATCH_MODE",
                            value: other.to_string(),
                            expected: "immediate, sequential or batched_sequential",
                        })
                    }
                },
                batch_debounce_ms: r.u64("DISPATCH_BATCH_DEBOUNCE_MS", 600, 0)?,
                typing_grace_ms: r.u64("DISPATCH_TYPING_GRACE_MS", 2000, 0)?,
                max_batch_wait_ms: r.u64("DISPATCH_MAX_BATCH_WAIT_MS", 30_000, 0)?,
                lease_ms: r.u64("DISPATCH_LEASE_MS", 30_000, 1000)?,
                claim_wait_ms: r.u64("DISPATCH_CLAIM_WAIT_MS", 10_000, 0)?,
                retry_base_ms: r.u64("DISPATCH_RETRY_BASE_MS", 500, 0)?,
                retry_max_ms: r.u64("DISPATCH_RETRY_MAX_MS", 30_000, 0)?,
                max_attempts: r.parse("DISPATCH_MAX_ATTEMPTS", 8u32, "a whole number >= 1", |v| {
                    *v >= 1
                })?,
                claim_many_limit: r.parse(
                    "DISPATCH_CLAIM_MANY_LIMIT",
                    10u32,
                    "a whole number from 1 to 50",
                    |v| (1..=50).contains(v),
                )?,
                heartbeat_interval_ms: r.u64("DISPATCH_HEARTBEAT_INTERVAL_MS", 5000, 1)?,
            },
            stream_timeout_secs: r.u64("STREAM_TIMEOUT_SECONDS", 60, 1)?,
            write_rate_limit_max: r.parse(
                "WRITE_RATE_LIMIT_MAX",
                100u32,
                "a whole number >= 1",
                |v| *v >= 1,
            )?,
            write_rate_limit_window_ms: r.u64("WRITE_RATE_LIMIT_WINDOW_MS", 1000, 1)?,
            reads_require_key: r.bool("READS_REQUIRE_KEY", true)?,
            trust_proxy_headers: r.bool("TRUST_PROXY_HEADERS", false)?,
            idempotency_ttl_secs: r.u64("IDEMPOTENCY_TTL_SECONDS", 86_400, 1)?,
            event_bus_capacity: r.parse(
                "EVENT_BUS_CAPACITY",
                1024usize,
                "a whole number from 1 to 1000000",
                |v| (1..=1_000_000).contains(v),
            )?,
            events_retention: retention(r.u64("EVENTS_RETENTION_SECONDS", WEEK, 0)?),
            dispatch_retention: retention(r.u64("DISPATCH_RETENTION_SECONDS", WEEK, 0)?),
            retention_sweep: Duration::from_millis(r.u64("RETENTION_SWEEP_MS", 60_000, 100)?),

            agent_rate_limit_per_minute: r.parse(
                "AGENT_RATE_LIMIT_PER_MINUTE",
                60u32,
                "a whole number >= 1",
                |v| *v >= 1,
            )?,
            agent_max_concurrent: r.parse(
                "AGENT_MAX_CONCURRENT",
                10u32,
                "a whole number >= 1",
                |v| *v >= 1,
            )?,
            chat_reply_timeout: Duration::from_millis(r.u64("CHAT_REPLY_TIMEOUT_MS", 60_000, 1)?),
            sse_ping_interval: Duration::from_millis(r.u64("SSE_PING_INTERVAL_MS", 15_000, 10)?),

            sse_max_per_client: r.parse(
                "SSE_MAX_PER_CLIENT",
                32usize,
                "a whole number >= 1",
                |v| *v >= 1,
            )?,
            sse_max_total: r.parse("SSE_MAX_TOTAL", 1000usize, "a whole number >= 1", |v| {
                *v >= 1
            })?,
            node_id: match r.raw("NODE_ID") {
                None => format!("node-{}", crate::ids::worker_id()),
                Some(id) if id.len() <= 64 && !id.chars().any(char::is_control) => id,
                Some(id) => {
                    return Err(SettingsError {
                        var: "NODE_ID",
                        value: id,
                        expected: "at most 64 bytes without control characters",
                    })
                }
            },
            node_address: match r.raw("NODE_ADDRESS") {
                None => None,
                Some(a) if a.starts_with("http://") || a.starts_with("https://") => {
                    Some(a.trim_end_matches('/').to_string())
                }
                Some(a) => {
                    return Err(SettingsError {
                        var: "NODE_ADDRESS",
                        value: a,
                        expected: "an http:// or https:// URL other nodes can reach this node at",
                    })
                }
            },
            node_lease: Duration::from_millis(r.parse(
                "NODE_LEASE_MS",
                10_000u64,
                "a number of milliseconds >= 300",
                |v| *v >= 300,
            )?),
            worker_token: WorkerToken::generate(),
        };

        if settings.cors_origins.iter().any(|o| o == "*") && settings.cors_origins.len() > 1 {
            return Err(SettingsError {
                var: "CORS_ORIGINS",
                value: settings.cors_origins.join(","),
                expected: "either * alone or a list of origins, not both",
            });
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_source(&map, Path::new("/base"))
    }

    #[test]
    fn defaults_match_ten() {
        let s = with(&[]).unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.workers_max, 100);
        assert_eq!(s.worker_quit_timeout_secs, 60);
        assert_eq!(s.property_json, Path::new("/base/property.json"));
        assert_eq!(s.log_path, Path::new("/base/data/logs"));
        assert_eq!(s.dispatch.mode, DispatchMode::BatchedSequential);
        assert_eq!(
            s.database,
            Database::Sqlite(PathBuf::from("/base/data/agentd.db"))
        );
    }

    #[test]
    fn database_url_picks_postgres_and_hides_its_password() {
        let url = "postgres://agentd:s3cret@db.internal:5432/agentd";
        let s = with(&[("DATABASE_URL", url)]).unwrap();
        assert_eq!(s.database, Database::Postgres(url.into()));
        assert!(!format!("{s:?}").contains("s3cret"));
        let e = with(&[("DATABASE_URL", "mysql://u:s3cret@h/db")]).unwrap_err();
        assert_eq!(e.var, "DATABASE_URL");
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn misspelt_timeout_is_a_fallback() {
        let s = with(&[("WORKER_QUIT_TIMEOUT_SECONDES", "7")]).unwrap();
        assert_eq!(s.worker_quit_timeout_secs, 7);
        let s = with(&[
            ("WORKER_QUIT_TIMEOUT_SECONDES", "7"),
            ("WORKER_QUIT_TIMEOUT_SECONDS", "9"),
        ])
        .unwrap();
        assert_eq!(s.worker_quit_timeout_secs, 9);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = with(&[("WORKERS_MAX", "many")]).unwrap_err();
        assert_eq!(e.var, "WORKERS_MAX");
        assert!(e.to_string().contains("WORKERS_MAX"));
        assert_eq!(
            with(&[("SERVER_PORT", "70000")]).unwrap_err().var,
            "SERVER_PORT"
        );
        assert_eq!(
            with(&[("LOG_STDOUT", "maybe")]).unwrap_err().var,
            "LOG_STDOUT"
        );
        assert_eq!(
            with(&[("DISPATCH_MODE", "fast")]).unwrap_err().var,
            "DISPATCH_MODE"
        );
        assert_eq!(
            with(&[("CORS_ORIGINS", "example.com")]).unwrap_err().var,
            "CORS_ORIGINS"
        );
        assert_eq!(
            with(&[("WORKER_CGROUPS", "maybe")]).unwrap_err().var,
            "WORKER_CGROUPS"
        );
        assert_eq!(
            with(&[("WORKER_SAMPLE_INTERVAL_MS", "10")])
                .unwrap_err()
                .var,
            "WORKER_SAMPLE_INTERVAL_MS"
        );
        assert_eq!(
            with(&[("SUPERVISOR_STATUS", "loud")]).unwrap_err().var,
            "SUPERVISOR_STATUS"
        );
        assert_eq!(
            with(&[("AGORA_APP_ID", "nothex")]).unwrap_err().var,
            "AGORA_APP_ID"
        );
        let e = with(&[
            ("AGORA_APP_ID", "0123456789abcdef0123456789abcdef"),
            ("AGORA_APP_CERTIFICATE", "secret-but-wrong"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "AGORA_APP_CERTIFICATE");
        assert!(!e.to_string().contains("secret-but-wrong"));
        assert_eq!(
            with(&[("WORKER_COMMAND", "\"unterminated")])
                .unwrap_err()
                .var,
            "WORKER_COMMAND"
        );
    }

    #[test]
    fn limits_have_bounded_defaults_and_refuse_nonsense() {
        let s = with(&[]).unwrap();
        let week = Some(Duration::from_secs(7 * 24 * 3600));
        assert_eq!(s.events_retention, week);
        assert_eq!(s.dispatch_retention, week);
        assert_eq!(s.client_request_timeout, Duration::from_secs(5));
        assert_eq!((s.sse_max_per_client, s.sse_max_total), (32, 1000));
        assert_eq!(s.event_bus_capacity, 1024);
        let s = with(&[
            ("EVENTS_RETENTION_SECONDS", "0"),
            ("KEEP_ALIVE_SECONDS", "0"),
        ])
        .unwrap();
        assert_eq!(s.events_retention, None);
        assert!(s.keep_alive.is_zero());
        for var in [
            "SSE_MAX_PER_CLIENT",
            "SSE_MAX_TOTAL",
            "EVENT_BUS_CAPACITY",
            "HTTP_BACKLOG",
            "HTTP_MAX_CONNECTIONS",
            "CLIENT_REQUEST_TIMEOUT_MS",
            "BODY_TIMEOUT_MS",
            "RETENTION_SWEEP_MS",
        ] {
            assert_eq!(with(&[(var, "0")]).unwrap_err().var, var);
        }
    }

    #[test]
    fn non_loopback_needs_a_key() {
        let s = with(&[("SERVER_HOST", "0.0.0.0")]).unwrap();
        assert!(s.check_exposure().is_err());
        let s = with(&[("SERVER_HOST", "0.0.0.0"), ("AGENTD_API_KEY", "k")]).unwrap();
        assert!(s.check_exposure().is_ok());
    }
}
