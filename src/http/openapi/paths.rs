//! Every operation agentd serves, declared once for the OpenAPI document: thin functions that
//! carry only the `#[utoipa::path]` description (the handlers live in their route files, and
//! keeping the descriptions here keeps those files about behaviour). `tests/openapi.rs` checks
//! that this list and the server's routes are the same.

#![allow(dead_code)]

use super::schemas::*;

// ------------------------------------------------------------------ supervisor

#[utoipa::path(get, path = "/", tag = "supervisor", operation_id = "root_health",
    summary = "Health (same as /health)",
    responses((status = 200, description = "agentd is up", body = TenHealth)))]
fn root() {}

#[utoipa::path(get, path = "/health", tag = "supervisor", summary = "Health, and how workers are contained",
    responses(
        (status = 200, description = "agentd is up", body = TenHealth),
        (status = 503, description = "Draining (shutting down), or fenced: this node of several cannot renew its leases in the database", body = TenError),
    ))]
fn health() {}

#[utoipa::path(post, path = "/start", tag = "supervisor",
    summary = "Start a worker for a channel; answers once it is ready",
    request_body = StartRequest,
    responses(
        (status = 200, description = "The worker is ready", body = TenStarted),
        (status = 400, description = "A bad field, graph node or property (code 10000, 10004, 10100)", body = TenError),
        (status = 401, description = "No key", body = TenError),
        (status = 404, description = "No such graph (code 10100)", body = TenError),
        (status = 409, description = "The channel is taken (10003), or it was stopped while starting (10101)", body = TenError),
        (status = 413, description = "The body is too large", body = TenError),
        (status = 429, description = "Too many workers (10001)", body = TenError),
        (status = 502, description = "The worker exited before it was ready (10101)", body = TenError),
        (status = 503, description = "agentd is shutting down, or (several nodes) cannot record the channel's owner in the database (10101)", body = TenError),
        (status = 504, description = "The worker was not ready in time (10101)", body = TenError),
    ))]
fn start() {}

#[utoipa::path(post, path = "/stop", tag = "supervisor",
    summary = "Stop a channel's worker for good; answers once it and its processes are gone",
    request_body = ChannelRequest,
    responses(
        (status = 200, description = "The worker is gone", body = TenStopped),
        (status = 400, description = "A bad body or channel", body = TenError),
        (status = 401, description = "No key", body = TenError),
        (status = 404, description = "No worker for the channel (10002)", body = TenError),
        (status = 413, description = "The body is too large", body = TenError),
        (status = 502, description = "Several nodes: the node that runs the channel cannot be reached", body = TenError),
        (status = 503, description = "Several nodes: the database cannot tell which node runs the channel", body = TenError),
    ))]
fn stop() {}

#[utoipa::path(post, path = "/ping", tag = "supervisor",
    summary = "Push a worker's inactivity deadline back",
    request_body = ChannelRequest,
    responses(
        (status = 200, description = "Pinged", body = TenPinged),
        (status = 400, description = "A bad body or channel", body = TenError),
        (status = 401, description = "No key", body = TenError),
        (status = 404, description = "No worker for the channel (10002)", body = TenError),
        (status = 413, description = "The body is too large", body = TenError),
        (status = 502, description = "Several nodes: the node that runs the channel cannot be reached", body = TenError),
        (status = 503, description = "Several nodes: the database cannot tell which node runs the channel", body = TenError),
    ))]
fn ping() {}

#[utoipa::path(get, path = "/list", tag = "supervisor", summary = "Every worker",
    responses(
        (status = 200, description = "The workers, by channel (with several nodes, every node's)", body = TenWorkers),
        (status = 401, description = "No key", body = TenError),
        (status = 503, description = "Several nodes: the database cannot be read", body = TenError),
    ))]
fn list() {}

#[utoipa::path(get, path = "/graphs", tag = "supervisor", summary = "The graphs a worker can be started with",
    responses(
        (status = 200, description = "The graphs", body = TenGraphs),
        (status = 401, description = "No key", body = TenError),
    ))]
fn graphs() {}

#[utoipa::path(post, path = "/token/generate", tag = "supervisor",
    summary = "An Agora token for a channel (TEN's route)",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "The token", body = TenToken),
        (status = 400, description = "A bad body, channel or uid (10000, 10004)", body = TenError),
        (status = 401, description = "No key", body = TenError),
        (status = 413, description = "The body is too large", body = TenError),
        (status = 503, description = "No AGORA_APP_ID set (10005)", body = TenError),
    ))]
