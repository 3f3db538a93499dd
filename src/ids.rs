//! Ids: every id the server makes (chats, messages, events, conversations, worker ids, the worker
//! token) comes from here, so each kind has one length and alphabet. The child worker makes its
//! own (it depends on nothing of the server's).

/// A new random 21-character URL-safe id: records in the store.
pub fn new_id() -> String {
    nanoid::nanoid!()
}

/// A new random 12-character id: a worker process (`AGENTD_WORKER_ID`), short enough for logs.
pub fn worker_id() -> String {
    nanoid::nanoid!(12)
}

/// A new random 32-character secret (about 190 bits), such as the worker token.
pub fn secret() -> String {
    nanoid::nanoid!(32)
}
