//! [`Db`] on a PostgreSQL connection (the sync `postgres` client, no TLS).
//!
//! Statements arrive with SQLite's numbered parameters (`?1`) and are translated to `$1` once,
//! prepared once per connection and cached. Parameters are converted to whatever type
//! PostgreSQL inferred for them (an integer bound where text is expected is sent as text), and
//! result columns come back as the four [`Value`] kinds, so the domain code never sees the
//! engine's types. A connection that broke is opened again on its next use.

use std::cell::{Cell as Flag, RefCell};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::str::FromStr;
use std::time::Duration;

use bytes::BytesMut;
use postgres::config::SslMode;
use postgres::error::SqlState;
use postgres::types::{FromSql, IsNull, ToSql, Type};
use postgres::{Client, Config, NoTls, Statement};

use super::{Db, DbError, DbErrorKind, DbResult, Dialect, Row, Value};

/// Prepared statements kept per connection; past this the cache starts over (statements built
/// from filters vary, the rest are a few dozen constants).
const STATEMENT_CACHE_MAX: usize = 512;
/// How long opening a connection may take, unless the URL says `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn StdError + Sync + Send>;

/// A parsed `DATABASE_URL`, ready to open connections with.
#[derive(Clone)]
pub struct PgTarget {
    config: Config,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No password in logs.
        f.debug_struct("PgTarget")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .finish()
    }
}

impl PgTarget {
    /// Parses a `postgres://user:password@host:port/db?options=...` URL. Without a user, the
    /// one libpq would take (`PGUSER`, else the account agentd runs as). TLS is not supported:
    /// `sslmode=require` is refused here rather than failing at every connect.
    pub fn parse(url: &str) -> Result<PgTarget, String> {
        let mut config = Config::from_str(url).map_err(|e| e.to_string())?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err("sslmode=require: TLS connections are not supported yet".into());
        }
        config.ssl_mode(SslMode::Disable);
        if config.get_user().is_none() {
            config.user(&default_user());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("agentd");
        }
        Ok(PgTarget { config })
    }

    /// Opens a connection.
    pub fn connect(&self) -> DbResult<PgConn> {
        let client = self.config.connect(NoTls)?;
        Ok(PgConn {
            target: self.clone(),
            client: RefCell::new(Some(client)),
            statements: RefCell::new(HashMap::new()),
            in_tx: Flag::new(false),
        })
    }

    /// Opens a raw client (for `LISTEN`, which needs the client's notification API).
    pub fn client(&self) -> DbResult<Client> {
        Ok(self.config.connect(NoTls)?)
    }
}

/// libpq's default user: `PGUSER`, else the name of the account agentd runs as.
fn default_user() -> String {
    std::env::var("PGUSER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "postgres".into())
}

/// One PostgreSQL connection, reopened on its next use after it broke.
///
/// Outside a transaction, a statement that finds the connection broken (PostgreSQL restarted,
/// an idle connection cut) runs once more on a new one: a read, or a `BEGIN`, loses nothing.
/// Inside one, it is not: the transaction is gone, and every statement fails until the caller
/// ends it (`ROLLBACK`), so nothing of it can run on a new connection outside a transaction.
pub struct PgConn {
    target: PgTarget,
    client: RefCell<Option<Client>>,
    statements: RefCell<HashMap<String, Statement>>,
    /// Between a `BEGIN` and its `COMMIT` or `ROLLBACK`.
    in_tx: Flag<bool>,
}

impl PgConn {
    /// Runs `f` on the client, reopening it first when it is gone; a connection error drops it.
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>) -> DbResult<T> {
        let mut slot = self.client.borrow_mut();
        if slot.as_ref().map_or(true, Client::is_closed) {
            if self.in_tx.get() {
                *slot = None;
                return Err(DbError {
                    kind: DbErrorKind::Connection,
                    message: "postgres: the connection broke inside a transaction".into(),
                });
            }
            self.statements.borrow_mut().clear();
            *slot = None;
            *slot = Some(self.target.config.connect(NoTls)?);
        }
        let Some(client) = slot.as_mut() else {
            return Err(DbError::other("no connection"));
        };
        f(client).map_err(|e| {
            let e = DbError::from(e);
            if e.kind == DbErrorKind::Connection {
                *slot = None;
            }
            e
        })
    }

    /// Runs `op`, and once more if it found the connection broken outside a transaction.
    fn retrying<T>(&self, mut op: impl FnMut() -> DbResult<T>) -> DbResult<T> {
        match op() {
            Err(e) if e.kind == DbErrorKind::Connection && !self.in_tx.get() => {
                tracing::info!(error = %e, "postgres: connection broken, opening a new one");
                op()
            }
            r => r,
        }
    }

    /// The prepared statement for `sql` (translated and prepared on first use).
    fn statement(&self, sql: &str) -> DbResult<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let translated = translate(sql);
        let stmt = self.with(|c| c.prepare(&translated))?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= STATEMENT_CACHE_MAX {
            cache.clear();
        }
        cache.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }
}