fn token_generate() {}

// ------------------------------------------------------------------ ops

#[utoipa::path(get, path = "/ops/workers/stream", tag = "ops",
    summary = "Live worker feed (SSE): snapshot, then worker.started / changed / restarted / gone",
    params(("token" = Option<String>, Query, description = "The key, for EventSource clients")),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 401, description = "No key", body = TenError),
    ))]
fn ops_workers_stream() {}

#[utoipa::path(get, path = "/ops/workers/{channel}/logs", tag = "ops",
    summary = "A worker's last log lines; with `follow`, SSE with new lines as they are written",
    params(
        ("channel" = String, Path, description = "The worker's channel"),
        ("lines" = Option<u32>, Query, minimum = 1, maximum = 200, description = "How many lines (default 100)"),
        ("follow" = Option<String>, Query, description = "`true`, `1` or empty: an event stream"),
        ("token" = Option<String>, Query, description = "The key, for EventSource clients"),
    ),
    responses(
        (status = 200, description = "The lines (JSON), or an event stream with `follow`", body = TenLogLines),
        (status = 400, description = "A bad `lines` or `follow`", body = TenError),
        (status = 401, description = "No key", body = TenError),
        (status = 404, description = "No worker for the channel", body = TenError),
    ))]
fn ops_logs() {}

#[utoipa::path(get, path = "/ops/dispatch", tag = "ops",
    summary = "The dispatch queue: counts and oldest age of its open states",
    params(("token" = Option<String>, Query, description = "The key, as a query parameter")),
    responses(
        (status = 200, description = "The queue now", body = TenDispatch),
        (status = 401, description = "No key", body = TenError),
    ))]
fn ops_dispatch() {}

// ------------------------------------------------------------------ meta

#[utoipa::path(get, path = "/metrics", tag = "meta",
    summary = "Prometheus metrics (OpenMetrics text)",
    responses(
        (status = 200, description = "The metrics", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        (status = 401, description = "No key", body = TenError),
    ))]
fn metrics() {}

#[utoipa::path(get, path = "/openapi.json", tag = "meta", summary = "This document (public)",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
fn openapi_json() {}

#[utoipa::path(get, path = "/docs", tag = "meta", summary = "A page that renders this document (public)",
    responses((status = 200, description = "HTML", content_type = "text/html", body = String)))]
fn docs() {}

#[utoipa::path(get, path = "/console", tag = "meta", summary = "The web console (public: it holds no data)",
    responses((status = 200, description = "HTML", content_type = "text/html", body = String)))]
fn console() {}

#[utoipa::path(get, path = "/console/{file}", tag = "meta", summary = "A file of the web console or of the docs page",
    params(("file" = String, Path, description = "A file name such as `app.js`")),
    responses(
        (status = 200, description = "The file", content_type = "text/javascript", body = String),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 404, description = "No such file", body = TenError),
    ))]
fn console_file() {}

// ------------------------------------------------------------------ /api/v1

#[utoipa::path(get, path = "/api/v1/health", tag = "api", operation_id = "api_health",
    summary = "Health (public)",
    responses((status = 200, description = "Up", body = ApiHealth)))]
fn api_health() {}

#[utoipa::path(get, path = "/api/v1/config", tag = "api", summary = "Agents, models and dispatch settings",
    responses(
        (status = 200, description = "The configuration (never a secret)", body = ApiConfig),
        (status = 401, description = "No key", body = ApiErrorBody),
    ))]
fn api_config() {}

#[utoipa::path(get, path = "/api/v1/events/stream", tag = "api",
    summary = "Every event (SSE), replayed from a cursor or Last-Event-ID, then live",
    params(
        ("cursor" = Option<String>, Query, description = "Replay after this event id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Replay page size"),
        ("ephemeral" = Option<bool>, Query, description = "`false`: leave out typing and streaming chunks"),
        ("token" = Option<String>, Query, description = "The key, for EventSource clients"),
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad parameter", body = ApiErrorBody),
        (status = 401, description = "No key", body = ApiErrorBody),
    ))]
fn api_events_stream() {}

