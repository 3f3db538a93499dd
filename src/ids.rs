//! Ids: every id agentd makes (chats, messages, events, conversations, keys) comes from here, so
//! they all have one length and alphabet.

/// A new random 21-character URL-safe id.
pub fn new_id() -> String {
    nanoid::nanoid!()
}
