//! The addons agentd's built-in worker runs and the properties each one reads: `/start` refuses a
//! graph for that worker with any other addon, or with a property of the wrong kind (after the
//! request's overrides are merged in), and the worker reads its properties through the same
//! [`check`] before it starts. Keys an addon does not know are left alone: TEN graphs carry
//! extra keys.

pub mod property;
pub mod rules;

use serde_json::Value;

pub use property::{Kind, PropertyError};

/// Copies each message back, with an optional prefix.
pub const ECHO: &str = "echo";
/// Keyword and pattern rules to answers.
pub const RULES: &str = "rules";
/// An OpenAI-compatible chat-completions provider.
pub const OPENAI_CHAT: &str = "openai_chat";

/// Every addon the built-in worker runs.
pub const KNOWN: &[&str] = &[ECHO, RULES, OPENAI_CHAT];

/// True when the built-in worker runs `addon`.
pub fn is_known(addon: &str) -> bool {
    KNOWN.contains(&addon)
}

/// One property an addon reads.
#[derive(Debug, Clone, Copy)]
pub struct Prop {
    pub key: &'static str,
    pub kind: Kind,
    /// Must be set, and not blank.
    pub required: bool,
}

const fn opt(key: &'static str, kind: Kind) -> Prop {
    Prop {
        key,
        kind,
        required: false,
    }
}

const ECHO_PROPS: &[Prop] = &[
    opt("prefix", Kind::Text),
    opt("stream", Kind::Bool),
    opt("chunk_delay_ms", Kind::UInt),
];

const RULES_PROPS: &[Prop] = &[
    opt("rules", Kind::Rules),
    opt("fallback", Kind::Text),
    opt("stream", Kind::Bool),
    opt("chunk_delay_ms", Kind::UInt),
];

const OPENAI_CHAT_PROPS: &[Prop] = &[
    opt("base_url", Kind::HttpUrl),
    opt("api_key", Kind::Text),
    Prop {
        key: "model",
        kind: Kind::Text,
        required: true,
    },
    opt("system_prompt", Kind::Text),
    opt("temperature", Kind::Number),
    opt("max_tokens", Kind::UInt),
    opt("memory", Kind::UInt),
    opt("stream", Kind::Bool),
];

/// The properties `addon` reads; `None` for an addon the built-in worker does not run.
pub fn schema(addon: &str) -> Option<&'static [Prop]> {
    match addon {
        ECHO => Some(ECHO_PROPS),
        RULES => Some(RULES_PROPS),
        OPENAI_CHAT => Some(OPENAI_CHAT_PROPS),
        _ => None,
    }
}

/// Checks a node's `property` (placeholders already resolved) against its addon's schema; the
/// first key that does not fit. An addon without a schema has nothing to check.
pub fn check(addon: &str, property: &Value) -> Result<(), PropertyError> {
    for prop in schema(addon).unwrap_or(&[]) {
        check_one(prop, property)?;
    }
    Ok(())
}

fn check_one(prop: &Prop, p: &Value) -> Result<(), PropertyError> {
    let key = prop.key;
    let set = match prop.kind {
        Kind::Text => property::text(p, key)?.is_some_and(|s| !s.trim().is_empty()),
        Kind::Bool => property::boolean(p, key)?.is_some(),
        Kind::UInt => property::uint(p, key)?.is_some(),
        Kind::Number => property::number(p, key)?.is_some(),
        Kind::HttpUrl => property::http_url(p, key)?.is_some(),
        Kind::Rules => !rules::read(p.get(key))?.is_empty(),
    };
    if prop.required && !set {
        return Err(PropertyError::new(
            key,
            format!("is required ({})", prop.kind.expected()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_known_addon_has_a_schema() {
        for a in KNOWN {
            assert!(schema(a).is_some(), "{a}");
        }
        assert!(schema("agora_rtc").is_none());
        assert!(check("agora_rtc", &json!({"stream": "yes"})).is_ok());
    }

    #[test]
    fn kinds_are_checked_and_unknown_keys_pass() {
        assert!(check(
            ECHO,
            &json!({"prefix": "> ", "stream": "false", "extra": [1]})
        )
        .is_ok());
        let e = check(ECHO, &json!({"stream": "yes"})).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("stream", "must be true or false")
        );
        let e = check(OPENAI_CHAT, &json!({"model": " "})).unwrap_err();
        assert_eq!(e.key, "model");
        assert!(e.message.contains("required"), "{e}");
        assert!(check(
            OPENAI_CHAT,
            &json!({"model": "m", "base_url": "file:///etc"})
        )
        .is_err());
        assert!(check(RULES, &json!({"rules": [{"pattern": "(", "answer": "x"}]})).is_err());
        assert!(check(RULES, &json!({})).is_ok());
    }
}