#[utoipa::path(post, path = "/api/v1/chats", tag = "api", summary = "Create a chat",
    request_body = NewChat,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe creation")),
    responses(
        (status = 201, description = "Created", body = Chat),
        (status = 400, description = "Invalid", body = ApiErrorBody),
        (status = 401, description = "No key", body = ApiErrorBody),
        (status = 409, description = "The Idempotency-Key was used with another body", body = ApiErrorBody),
        (status = 413, description = "Too large", body = ApiErrorBody),
        (status = 429, description = "Write rate limit", body = ApiErrorBody),
    ))]
fn chats_create() {}

#[utoipa::path(get, path = "/api/v1/chats", tag = "api", summary = "List chats, newest first",
    params(
        ("cursor" = Option<String>, Query, description = "From a previous page's cursor.next"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100),
        ("archived" = Option<bool>, Query),
        ("tag" = Option<String>, Query),
        ("agentId" = Option<String>, Query),
        ("query" = Option<String>, Query, description = "Search in titles"),
    ),
    responses(
        (status = 200, description = "A page", body = ChatPage),
        (status = 400, description = "A bad parameter", body = ApiErrorBody),
        (status = 401, description = "No key", body = ApiErrorBody),
    ))]
fn chats_list() {}

#[utoipa::path(get, path = "/api/v1/chats/pending-summary", tag = "api", summary = "Pending interactive requests over every chat",
    params(("archived" = Option<bool>, Query)),
    responses(
        (status = 200, description = "The count", body = PendingSummary),
        (status = 400, description = "A bad parameter", body = ApiErrorBody),
        (status = 401, description = "No key", body = ApiErrorBody),
    ))]
fn chats_pending_summary() {}

#[utoipa::path(get, path = "/api/v1/chats/unread-summary", tag = "api", summary = "Unread messages over every chat",
    params(("archived" = Option<bool>, Query)),
    responses(
        (status = 200, description = "The counts", body = UnreadSummary),
        (status = 400, description = "A bad parameter", body = ApiErrorBody),
        (status = 401, description = "No key", body = ApiErrorBody),
    ))]
fn chats_unread_summary() {}

#[utoipa::path(get, path = "/api/v1/chats/{id}", tag = "api", summary = "A chat",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The chat", body = Chat),
        (status = 401, description = "No key", body = ApiErrorBody),
        (status = 404, description = "No such chat", body = ApiErrorBody),
    ))]
fn chats_get() {}

#[utoipa::path(patch, path = "/api/v1/chats/{id}", tag = "api", summary = "Change a chat",
    params(("id" = String, Path)),
    request_body = ChatPatch,
    responses(
        (status = 200, description = "The chat", body = Chat),
        (status = 400, description = "Invalid", body = ApiErrorBody),
        (status = 401, description = "No key", body = ApiErrorBody),
        (status = 404, description = "No such chat", body = ApiErrorBody),
        (status = 413, description = "Too large", body = ApiErrorBody),
        (status = 429, description = "Write rate limit", body = ApiErrorBody),
    ))]
fn chats_patch() {}

macro_rules! chat_flag {
    ($name:ident, $path:literal, $summary:literal) => {
        #[utoipa::path(post, path = $path, tag = "api", summary = $summary,
                    params(("id" = String, Path)),
                    responses(
                        (status = 200, description = "Done", body = OkTrue),
                        (status = 401, description = "No key", body = ApiErrorBody),
                        (status = 404, description = "No such chat", body = ApiErrorBody),
                        (status = 429, description = "Write rate limit", body = ApiErrorBody),
                    ))]
        fn $name() {}
    };
}
chat_flag!(
    chats_archive,
    "/api/v1/chats/{id}/archive",
    "Archive a chat"
);
chat_flag!(
    chats_unarchive,
    "/api/v1/chats/{id}/unarchive",
    "Unarchive a chat"
);
chat_flag!(
    chats_mark_read,
    "/api/v1/chats/{id}/mark-read",
    "Mark a chat read"
);
chat_flag!(
    chats_mark_unread,
    "/api/v1/chats/{id}/mark-unread",
    "Mark a chat unread"
);

