//! The narrow database interface the store's domain logic is written against, so one
//! implementation of chats, messages, dispatch and the front doors' tables runs on SQLite and on
//! PostgreSQL.
//!
//! Statements are written once, in the SQL both engines accept, with numbered parameters
//! (`?1`, `?2`, ...; PostgreSQL's `$1` is derived from them). Where the engines must differ
//! (row locks, JSON, substring search) the statement asks its [`Dialect`]. Rows come back owned
//! ([`Row`]) and are read with typed getters, so no engine's row type leaks into the domain code.

pub(super) mod error;
pub mod postgres;
pub mod sqlite;

pub use error::{DbError, DbErrorKind, DbResult};

use super::error::StoreError;

/// One parameter or column value, as both engines can store it: booleans are integers 0/1,
/// timestamps epoch-millisecond integers, JSON documents text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// What can be a statement parameter; taken by reference, so `args!` moves nothing.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}
impl ToValue for i32 {
    fn to_value(&self) -> Value {
        Value::Int(*self as i64)
    }
}
impl ToValue for u32 {
    fn to_value(&self) -> Value {
        Value::Int(*self as i64)
    }
}
impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(*self as i64)
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// Parameters of a statement: `args![a, b]` is a `&[Value]`.
macro_rules! args {
    () => { &[] as &[$crate::store::sql::Value] };
    ($($v:expr),+ $(,)?) => {
        &[$($crate::store::sql::ToValue::to_value(&$v)),+] as &[$crate::store::sql::Value]
    };
}
pub(crate) use args;

/// Which engine a connection speaks, for the few places where their SQL must differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Appended to a `SELECT` that decides a write: PostgreSQL locks the rows (and skips rows
    /// another node holds), SQLite needs nothing (its one writer holds the whole database).
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Like [`skip_locked`](Self::skip_locked), but waits for rows another node holds.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// True when the JSON array of strings in column `col` holds parameter `p` (like `?3`).
    pub fn json_array_has(self, col: &str, p: &str) -> String {
        match self {
            Dialect::Sqlite => format!("EXISTS (SELECT 1 FROM json_each({col}) WHERE value = {p})"),
            Dialect::Postgres => format!(
                "EXISTS (SELECT 1 FROM json_array_elements_text(({col})::json) v WHERE v = {p})"
            ),
        }
    }

    /// True when text `hay` contains text `needle`, ignoring case.
    pub fn contains_ci(self, hay: &str, needle: &str) -> String {
        match self {
            Dialect::Sqlite => format!("instr(lower({hay}), lower({needle})) > 0"),
            Dialect::Postgres => format!("strpos(lower({hay}), lower({needle})) > 0"),
        }
    }

    /// The string member `key` of the JSON object in text column `col`.
    pub fn json_text(self, col: &str, key: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({col}, '$.{key}')"),
            Dialect::Postgres => format!("(({col})::json ->> '{key}')"),
        }
    }
}

/// A connection (or an open transaction on one) the domain code runs statements on.
pub trait Db {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; how many rows it changed.
    fn execute(&self, sql: &str, params: &[Value]) -> DbResult<usize>;
    /// Runs a query (or a statement with `RETURNING`); every row, owned.
    fn query(&self, sql: &str, params: &[Value]) -> DbResult<Vec<Row>>;
    /// Runs statements without parameters or results (transactions, savepoints, DDL).
    fn batch(&self, sql: &str) -> DbResult<()>;
}

/// One row of a result, owned.
#[derive(Debug, Clone)]
pub struct Row(Vec<Value>);

impl Row {
    pub fn new(values: Vec<Value>) -> Row {
        Row(values)
    }

    /// Column `i`, converted; a type that does not fit is a database error.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, StoreError> {
        let v = self.0.get(i).unwrap_or(&Value::Null);
        T::from_value(v).ok_or_else(|| {
            StoreError::Database(DbError::other(format!(
                "column {i}: cannot read {v:?} as {}",
                std::any::type_name::<T>()
            )))
        })
    }
}

/// A Rust type a column value converts to.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            Value::Real(f) => Some(*f as i64),
            _ => None,
        }
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Option<bool> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> Option<f64> {
        match v {
            Value::Int(i) => Some(*i as f64),
            Value::Real(f) => Some(*f),
            _ => None,
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A Rust type a whole row converts to: a single column's type, or a tuple of them.
pub trait FromRow: Sized {
    fn from_row(r: &Row) -> Result<Self, StoreError>;
}

impl<T: FromValue> FromRow for T {
    fn from_row(r: &Row) -> Result<T, StoreError> {
        r.get(0)
    }
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: FromValue),+> FromRow for ($($t,)+) {
            fn from_row(r: &Row) -> Result<Self, StoreError> {
                Ok(($(r.get::<$t>($i)?,)+))
            }
        }
    };
}
tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);

/// The ways the domain code reads results, on any [`Db`].
impl dyn Db + '_ {
    /// Every row, converted.
    pub fn all<T: FromRow>(&self, sql: &str, params: &[Value]) -> Result<Vec<T>, StoreError> {
        self.query(sql, params)?.iter().map(T::from_row).collect()
    }

    /// Every row, through `f`.
    pub fn all_map<T>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl FnMut(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.query(sql, params)?.iter().map(f).collect()
    }

    /// The first row, if any, converted.
    pub fn opt<T: FromRow>(&self, sql: &str, params: &[Value]) -> Result<Option<T>, StoreError> {
        self.query(sql, params)?
            .first()
            .map(T::from_row)
            .transpose()
    }

    /// The first row, if any, through `f`.
    pub fn opt_map<T>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.query(sql, params)?.first().map(f).transpose()
    }

    /// The first row, converted; none is a database error (the query always returns one).
    pub fn one<T: FromRow>(&self, sql: &str, params: &[Value]) -> Result<T, StoreError> {
        self.opt(sql, params)?
            .ok_or_else(|| StoreError::Database(DbError::other(format!("no row from: {sql}"))))
    }

    /// True when the query returns a row.
    pub fn exists(&self, sql: &str, params: &[Value]) -> Result<bool, StoreError> {
        Ok(!self.query(sql, params)?.is_empty())
    }
}
