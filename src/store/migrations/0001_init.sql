-- Chat and dispatch API schema. Timestamps are epoch milliseconds (UTC); ids are 21-char nanoids.
-- `seq` columns give a total insertion order (ids are random).

CREATE TABLE chats (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE CHECK (length(id) = 21),
    external_key TEXT UNIQUE,
    is_archived INTEGER NOT NULL DEFAULT 0,
    title TEXT NOT NULL,
    title_source TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    pinned INTEGER NOT NULL DEFAULT 0,
    agent_ids TEXT NOT NULL,
    model_id TEXT NOT NULL,
    last_message_preview TEXT,
    last_message_role TEXT,
    pending_requests_count INTEGER NOT NULL DEFAULT 0,
    last_read_at INTEGER,
    unread_count INTEGER NOT NULL DEFAULT 0,
    notifications_muted INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_message_at INTEGER NOT NULL
);
CREATE INDEX chats_order ON chats (pinned DESC, last_message_at DESC, id DESC);

CREATE TABLE chat_agents (
    chat_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (chat_id, agent_id)
) WITHOUT ROWID;
CREATE INDEX chat_agents_by_agent ON chat_agents (agent_id, chat_id);

CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE CHECK (length(id) = 21),
    chat_id TEXT NOT NULL,
    role TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    content_final TEXT,
    content_partial TEXT,
    stream_state TEXT NOT NULL,
    model_id TEXT,
    trace TEXT
);
CREATE INDEX messages_by_chat ON messages (chat_id, seq);
CREATE INDEX messages_streaming ON messages (updated_at) WHERE stream_state = 'streaming';
CREATE INDEX messages_streaming_chat ON messages (chat_id) WHERE stream_state = 'streaming';

CREATE TABLE requests (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE CHECK (length(id) = 21),
    chat_id TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT,
    config TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER,
    resolved_by TEXT,
    resolution_payload TEXT,
    trace TEXT
);
CREATE INDEX requests_by_chat ON requests (chat_id, status, seq);

CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX idempotency_by_age ON idempotency (created_at);

CREATE TABLE dispatch_inputs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    chat_id TEXT NOT NULL,
    source_kind TEXT NOT NULL,
    source_id TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    content TEXT NOT NULL,
    trace_kind TEXT,
    media_ids TEXT NOT NULL DEFAULT '[]',
    extra TEXT,
    state TEXT NOT NULL,
    batch_id TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX dispatch_inputs_pending ON dispatch_inputs (chat_id, seq) WHERE state = 'pending';
CREATE INDEX dispatch_inputs_by_batch ON dispatch_inputs (batch_id, seq);

CREATE TABLE dispatch_batches (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    chat_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt_count INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    compiled_content TEXT NOT NULL,
    items TEXT NOT NULL
);
CREATE INDEX dispatch_batches_claim ON dispatch_batches (available_at, seq) WHERE status = 'pending';
CREATE INDEX dispatch_batches_chat_open ON dispatch_batches (chat_id, seq) WHERE status IN ('pending', 'leased');
CREATE INDEX dispatch_batches_leases ON dispatch_batches (lease_expires_at) WHERE status = 'leased';

CREATE TABLE dispatch_chat_state (
    chat_id TEXT PRIMARY KEY,
    first_pending_at INTEGER,
    last_input_at INTEGER,
    last_user_typing_at INTEGER
) WITHOUT ROWID;
CREATE INDEX dispatch_chat_state_pending ON dispatch_chat_state (first_pending_at) WHERE first_pending_at IS NOT NULL;