#[utoipa::path(post, path = "/api/v1/chats/{id}/messages", tag = "api",
    summary = "Post a message (a user's message is dispatched to the chat's agent)",
    params(("id" = String, Path)),
    request_body = NewMessage,
    responses(
        (status = 201, description = "Created", body = Message),
        (status = 400, description = "Invalid", body = ApiErrorBody),
        (status = 401, description = "No key", body = ApiErrorBody),
        (status = 404, description = "No such chat", body = ApiErrorBody),
        (status = 413, description = "Too large", body = ApiErrorBody),
        (status = 429, description = "Write rate limit", body = ApiErrorBody),
    ))]
fn messages_create() {}

#[utoipa::path(get, path = "/api/v1/chats/{id}/messages", tag = "api", summary = "A chat's messages, newest first",
    params(
        ("id" = String, Path),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200),
        ("cursor" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "A page", body = MessagePage),
        (status = 400, description = "A bad parameter", body = ApiErrorBody),
        (status = 401, description = "No key", body = ApiErrorBody),
        (status = 404, description = "No such chat", body = ApiErrorBody),
    ))]
fn messages_list() {}

#[utoipa::path(post, path = "/api/v1/chats/{id}/messages/cancel-streaming", tag = "api",
    summary = "Cancel every streaming message of a chat",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The cancelled messages", body = CancelledMessages),
        (status = 401, description = "No key", body = ApiErrorBody),
        (status = 404, description = "No such chat", body = ApiErrorBody),
        (status = 429, description = "Write rate limit", body = ApiErrorBody),
    ))]
fn messages_cancel_streaming() {}

#[utoipa::path(post, path = "/api/v1/chats/{id}/typing", tag = "api", summary = "An agent is typing (ephemeral event)",
    params(("id" = String, Path)),
    request_body = Typing,
    responses(
        (status = 204, description = "Announced"),
        (status = 400, description = "Invalid", body = ApiErrorBody),
        (status = 401, description = "No key", body = ApiErrorBody),
        (status = 404, description = "No such chat", body = ApiErrorBody),
        (status = 429, description = "Write rate limit", body = ApiErrorBody),
    ))]
fn chats_typing() {}

#[utoipa::path(post, path = "/api/v1/chats/{id}/user-typing", tag = "api",
    summary = "The user is typing (holds a batching window open)",
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Noted"),
        (status = 401, description = "No key", body = ApiErrorBody),
        (status = 404, description = "No such chat", body = ApiErrorBody),
        (status = 429, description = "Write rate limit", body = ApiErrorBody),
    ))]
fn chats_user_typing() {}

#[utoipa::path(post, path = "/api/v1/chats/{id}/requests", tag = "api", summary = "Ask the user (an interactive request)",
    params(
        ("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header),
    ),
    request_body = NewRequest,
    responses(
        (status = 201, description = "Created", body = InteractiveRequest),
        (status = 400, description = "Invalid", body = ApiErrorBody),
        (status = 401, description = "No key", body = ApiErrorBody),
        (status = 404, description = "No such chat", body = ApiErrorBody),
        (status = 409, description = "The Idempotency-Key was used with another body", body = ApiErrorBody),
        (status = 413, description = "Too large", body = ApiErrorBody),
        (status = 429, description = "Write rate limit", body = ApiErrorBody),
    ))]
fn requests_create() {}

#[utoipa::path(get, path = "/api/v1/chats/{id}/requests", tag = "api", summary = "A chat's interactive requests",
    params(
        ("id" = String, Path),
        ("status" = Option<String>, Query, description = "`pending` (default), `resolved`, `cancelled` or `all`"),
    ),
    responses(
        (status = 200, description = "The requests", body = RequestList),
        (status = 400, description = "A bad status", body = ApiErrorBody),
        (status = 401, description = "No key", body = ApiErrorBody),
        (status = 404, description = "No such chat", body = ApiErrorBody),
    ))]
fn requests_list() {}

