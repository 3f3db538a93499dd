//! Request body parsing, query parameters, and zod-like field validation with the reference's
//! error shapes.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest};
use serde_json::{json, Map, Value};

use super::error::ApiError;
pub use crate::http::extract::query;
use crate::http::extract::{self, BodyError};
pub use crate::store::requests::type_name;
use crate::store::StoreError;

/// Reads the request body up to `limit` bytes.
pub async fn read_body(payload: web::Payload, limit: usize) -> Result<bytes::Bytes, ApiError> {
    extract::read_body(payload, limit)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(_) => ApiError::PayloadTooLarge,
            BodyError::Unreadable(_) => ApiError::validation("Could not read the request body."),
            BodyError::TimedOut => ApiError::BodyTimeout,
        })
}

/// Parses a JSON object body whatever its declared type (`curl -d` sends JSON as a form, and
/// the body is what counts). Empty → `{}` (the usual field errors follow); invalid JSON → 400
/// `Malformed JSON in request body` (saying the body must be JSON when another type was
/// declared); not an object → schema error.
pub fn parse_object(req: &HttpRequest, body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let declared_other = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| !ct.to_ascii_lowercase().contains("json"));
    match extract::parse_json::<Value>(body) {
        Ok(None) => Ok(Map::new()),
        Ok(Some(Value::Object(m))) => Ok(m),
        Ok(Some(other)) => {
            let mut v = Fields::new(Map::new());
            v.form(format!("Expected object, received {}", type_name(&other)));
            v.finish()?;
            Ok(Map::new())
        }
        Err(_) if declared_other => Err(ApiError::validation(
            "The request body must be JSON (Content-Type: application/json).",
        )),
        Err(_) => Err(ApiError::MalformedJson),
    }
}

/// Collects field errors while reading typed fields out of a body.
pub struct Fields {
    pub obj: Map<String, Value>,
    form: Vec<String>,
    fields: BTreeMap<String, Vec<String>>,
}

impl Fields {
    pub fn new(obj: Map<String, Value>) -> Fields {
        Fields {
            obj,
            form: Vec::new(),
            fields: BTreeMap::new(),
        }
    }

    pub fn has(&self, k: &str) -> bool {
        self.obj.contains_key(k)
    }

    pub fn get(&self, k: &str) -> Option<&Value> {
        self.obj.get(k)
    }

    pub fn err(&mut self, k: &str, msg: impl Into<String>) {
        self.fields
            .entry(k.to_string())
            .or_default()
            .push(msg.into());
    }

    pub fn form(&mut self, msg: impl Into<String>) {
        self.form.push(msg.into());
    }

    pub fn ok(&self) -> bool {
        self.form.is_empty() && self.fields.is_empty()
    }

    /// 400 VALIDATION_ERROR with `{formErrors, fieldErrors}` when anything failed.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.ok() {
            return Ok(());
        }
        Err(StoreError::Validation {
            message: "Request validation failed.".into(),
            details: Some(json!({ "formErrors": self.form, "fieldErrors": self.fields })),
        }
        .into())
    }

    fn expected(&mut self, k: &str, want: &str) {
        let got = self.obj.get(k).map(type_name).unwrap_or("undefined");
        self.err(k, format!("Expected {want}, received {got}"));
    }

    /// Optional string (null counts as absent when `nullable`).
    pub fn opt_str(&mut self, k: &str) -> Option<String> {
        match self.obj.get(k) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.expected(k, "string");
                None
            }
        }
    }

    /// Optional string or null: `Some(None)` means explicitly null.
    pub fn opt_str_or_null(&mut self, k: &str) -> Option<Option<String>> {
        match self.obj.get(k) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(_) => {
                self.expected(k, "string");
                None
            }
        }
    }

    /// Required string of at least `min` characters.
    pub fn req_str(&mut self, k: &str, min: usize) -> Option<String> {
        match self.obj.get(k) {
            None => {
                self.err(k, "Required");
                None
            }
            Some(Value::String(s)) if s.chars().count() < min => {
                self.err(
                    k,
                    format!("String must contain at least {min} character(s)"),
                );
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.expected(k, "string");
                None
            }
        }
    }

    /// Optional non-negative integer (at least `min`).
    pub fn opt_uint(&mut self, k: &str, min: u64) -> Option<u64> {
        match self.obj.get(k) {
            None => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v >= min => Some(v),
                Some(_) => {
                    self.err(k, format!("Number must be greater than or equal to {min}"));
                    None
                }
                None if n.as_i64().is_some() => {
                    self.err(k, format!("Number must be greater than or equal to {min}"));
                    None
                }
                None => {
                    self.err(k, "Expected integer, received float");
                    None
                }
            },
            Some(_) => {
                self.expected(k, "number");
                None
            }
        }
    }

    pub fn opt_bool(&mut self, k: &str) -> Option<bool> {
        match self.obj.get(k) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.expected(k, "boolean");
                None
            }
        }
    }

    pub fn req_bool(&mut self, k: &str) -> Option<bool> {
        if !self.has(k) {
            self.err(k, "Required");
            return None;
        }
        self.opt_bool(k)
    }

    /// Optional JSON object.
    pub fn opt_object(&mut self, k: &str) -> Option<Map<String, Value>> {
        match self.obj.get(k) {
            None => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(_) => {
                self.expected(k, "object");
                None
            }
        }
    }

    /// Optional array of strings.
    pub fn opt_str_array(&mut self, k: &str) -> Option<Vec<String>> {
        match self.obj.get(k) {
            None => None,
            Some(Value::Array(a)) => {
                let mut out = Vec::with_capacity(a.len());
                for v in a {
                    match v {
                        Value::String(s) => out.push(s.clone()),
                        other => {
                            let msg = format!("Expected string, received {}", type_name(other));
                            self.err(k, msg);
                            return None;
                        }
                    }
                }
                Some(out)
            }
            Some(_) => {
                self.expected(k, "array");
                None
            }
        }
    }
}

/// Canonical JSON (object keys sorted recursively) for idempotency fingerprints.
pub fn canonical(v: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    walk(&m[*k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    walk(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    walk(v, &mut s);
    s
}

/// SHA-256 hex of the canonical JSON.
pub fn fingerprint(v: &Value) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(canonical(v).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Integer query parameter within `min..=max`, or its default.
pub fn query_int(
    req: &HttpRequest,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ApiError> {
    match query(req, name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => {
                let mut f = Fields::new(Map::new());
                f.err(name, format!("Expected an integer from {min} to {max}"));
                f.finish()?;
                Ok(default)
            }
        },
    }
}

/// Optional boolean query parameter (`true`/`false`).
pub fn query_bool(req: &HttpRequest, name: &str) -> Result<Option<bool>, ApiError> {
    match query(req, name).as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => {
            let mut f = Fields::new(Map::new());
            f.err(name, "Expected true or false");
            f.finish()?;
            Ok(None)
        }
    }
}