impl Drop for PgConn {
    /// The client's own drop blocks on its runtime to say goodbye, which panics inside an async
    /// one (where the last handle of a read pool may go): then it is done on a thread.
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("agentd-pg-close".into())
                    .spawn(move || drop(client));
            }
        }
    }
}

impl Db for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[Value]) -> DbResult<usize> {
        storable(params)?;
        let params = as_params(params);
        let n = self.retrying(|| {
            let stmt = self.statement(sql)?;
            self.with(|c| c.execute(&stmt, &params))
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn query(&self, sql: &str, params: &[Value]) -> DbResult<Vec<Row>> {
        storable(params)?;
        let params = as_params(params);
        let rows = self.retrying(|| {
            let stmt = self.statement(sql)?;
            self.with(|c| c.query(&stmt, &params))
        })?;
        rows.iter().map(row_of).collect()
    }

    fn batch(&self, sql: &str) -> DbResult<()> {
        let ends = matches!(sql.trim(), "COMMIT" | "ROLLBACK");
        if ends && self.in_tx.get() && self.client.borrow().is_none() {
            // The transaction died with its connection: there is nothing left to end.
            self.in_tx.set(false);
            return if sql.trim() == "ROLLBACK" {
                Ok(())
            } else {
                Err(DbError {
                    kind: DbErrorKind::Connection,
                    message: "postgres: the connection broke before COMMIT".into(),
                })
            };
        }
        let result = self.retrying(|| self.with(|c| c.batch_execute(sql)));
        if sql.trim_start().starts_with("BEGIN") {
            // Even when the rest of the batch failed, a transaction may be open: the caller
            // ends it.
            self.in_tx.set(true);
        } else if ends {
            self.in_tx.set(false);
        }
        result
    }
}

/// Refuses text PostgreSQL cannot hold, before it is sent (the server's refusal would name
/// neither the field nor the reason plainly).
fn storable(params: &[Value]) -> DbResult<()> {
    if params
        .iter()
        .any(|p| matches!(p, Value::Text(s) if s.contains('\0')))
    {
        return Err(DbError {
            kind: DbErrorKind::Invalid,
            message: "Text must not contain NUL characters (\\u0000).".into(),
        });
    }
    Ok(())
}

/// A result row of the client as a [`Row`].
pub fn row_of(r: &postgres::Row) -> DbResult<Row> {
    (0..r.len())
        .map(|i| r.try_get::<_, Cell>(i).map(|c| c.0))
        .collect::<Result<Vec<_>, _>>()
        .map(Row::new)
        .map_err(DbError::from)
}

fn as_params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// `?N` → `$N` outside string literals, quoted identifiers and comments.
pub fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\'' | '"' => {
                out.push(ch);
                for c in chars.by_ref() {
                    out.push(c);
                    if c == ch {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(ch);
                for c in chars.by_ref() {
                    out.push(c);
                    if c == '\n' {
                        break;
                    }
                }
            }
            '?' if chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            _ => out.push(ch),
        }
    }
    out
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> DbError {
        let kind = match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => DbErrorKind::Unique,
            Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::OUT_OF_MEMORY => {
                DbErrorKind::Full
            }
            Some(c) if c.code().starts_with("08") || c.code().starts_with("57P") => {
                DbErrorKind::Connection
            }
            Some(c)
                if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                    || *c == SqlState::UNTRANSLATABLE_CHARACTER =>
            {
                DbErrorKind::Invalid
            }
            Some(_) => DbErrorKind::Other,
            None if e.is_closed() => DbErrorKind::Connection,
            // An I/O failure: the connection cannot be trusted.
            None if std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) => {
                DbErrorKind::Connection
            }
            None => DbErrorKind::Other,
        };
        // The server's own message (with its detail) says more than the client's summary.
        let message = match e.as_db_error() {
            Some(db) => match db.detail() {
                Some(d) => format!("postgres: {}: {d}", db.message()),
                None => format!("postgres: {}", db.message()),
            },
            None => format!("postgres: {e}"),
        };
        DbError { kind, message }
    }
}