macro_rules! message_op {
    ($name:ident, $path:literal, $summary:literal $(, $body:ty)?) => {
        #[utoipa::path(post, path = $path, tag = "api", summary = $summary,
            params(("id" = String, Path, description = "The message's id")),
            $(request_body = $body,)?
            responses(
                (status = 200, description = "The message", body = Message),
                (status = 400, description = "Invalid", body = ApiErrorBody),
                (status = 401, description = "No key", body = ApiErrorBody),
                (status = 404, description = "No such message", body = ApiErrorBody),
                (status = 409, description = "The message is not streaming", body = ApiErrorBody),
                (status = 413, description = "Too large", body = ApiErrorBody),
                (status = 429, description = "Write rate limit", body = ApiErrorBody),
            ))]
        fn $name() {}
    };
}
message_op!(
    messages_chunk,
    "/api/v1/messages/{id}/chunks",
    "Append to a streaming message",
    Chunk
);
message_op!(
    messages_complete,
    "/api/v1/messages/{id}/complete",
    "Finish a streaming message",
    Complete
);
message_op!(
    messages_cancel,
    "/api/v1/messages/{id}/cancel",
    "Cancel a streaming message"
);

macro_rules! request_op {
    ($name:ident, $method:ident, $path:literal, $summary:literal $(, $body:ty)?) => {
        #[utoipa::path($method, path = $path, tag = "api", summary = $summary,
            params(("id" = String, Path, description = "The request's id")),
            $(request_body = $body,)?
            responses(
                (status = 200, description = "The request", body = InteractiveRequest),
                (status = 400, description = "Invalid", body = ApiErrorBody),
                (status = 401, description = "No key", body = ApiErrorBody),
                (status = 404, description = "No such request", body = ApiErrorBody),
                (status = 409, description = "The request is no longer pending", body = ApiErrorBody),
                (status = 413, description = "Too large", body = ApiErrorBody),
                (status = 429, description = "Write rate limit", body = ApiErrorBody),
            ))]
        fn $name() {}
    };
}
request_op!(
    requests_patch,
    patch,
    "/api/v1/requests/{id}",
    "Change a pending request",
    RequestPatch
);
request_op!(
    requests_resolve,
    post,
    "/api/v1/requests/{id}/resolve",
    "Answer a request (the body depends on its type)",
    Object
);
request_op!(
    requests_cancel,
    post,
    "/api/v1/requests/{id}/cancel",
    "Cancel a request"
);

#[utoipa::path(post, path = "/api/v1/dispatch/claim", tag = "api",
    summary = "Claim one batch of work (long poll up to waitMs)",
    request_body = ClaimRequest,
    responses(
        (status = 200, description = "A batch, leased", body = Batch),
        (status = 204, description = "Nothing came in time"),
        (status = 400, description = "Invalid", body = ApiErrorBody),
        (status = 401, description = "No key", body = ApiErrorBody),
        (status = 429, description = "Write rate limit", body = ApiErrorBody),
    ))]
fn dispatch_claim() {}

#[utoipa::path(post, path = "/api/v1/dispatch/claim-many", tag = "api",
    summary = "Claim up to `limit` batches (long poll up to waitMs)",
    request_body = ClaimRequest,
    responses(
        (status = 200, description = "Batches, leased", body = Batches),
        (status = 204, description = "Nothing came in time"),
        (status = 400, description = "Invalid", body = ApiErrorBody),
        (status = 401, description = "No key", body = ApiErrorBody),
        (status = 429, description = "Write rate limit", body = ApiErrorBody),
    ))]
fn dispatch_claim_many() {}

macro_rules! dispatch_op {
    ($name:ident, $path:literal, $summary:literal, $body:ty) => {
        #[utoipa::path(post, path = $path, tag = "api", summary = $summary,
            params(("id" = String, Path, description = "The batch's id")),
            request_body = $body,
            responses(
                (status = 204, description = "Done"),
                (status = 400, description = "Invalid", body = ApiErrorBody),
                (status = 401, description = "No key", body = ApiErrorBody),
                (status = 404, description = "No such batch", body = ApiErrorBody),
                (status = 409, description = "The lease is not this worker's, or has ended", body = ApiErrorBody),
                (status = 413, description = "Too large", body = ApiErrorBody),
                (status = 429, description = "Write rate limit", body = ApiErrorBody),
            ))]
        fn $name() {}
    };
}
dispatch_op!(
    dispatch_heartbeat,
    "/api/v1/dispatch/{id}/heartbeat",
    "Extend a lease",
    Heartbeat
);
dispatch_op!(
    dispatch_complete,
    "/api/v1/dispatch/{id}/complete",
    "A batch was answered",
    WorkerOnly
);
dispatch_op!(
    dispatch_fail,
    "/api/v1/dispatch/{id}/fail",
    "A batch failed (retried, or failed for good)",
    Fail
);

