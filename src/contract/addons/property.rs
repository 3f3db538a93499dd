//! How one property value of a built-in addon is read, by its kind: the `/start` check and the
//! worker read values through these same functions, so what one accepts the other can use.
//!
//! Placeholders always resolve to strings, so a boolean or a number may also be written as a
//! string (`"true"`, `"0.7"`); an absent key and `null` mean "not set". Errors name the key and
//! the expected kind, never the value (it may have come from a secret).

use serde_json::Value;

/// A property with the wrong type or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("property {key:?} {message}")]
pub struct PropertyError {
    /// The key (or `rules[2]` for an entry of a list).
    pub key: String,
    /// What it should be ("must be true or false").
    pub message: String,
}

impl PropertyError {
    pub fn new(key: &str, message: impl Into<String>) -> PropertyError {
        PropertyError {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// The kind of a property value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// `true` / `false` (or those words as strings).
    Bool,
    /// A whole number >= 0 (or its digits as a string; an empty string is "not set").
    UInt,
    /// A number (or one as a string; an empty string is "not set").
    Number,
    /// An `http://` or `https://` URL (an empty string is "not set").
    HttpUrl,
    /// The `rules` addon's list of rules (see [`super::rules`]).
    Rules,
}

impl Kind {
    /// What a value of this kind must be, as the end of "property \"x\" must be ...".
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::Bool => "true or false",
            Kind::UInt => "a whole number >= 0",
            Kind::Number => "a number",
            Kind::HttpUrl => "an http:// or https:// URL",
            Kind::Rules => "an array of rules",
        }
    }

    fn error(self, key: &str) -> PropertyError {
        PropertyError::new(key, format!("must be {}", self.expected()))
    }
}

fn present<'a>(p: &'a Value, key: &str) -> Option<&'a Value> {
    p.get(key).filter(|v| !v.is_null())
}

/// A [`Kind::Text`] value.
pub fn text(p: &Value, key: &str) -> Result<Option<String>, PropertyError> {
    match present(p, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Kind::Text.error(key)),
    }
}

/// A [`Kind::Bool`] value.
pub fn boolean(p: &Value, key: &str) -> Result<Option<bool>, PropertyError> {
    match present(p, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
        Some(_) => Err(Kind::Bool.error(key)),
    }
}

/// A [`Kind::UInt`] value.
pub fn uint(p: &Value, key: &str) -> Result<Option<u64>, PropertyError> {
    match present(p, key) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or(Kind::UInt.error(key)),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Kind::UInt.error(key)),
        Some(_) => Err(Kind::UInt.error(key)),
    }
}

/// A [`Kind::Number`] value.
pub fn number(p: &Value, key: &str) -> Result<Option<f64>, PropertyError> {
    match present(p, key) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Some(f)),
            _ => Err(Kind::Number.error(key)),
        },
        Some(_) => Err(Kind::Number.error(key)),
    }
}

/// A [`Kind::HttpUrl`] value, without trailing slashes.
pub fn http_url(p: &Value, key: &str) -> Result<Option<String>, PropertyError> {
    match text(p, key).map_err(|_| Kind::HttpUrl.error(key))? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) if s.starts_with("http://") || s.starts_with("https://") => {
            Ok(Some(s.trim_end_matches('/').to_string()))
        }
        Some(_) => Err(Kind::HttpUrl.error(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_stand_in_for_booleans_and_numbers() {
        let p = json!({"b": "true", "n": " 7 ", "f": "0.5", "e": "", "z": null});
        assert_eq!(boolean(&p, "b"), Ok(Some(true)));
        assert_eq!(uint(&p, "n"), Ok(Some(7)));
        assert_eq!(number(&p, "f"), Ok(Some(0.5)));
        assert_eq!(uint(&p, "e"), Ok(None));
        assert_eq!(text(&p, "z"), Ok(None));
        assert_eq!(boolean(&p, "missing"), Ok(None));
    }

    #[test]
    fn wrong_kinds_name_the_key_and_not_the_value() {
        let p = json!({"s": "yes", "u": -1, "f": "NaN", "t": 3, "url": "ftp://secret-host"});
        let e = boolean(&p, "s").unwrap_err();
        assert_eq!(e.to_string(), "property \"s\" must be true or false");
        assert_eq!(uint(&p, "u").unwrap_err().key, "u");
        assert!(number(&p, "f").is_err());
        assert!(text(&p, "t").is_err());
        let e = http_url(&p, "url").unwrap_err().to_string();
        assert!(!e.contains("secret-host"), "{e}");
        assert_eq!(
            http_url(&json!({"u": "https://x/v1/"}), "u"),
            Ok(Some("https://x/v1".into()))
        );
    }
}