impl ToSql for Value {
    /// Sends the value as the type PostgreSQL inferred for the parameter.
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => int_to_sql(*i, ty, out),
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::INT8 | Type::INT4 | Type::INT2 if f.fract() == 0.0 => {
                    int_to_sql(*f as i64, ty, out)
                }
                _ if is_text(ty) => f.to_string().as_str().to_sql(&Type::TEXT, out),
                _ => Err(format!("cannot send a real number as {ty}").into()),
            },
            Value::Text(s) => match *ty {
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSON => {
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::INT8 | Type::INT4 | Type::INT2 => match s.trim().parse::<i64>() {
                    Ok(i) => int_to_sql(i, ty, out),
                    Err(_) => Err(format!("cannot send {s:?} as {ty}").into()),
                },
                _ => s.as_str().to_sql(&Type::TEXT, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    )
}

fn int_to_sql(i: i64, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    match *ty {
        Type::INT8 => i.to_sql(ty, out),
        Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
        Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
        Type::BOOL => (i != 0).to_sql(ty, out),
        Type::FLOAT8 => (i as f64).to_sql(ty, out),
        Type::FLOAT4 => (i as f32).to_sql(ty, out),
        Type::OID => u32::try_from(i)?.to_sql(ty, out),
        _ if is_text(ty) => i.to_string().as_str().to_sql(&Type::TEXT, out),
        _ => Err(format!("cannot send an integer as {ty}").into()),
    }
}

/// A result column as a [`Value`]: booleans become 0/1, JSON its text, `void` (what
/// `pg_advisory_xact_lock` returns) NULL.
struct Cell(Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Cell, BoxError> {
        Ok(Cell(match *ty {
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)? as i64),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)? as i64),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)? as i64),
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::OID => Value::Int(u32::from_sql(ty, raw)? as i64),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)? as f64),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::NUMERIC => numeric(raw)?,
            Type::VOID => Value::Null,
            Type::JSONB => Value::Text(String::from_utf8(raw.get(1..).unwrap_or(&[]).to_vec())?),
            Type::JSON => Value::Text(String::from_utf8(raw.to_vec())?),
            _ if is_text(ty) => Value::Text(String::from_sql(ty, raw)?),
            _ => return Err(format!("cannot read a column of type {ty}").into()),
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Cell, BoxError> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A `numeric` in its binary form (what `SUM` of integers returns): an integer when it has no
/// fraction and fits, else a float.
fn numeric(raw: &[u8]) -> Result<Value, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "short numeric".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i32;
    let sign = word(4)?;
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let mut int: Option<i128> = Some(0);
    let mut float = 0f64;
    for d in 0..ndigits {
        let digit = word(8 + 2 * d)? as i128;
        let power = weight - d as i32;
        float += digit as f64 * 10_000f64.powi(power);
        int = match (int, power) {
            (Some(acc), p) if p >= 0 => 10_000i128
                .checked_pow(p as u32)
                .and_then(|m| digit.checked_mul(m))
                .and_then(|v| acc.checked_add(v)),
            (acc, _) if digit == 0 => acc,
            _ => None,
        };
    }
    let negative = sign == 0x4000;
    Ok(match int.and_then(|i| i64::try_from(i).ok()) {
        Some(i) => Value::Int(if negative { -i } else { i }),
        None => Value::Real(if negative { -float } else { float }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_become_dollars_outside_literals() {
        assert_eq!(
            translate("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?12 -- ?3\n AND e = ?"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $12 -- ?3\n AND e = ?"
        );
        assert_eq!(translate("SELECT \"?1\", ?2"), "SELECT \"?1\", $2");
    }

    #[test]
    fn numerics_read_as_integers_or_floats() {
        // 12345678 = [1234, 5678] with weight 1.
        let raw = [0, 2, 0, 1, 0, 0, 0, 0, 0x04, 0xD2, 0x16, 0x2E];
        assert_eq!(numeric(&raw).unwrap(), Value::Int(12_345_678));
        // -1.5 = [1, 5000] with weight 0, negative, scale 1.
        let raw = [0, 2, 0, 0, 0x40, 0, 0, 1, 0, 1, 0x13, 0x88];
        assert_eq!(numeric(&raw).unwrap(), Value::Real(-1.5));
        // 0: no digits.
        assert_eq!(numeric(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(), Value::Int(0));
    }

    #[test]
    fn a_url_without_user_gets_one_and_tls_is_refused() {
        let t = PgTarget::parse("postgres://127.0.0.1:5432/test").unwrap();
        assert!(t.config.get_user().is_some());
        assert!(PgTarget::parse("postgres://u@127.0.0.1/test?sslmode=require").is_err());
        assert!(PgTarget::parse("postgres://u@127.0.0.1/test?bogus=1").is_err());
    }
}