// ------------------------------------------------------------------ chat API (/agents, /teams)

#[utoipa::path(post, path = "/agents/{id}/chat", tag = "chat",
    summary = "Say something to an agent (started on demand) and get its answer",
    params(("id" = String, Path, description = "The agent (a graph)")),
    request_body = AgentChatRequest,
    responses(
        (status = 200, description = "The answer", body = AgentChatReply),
        (status = 400, description = "Invalid", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such agent or conversation", body = FdErrorBody),
        (status = 429, description = "The agent's rate limit", body = FdErrorBody),
        (status = 502, description = "The agent failed", body = FdErrorBody),
        (status = 503, description = "The agent is unavailable", body = FdErrorBody),
        (status = 504, description = "No answer in time", body = FdErrorBody),
    ))]
fn agents_chat() {}

#[utoipa::path(post, path = "/agents/{id}/chat/stream", tag = "chat",
    summary = "The same, answered as SSE pieces (`text`, then `done` or `error`)",
    params(("id" = String, Path)),
    request_body = AgentChatRequest,
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such agent or conversation", body = FdErrorBody),
        (status = 429, description = "The agent's rate limit", body = FdErrorBody),
    ))]
fn agents_chat_stream() {}

#[utoipa::path(get, path = "/agents/{id}/history", tag = "chat", summary = "A conversation's messages",
    params(
        ("id" = String, Path),
        ("conversation_id" = Option<String>, Query, description = "Default: the agent's default conversation"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200),
    ),
    responses(
        (status = 200, description = "The messages", body = History),
        (status = 400, description = "Invalid", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such agent or conversation", body = FdErrorBody),
    ))]
fn agents_history() {}

#[utoipa::path(get, path = "/agents/{id}/conversations", tag = "chat", summary = "An agent's conversations",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The conversations", body = AgentConversations),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such agent", body = FdErrorBody),
    ))]
fn agents_conversations() {}

#[utoipa::path(post, path = "/agents/{id}/conversations", tag = "chat", summary = "Start a new conversation with an agent",
    params(("id" = String, Path)),
    request_body = NewAgentConversation,
    responses(
        (status = 201, description = "Created", body = AgentConversation),
        (status = 400, description = "Invalid", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such agent", body = FdErrorBody),
    ))]
fn agents_new_conversation() {}

#[utoipa::path(put, path = "/agents/{id}/conversations/{conv}", tag = "chat", summary = "Rename a conversation",
    params(("id" = String, Path), ("conv" = String, Path)),
    request_body = RenameConversation,
    responses(
        (status = 200, description = "Renamed", body = AgentConversation),
        (status = 400, description = "Invalid", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such agent or conversation", body = FdErrorBody),
    ))]
fn agents_rename_conversation() {}

#[utoipa::path(delete, path = "/agents/{id}/conversations/{conv}", tag = "chat", summary = "Delete a conversation",
    params(("id" = String, Path), ("conv" = String, Path)),
    responses(
        (status = 200, description = "Deleted", body = DeletedConversation),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such agent or conversation", body = FdErrorBody),
    ))]
fn agents_delete_conversation() {}

#[utoipa::path(get, path = "/agents/{id}/inbox", tag = "chat", summary = "An agent's unread answers",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The unread answers", body = Inbox),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such agent", body = FdErrorBody),
    ))]
fn agents_inbox() {}

#[utoipa::path(post, path = "/agents/{id}/mark-read", tag = "chat", summary = "Mark answers read",
    params(("id" = String, Path)),
    request_body = MarkReadRequest,
    responses(
        (status = 200, description = "Marked", body = Marked),
        (status = 400, description = "Invalid", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such agent or conversation", body = FdErrorBody),
    ))]
fn agents_mark_read() {}

#[utoipa::path(post, path = "/teams/{id}/chat", tag = "chat", summary = "Ask every member of a team",
    params(("id" = String, Path, description = "The team")),
    request_body = TeamChatRequest,
    responses(
        (status = 200, description = "The members' answers", body = TeamReply),
        (status = 400, description = "Invalid", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such team", body = FdErrorBody),
        (status = 503, description = "No member answered", body = FdErrorBody),
    ))]
fn teams_chat() {}

// ------------------------------------------------------------------ agent messages API (/v1)

