//! [`Db`] on a rusqlite connection (or a transaction, which derefs to one).

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::{Db, DbError, DbErrorKind, DbResult, Dialect, Row, Value};

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> DbError {
        let kind = match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => DbErrorKind::Unique,
            Some(rusqlite::ErrorCode::DiskFull) => DbErrorKind::Full,
            Some(rusqlite::ErrorCode::ReadOnly) => DbErrorKind::ReadOnly,
            Some(
                rusqlite::ErrorCode::CannotOpen
                | rusqlite::ErrorCode::SystemIoFailure
                | rusqlite::ErrorCode::NotADatabase
                | rusqlite::ErrorCode::DatabaseCorrupt,
            ) => DbErrorKind::Unreachable,
            _ => DbErrorKind::Other,
        };
        DbError {
            kind,
            message: format!("sqlite: {e}"),
        }
    }
}

impl Db for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, params: &[Value]) -> DbResult<usize> {
        Ok(self
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params))?)
    }

    fn query(&self, sql: &str, params: &[Value]) -> DbResult<Vec<Row>> {
        let mut stmt = self.prepare_cached(sql)?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::Int(i),
                    ValueRef::Real(f) => Value::Real(f),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(Row::new(values));
        }
        Ok(out)
    }

    fn batch(&self, sql: &str) -> DbResult<()> {
        // The writer's BEGIN, SAVEPOINT, RELEASE and COMMIT, a few per job: from the statement
        // cache instead of parsed anew each time.
        let control = ["BEGIN", "SAVEPOINT", "RELEASE", "COMMIT", "ROLLBACK"];
        if !sql.contains(';') && control.iter().any(|c| sql.starts_with(c)) {
            self.prepare_cached(sql)?.execute([])?;
            return Ok(());
        }
        Ok(self.execute_batch(sql)?)
    }
}
