-- Conversations front door (/conversations, /messages/:id): conversations between participants,
-- their messages with read receipts, bots switched on per conversation, delivery logs of bot
-- invocations, and the feed behind /events. Timestamps are epoch milliseconds.

-- A chat may override DISPATCH_MODE (NULL = the server's mode). Front-door chats are request and
-- answer, so they dispatch `sequential`: no batching window to wait out.
ALTER TABLE chats ADD COLUMN dispatch_mode TEXT;

CREATE TABLE fd_conversations (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX fd_conversations_recent ON fd_conversations (updated_at DESC, seq DESC);

CREATE TABLE fd_participants (
    conversation_id TEXT NOT NULL,
    participant TEXT NOT NULL,
    PRIMARY KEY (conversation_id, participant)
) WITHOUT ROWID;
CREATE INDEX fd_participants_by_participant ON fd_participants (participant, conversation_id);

CREATE TABLE fd_messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    attachments TEXT NOT NULL,
    is_automated INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX fd_messages_by_conversation ON fd_messages (conversation_id, seq);

CREATE TABLE fd_reads (
    message_id TEXT NOT NULL,
    participant TEXT NOT NULL,
    read_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, participant)
) WITHOUT ROWID;

CREATE TABLE fd_bots (
    conversation_id TEXT NOT NULL,
    bot TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, bot)
) WITHOUT ROWID;

CREATE TABLE fd_delivery (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    bot TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT,
    reply_id TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX fd_delivery_by_conversation ON fd_delivery (conversation_id, seq);
CREATE INDEX fd_delivery_open ON fd_delivery (conversation_id, bot, seq) WHERE status <> 'delivered';

CREATE TABLE fd_events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX fd_events_by_conversation ON fd_events (conversation_id, seq);