#[utoipa::path(post, path = "/v1/agents/{agent_id}/messages", tag = "agent-messages",
    summary = "Send an agent a message and get its answer",
    params(("agent_id" = String, Path)),
    request_body = V1MessageRequest,
    responses(
        (status = 200, description = "The answer", body = V1MessageReply),
        (status = 400, description = "Invalid", body = V1ErrorBody),
        (status = 401, description = "No key", body = V1ErrorBody),
        (status = 404, description = "No such agent", body = V1ErrorBody),
        (status = 429, description = "The agent's rate or concurrency limit", body = V1ErrorBody),
        (status = 502, description = "The agent failed", body = V1ErrorBody),
        (status = 503, description = "The agent is unavailable", body = V1ErrorBody),
        (status = 504, description = "No answer in time", body = V1ErrorBody),
    ))]
fn v1_messages() {}

#[utoipa::path(post, path = "/v1/agents/{agent_id}/messages/stream", tag = "agent-messages",
    summary = "The same, answered as SSE (`token` pieces, then `done` or `error`)",
    params(("agent_id" = String, Path)),
    request_body = V1MessageRequest,
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid", body = V1ErrorBody),
        (status = 401, description = "No key", body = V1ErrorBody),
        (status = 404, description = "No such agent", body = V1ErrorBody),
        (status = 429, description = "The agent's rate or concurrency limit", body = V1ErrorBody),
    ))]
fn v1_messages_stream() {}

#[utoipa::path(get, path = "/v1/agents/{agent_id}/messages/stream", tag = "agent-messages",
    operation_id = "v1_messages_stream_get",
    summary = "The same stream for EventSource clients: the fields come from the query",
    params(
        ("agent_id" = String, Path),
        ("text" = String, Query),
        ("userId" = Option<String>, Query),
        ("roomId" = Option<String>, Query),
        ("token" = Option<String>, Query, description = "The key, for EventSource clients"),
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid", body = V1ErrorBody),
        (status = 401, description = "No key", body = V1ErrorBody),
        (status = 404, description = "No such agent", body = V1ErrorBody),
        (status = 429, description = "The agent's rate or concurrency limit", body = V1ErrorBody),
    ))]
fn v1_messages_stream_get() {}

// ------------------------------------------------------------------ conversations API

#[utoipa::path(post, path = "/conversations", tag = "conversations", summary = "Create a conversation",
    request_body = NewConversation,
    responses(
        (status = 201, description = "Created", body = CreatedConversation),
        (status = 400, description = "Invalid", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
    ))]
fn conversations_create() {}

#[utoipa::path(get, path = "/conversations", tag = "conversations", summary = "List conversations",
    params(("participant" = Option<String>, Query, description = "Only those with this participant (and its unread count)")),
    responses(
        (status = 200, description = "The conversations", body = Vec<Conversation>),
        (status = 401, description = "No key", body = FdErrorBody),
    ))]
fn conversations_list() {}

#[utoipa::path(get, path = "/conversations/{id}", tag = "conversations", summary = "A conversation",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The conversation", body = Conversation),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such conversation", body = FdErrorBody),
    ))]
fn conversations_get() {}

#[utoipa::path(post, path = "/conversations/{id}/bots", tag = "conversations", summary = "Switch an agent (bot) on or off in a conversation",
    params(("id" = String, Path)),
    request_body = SetBot,
    responses(
        (status = 200, description = "Switched", body = BotSet),
        (status = 400, description = "Invalid", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such conversation or agent", body = FdErrorBody),
    ))]
fn conversations_set_bot() {}

#[utoipa::path(get, path = "/conversations/{id}/bots", tag = "conversations", summary = "A conversation's bots",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The bots", body = Bots),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such conversation", body = FdErrorBody),
    ))]
fn conversations_bots() {}

#[utoipa::path(post, path = "/messages/{id}", tag = "conversations",
    summary = "Post to a conversation (its enabled bots answer)",
    params(("id" = String, Path, description = "The conversation")),
    request_body = NewConvMessage,
    responses(
        (status = 201, description = "Created", body = ConvMessage),
        (status = 400, description = "Invalid", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such conversation", body = FdErrorBody),
    ))]
fn conv_messages_post() {}

