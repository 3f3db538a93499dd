//! The addons agentd's built-in worker runs: `/start` refuses a graph with any other when the
//! graph runs on that worker, and the worker refuses one too.

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
