//! The limits of the start fields a request carries, checked before anything is built or
//! spawned: the fields reach the worker's environment (`AGENTD_REQUEST_ID`), its property file
//! (`token`, the channel) and `/list`, so each has a length and a set of characters it may use,
//! and none may look like a `${env:…}` placeholder (see [`crate::contract::placeholder::looks_like`]).

use super::errors::StartError;
use super::reservation::StartSpec;
use crate::contract::placeholder;

/// Longest `graph_name`, in bytes.
pub const MAX_GRAPH_NAME_BYTES: usize = 128;
/// Longest `request_id`, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Longest `token`, in bytes (an Agora token is a few hundred).
pub const MAX_TOKEN_BYTES: usize = 2048;

/// Checks the text fields of `spec` (the channel has its own check, shared with `/ping` and
/// `/stop`, in [`super::check_channel`]; this adds what only a start writes).
pub fn check(spec: &StartSpec) -> Result<(), StartError> {
    no_placeholder("channel_name", &spec.channel)?;
    if !spec.graph.trim().is_empty() {
        printable("graph_name", &spec.graph, MAX_GRAPH_NAME_BYTES)?;
    }
    if let Some(id) = &spec.request_id {
        printable("request_id", id, MAX_REQUEST_ID_BYTES)?;
    }
    if let Some(token) = &spec.token {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refused(
                "token",
                format!("is longer than {MAX_TOKEN_BYTES} bytes"),
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(refused(
                "token",
                "may hold only visible ASCII characters (no spaces or control characters)".into(),
            ));
        }
        no_placeholder("token", token)?;
    }
    Ok(())
}

/// At most `max` bytes, no control characters (NUL included), not a placeholder.
fn printable(key: &str, value: &str, max: usize) -> Result<(), StartError> {
    if value.len() > max {
        return Err(refused(key, format!("is longer than {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(refused(key, "contains control characters".into()));
    }
    no_placeholder(key, value)
}

fn no_placeholder(key: &str, value: &str) -> Result<(), StartError> {
    if placeholder::looks_like(value) {
        return Err(refused(key, placeholder_detail()));
    }
    Ok(())
}

/// Why a request value shaped like a placeholder is refused.
pub(super) fn placeholder_detail() -> String {
    "looks like a ${env:…} placeholder; placeholders come only from the graph's author, never \
     from a request (a worker would resolve it and hand out the variable)"
        .into()
}

fn refused(key: &str, detail: String) -> StartError {
    StartError::Refused {
        key: key.to_string(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> StartSpec {
        StartSpec {
            channel: "c".into(),
            graph: "g".into(),
            ..Default::default()
        }
    }

    fn key_of(r: Result<(), StartError>) -> String {
        match r {
            Err(StartError::Refused { key, .. }) => key,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn limits_name_the_field() {
        assert!(check(&spec()).is_ok());
        let with = |f: &dyn Fn(&mut StartSpec)| {
            let mut s = spec();
            f(&mut s);
            key_of(check(&s))
        };
        assert_eq!(with(&|s| s.request_id = Some("a\0b".into())), "request_id");
        assert_eq!(
            with(&|s| s.request_id = Some("r".repeat(129))),
            "request_id"
        );
        assert_eq!(with(&|s| s.token = Some("t".repeat(2049))), "token");
        assert_eq!(with(&|s| s.token = Some("a b".into())), "token");
        assert_eq!(with(&|s| s.token = Some("${env:HOME}".into())), "token");
        assert_eq!(with(&|s| s.channel = "${env:HOME}".into()), "channel_name");
        assert_eq!(with(&|s| s.graph = "g\n".into()), "graph_name");
        assert_eq!(
            with(&|s| s.request_id = Some("${sys:x}".into())),
            "request_id"
        );
        let mut ok = spec();
        ok.request_id = Some("résumé-№1 ${not whole".into());
        ok.token = Some("007eJxTYBBe".into());
        assert!(check(&ok).is_ok());
    }
}