#[utoipa::path(get, path = "/messages/{id}", tag = "conversations", summary = "A conversation's messages, oldest first",
    params(
        ("id" = String, Path, description = "The conversation"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200),
        ("before" = Option<String>, Query, description = "A message id: the page before it"),
    ),
    responses(
        (status = 200, description = "The messages (X-Has-More, X-Next-Before)", body = Vec<ConvMessage>),
        (status = 400, description = "Invalid", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such conversation", body = FdErrorBody),
    ))]
fn conv_messages_get() {}

#[utoipa::path(post, path = "/messages/{id}/read", tag = "conversations", summary = "Mark a conversation read",
    params(("id" = String, Path, description = "The conversation")),
    request_body = ConvMarkRead,
    responses(
        (status = 200, description = "Marked", body = ConvMarked),
        (status = 400, description = "Invalid", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such conversation", body = FdErrorBody),
    ))]
fn conv_messages_read() {}

#[utoipa::path(get, path = "/messages/{id}/deliverylogs", tag = "conversations", summary = "How a conversation's messages reached its bots",
    params(("id" = String, Path, description = "The conversation")),
    responses(
        (status = 200, description = "The log", body = DeliveryLogs),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such conversation", body = FdErrorBody),
    ))]
fn conv_delivery_logs() {}

#[utoipa::path(get, path = "/stream/{id}", tag = "conversations", summary = "One conversation's events (SSE)",
    params(
        ("id" = String, Path, description = "The conversation"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "An unknown Last-Event-ID", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
        (status = 404, description = "No such conversation", body = FdErrorBody),
    ))]
fn conv_stream() {}

#[utoipa::path(get, path = "/events", tag = "conversations",
    summary = "Every conversation's events: a JSON page, or SSE with Accept: text/event-stream",
    params(
        ("after" = Option<i64>, Query, description = "Events after this seq"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500),
    ),
    responses(
        (status = 200, description = "A page (or an event stream)", body = ConvEvents),
        (status = 400, description = "Invalid", body = FdErrorBody),
        (status = 401, description = "No key", body = FdErrorBody),
    ))]
fn conv_events() {}

/// The document: every operation above, and the schemas they name.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "agentd",
        description = "An agent process supervisor: TEN-compatible supervisor routes, an \
                       Opengram-compatible chat and dispatch API under /api/v1, chat front doors \
                       (/agents and /teams, /v1/agents, /conversations), operator routes under \
                       /ops, and metrics. Each family answers errors in its own envelope.",
        license(name = "Apache-2.0")
    ),
    paths(
        root, health, start, stop, ping, list, graphs, token_generate,
        ops_workers_stream, ops_logs, ops_dispatch,
        metrics, openapi_json, docs, console, console_file,
        api_health, api_config, api_events_stream,
        chats_create, chats_list, chats_pending_summary, chats_unread_summary, chats_get,
        chats_patch, chats_archive, chats_unarchive, chats_mark_read, chats_mark_unread,
        messages_create, messages_list, messages_cancel_streaming, chats_typing,
        chats_user_typing, requests_create, requests_list, messages_chunk, messages_complete,
        messages_cancel, requests_patch, requests_resolve, requests_cancel,
        dispatch_claim, dispatch_claim_many, dispatch_heartbeat, dispatch_complete, dispatch_fail,
        agents_chat, agents_chat_stream, agents_history, agents_conversations,
        agents_new_conversation, agents_rename_conversation, agents_delete_conversation,
        agents_inbox, agents_mark_read, teams_chat,
        v1_messages, v1_messages_stream, v1_messages_stream_get,
        conversations_create, conversations_list, conversations_get, conversations_set_bot,
        conversations_bots, conv_messages_post, conv_messages_get, conv_messages_read,
        conv_delivery_logs, conv_stream, conv_events,
    ),
    tags(
        (name = "supervisor", description = "TEN-compatible: start, stop and ping workers ({code, msg, data} envelope)"),
        (name = "ops", description = "agentd's own operator routes (the console is built on them)"),
        (name = "api", description = "Opengram-compatible chat and dispatch API ({\"error\": {...}} envelope)"),
        (name = "chat", description = "The chat API front door: /agents and /teams"),
        (name = "agent-messages", description = "The agent messages API front door ({success, data | error})"),
        (name = "conversations", description = "The conversations API front door"),
        (name = "meta", description = "Metrics, this document, its page and the console"),
    )
)]
pub struct ApiDoc;
