//! The wire types of every API family, as the OpenAPI document describes them. Most handlers
//! build their answers as JSON in place (each family mimics a protocol field for field), so these
//! types describe those answers rather than produce them; the supervisor's own answer type
//! ([`StartedWorker`]) is used as it is. Tests hold the two together:
//! `tests/openapi.rs` checks real answers against these schemas, and schemathesis checks every
//! operation.
//!
//! `serde_json::Value` is "any JSON value"; `Object` is "any JSON object".

#![allow(dead_code)]

use serde_json::Value;
use utoipa::ToSchema;

pub use crate::supervisor::StartedWorker;

// ------------------------------------------------------------------ supervisor (TEN envelope)

/// TEN's envelope around an error: `code` is TEN's string code, `data` says more.
#[derive(ToSchema)]
pub struct TenError {
    /// `10000` bad parameters, `10001` too many workers, `10002` no such channel, `10003` the
    /// channel is taken, `10004` blank channel, `10100` graph or property problem, `10101` the
    /// worker did not start, `401` no key, `500` internal error, `404` no route.
    #[schema(example = "10000")]
    pub code: String,
    pub msg: String,
    pub data: TenErrorData,
}

/// What went wrong, and where TEN put the HTTP status.
#[derive(ToSchema)]
pub struct TenErrorData {
    pub status: u16,
    pub detail: String,
    /// The refused field, as a path (`properties.echo.prefix`).
    pub key: Option<String>,
    /// A dead worker's last output.
    pub output: Option<String>,
}

macro_rules! ten_ok {
    ($(#[$doc:meta])* $name:ident, $data:ty) => {
        $(#[$doc])*
        #[derive(ToSchema)]
        pub struct $name {
            /// Always `"0"`.
            #[schema(example = "0")]
            pub code: String,
            pub msg: String,
            pub data: $data,
        }
    };
}

ten_ok!(
    /// `/start`'s answer: the worker is up.
    TenStarted,
    StartedWorker
);
ten_ok!(
    /// `/stop`'s answer: the worker is gone, and how it ended.
    TenStopped,
    StoppedWorker
);
ten_ok!(
    /// `/ping`'s answer.
    TenPinged,
    Pinged
);
ten_ok!(
    /// `/list`'s answer.
    TenWorkers,
    Vec<WorkerEntry>
);
ten_ok!(
    /// `/graphs`' answer.
    TenGraphs,
    Vec<GraphEntry>
);
ten_ok!(
    /// `/health`'s answer (TEN's `data` is `null`; agentd says how workers are contained).
    TenHealth,
    Health
);
ten_ok!(
    /// A worker's recent log lines.
    TenLogLines,
    LogLines
);
ten_ok!(
    /// The dispatch queue now.
    TenDispatch,
    DispatchQueue
);

/// `/start`'s body (TEN's; unknown fields are ignored).
#[derive(ToSchema)]
pub struct StartRequest {
    /// Not blank, at most 128 bytes, no control characters.
    #[schema(min_length = 1, max_length = 128)]
    pub channel_name: String,
    /// A graph of `GET /graphs`.
    #[schema(min_length = 1, max_length = 128)]
    pub graph_name: String,
    #[schema(max_length = 128)]
    pub request_id: Option<String>,
    /// Per node name, a JSON Merge Patch of that node's `property`.
    pub properties: Option<Object>,
    /// Seconds without a ping before the worker is stopped; `-1` never; `0` or absent: the
    /// graph's or the server's default.
    #[schema(minimum = -1)]
    pub timeout: Option<i64>,
    #[schema(minimum = 0, maximum = 4294967295u64)]
    pub user_uid: Option<u64>,
    #[schema(minimum = 0, maximum = 4294967295u64)]
    pub bot_uid: Option<u64>,
    #[schema(max_length = 2048)]
    pub token: Option<String>,
}

ten_ok!(
    /// `/token/generate`'s answer.
    TenToken,
    AgoraToken
);

/// `/token/generate`'s body (TEN's).
#[derive(ToSchema)]
pub struct TokenRequest {
    pub request_id: Option<String>,
    #[schema(min_length = 1)]
    pub channel_name: String,
    /// 0 (the default) to 4294967295.
    #[schema(minimum = 0, maximum = 4294967295u64)]
    pub uid: Option<u64>,
}

/// An Agora token for a channel and uid.
#[derive(ToSchema)]
pub struct AgoraToken {
    #[schema(rename = "appId")]
    pub app_id: String,
    /// AccessToken2 (RTC and RTM, one day), or the App ID when no certificate is set.
    pub token: String,
    pub channel_name: String,
    pub uid: u64,
}

/// `/stop` and `/ping`'s body.
#[derive(ToSchema)]
pub struct ChannelRequest {
    pub channel_name: String,
}

/// A stopped worker.
#[derive(ToSchema)]
pub struct StoppedWorker {
    pub channel_name: String,
    pub graph_name: Option<String>,
    /// `exited`, `terminated`, `killed` or `not_started`.
    pub how: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub took_ms: u64,
}

/// A pinged worker.
#[derive(ToSchema)]
pub struct Pinged {
    pub channel_name: String,
    /// Seconds; `-1` never.
    pub timeout: i64,
}

/// One worker of `/list`.
#[derive(ToSchema)]
pub struct WorkerEntry {
    pub channel_name: String,
    /// TEN's spelling of `channel_name`.
    #[schema(rename = "channelName")]
    pub channel_name_ten: String,
    pub graph_name: String,
    pub pid: Option<u32>,
    pub worker_id: Option<String>,
    /// `starting`, `running`, `stopping` or `restarting`.
    pub state: String,
    pub created_at: String,
    /// Seconds since the epoch (TEN's).
    #[schema(rename = "createTs")]
    pub create_ts: u64,
    /// `null` for a worker of another node (several nodes: only its node knows).
    pub last_ping_at: Option<String>,
    /// `null` for a worker of another node.
    pub timeout: Option<i64>,
    pub restarts: u32,
    pub request_id: Option<String>,
    pub chat_id: Option<String>,
    pub containment: Option<String>,
    pub cgroup: Option<String>,
    pub memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub memory_max: Option<u64>,
    pub memory_max_enforced_by: Option<String>,
    /// Several nodes on one PostgreSQL database: the id of the node that runs the worker
    /// (absent on a single node).
    pub node: Option<String>,
}

/// One graph of `/graphs`.
#[derive(ToSchema)]
pub struct GraphEntry {
    pub name: String,
    pub uuid: String,
    pub graph_id: String,
    pub auto_start: bool,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub source: String,
    pub from_property_json: bool,
}

/// How workers are contained here.
#[derive(ToSchema)]
pub struct Health {
    /// `cgroup` or `process-group`.
    pub containment: String,
    pub cgroup: Option<String>,
    pub containment_reason: Option<String>,
    pub limits: HealthLimits,
    /// This node, with several nodes on one PostgreSQL database; `null` on a single node.
    pub node: Option<HealthNode>,
}

/// This node among several.
#[derive(ToSchema)]
pub struct HealthNode {
    /// `NODE_ID`.
    pub id: String,
    /// Where the other nodes reach it (`NODE_ADDRESS`).
    pub address: String,
    /// It cannot renew its leases: its workers are stopped and `/health` answers 503.
    pub fenced: bool,
}

/// Who enforces the graphs' limits.
#[derive(ToSchema)]
pub struct HealthLimits {
    /// `kernel` or `agentd`.
    pub memory_max: String,
    /// `kernel` or `not enforced`.
    pub pids_max: String,
}

// ------------------------------------------------------------------ ops

/// A worker's recent log lines.
#[derive(ToSchema)]
pub struct LogLines {
    pub channel_name: String,
    pub lines: Vec<String>,
}

/// How many items wait in one state, and since when.
#[derive(ToSchema)]
pub struct QueueBucket {
    pub count: u64,
    pub oldest_at: Option<String>,
    pub oldest_age_ms: Option<i64>,
}

/// Pending batches, of which `delayed` wait out a retry delay.
#[derive(ToSchema)]
pub struct PendingBatches {
    pub count: u64,
    pub oldest_at: Option<String>,
    pub oldest_age_ms: Option<i64>,
    pub delayed: u64,
}

#[derive(ToSchema)]
pub struct QueueInputs {
    pub pending: QueueBucket,
}

#[derive(ToSchema)]
pub struct QueueBatches {
    pub pending: PendingBatches,
    pub leased: QueueBucket,
}

/// The dispatch queue's open states.
#[derive(ToSchema)]
pub struct DispatchQueue {
    pub mode: String,
    pub at: String,
    pub inputs: QueueInputs,
    pub batches: QueueBatches,
}

// ------------------------------------------------------------------ /api/v1

/// The `/api/v1` error envelope.
#[derive(ToSchema)]
pub struct ApiErrorBody {
    pub error: ApiErrorDetail,
}

#[derive(ToSchema)]
pub struct ApiErrorDetail {
    /// `VALIDATION_ERROR`, `UNAUTHORIZED`, `NOT_FOUND`, `CONFLICT`, `PAYLOAD_TOO_LARGE`,
    /// `RATE_LIMITED` or `INTERNAL_ERROR`.
    pub code: String,
    pub message: String,
    pub details: Option<Value>,
}

/// `GET /api/v1/health`.
#[derive(ToSchema)]
pub struct ApiHealth {
    pub service: String,
    pub status: String,
    pub version: String,
    /// Seconds since agentd started.
    pub uptime: u64,
}

/// `GET /api/v1/config`: agents, models and the dispatch settings (never a secret).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ApiConfig {
    pub app_name: String,
    pub agents: Vec<Object>,
    pub models: Vec<Object>,
    pub default_model_id_for_new_chats: String,
    pub title_max_chars: u32,
    pub security: Object,
    pub server: Object,
}

/// A chat.
#[derive(ToSchema)]
pub struct Chat {
    pub id: String,
    pub is_archived: bool,
    pub title: String,
    pub title_source: String,
    pub tags: Value,
    pub pinned: bool,
    pub agent_ids: Value,
    pub model_id: String,
    pub last_message_preview: Option<String>,
    pub last_message_role: Option<String>,
    pub pending_requests_count: i64,
    pub last_read_at: Option<String>,
    pub unread_count: i64,
    pub notifications_muted: bool,
    pub created_at: String,
    pub updated_at: String,
    pub last_message_at: String,
}

/// Where the next page starts.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Cursor {
    pub next: Option<String>,
    pub has_more: bool,
}

/// A page of chats.
#[derive(ToSchema)]
pub struct ChatPage {
    pub data: Vec<Chat>,
    pub cursor: Cursor,
}

/// `POST /api/v1/chats`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct NewChat {
    /// At least one agent (a graph of the catalog).
    #[schema(min_items = 1)]
    pub agent_ids: Vec<String>,
    pub model_id: Option<String>,
    pub title: Option<String>,
    pub tags: Option<Vec<String>>,
    pub first_message: Option<String>,
}

/// `PATCH /api/v1/chats/{id}`: at least one field.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ChatPatch {
    pub title: Option<String>,
    pub title_auto_renamed: Option<bool>,
    pub tags: Option<Vec<String>>,
    pub pinned: Option<bool>,
    pub model_id: Option<String>,
    pub notifications_muted: Option<bool>,
}

/// `{"ok": true}`.
#[derive(ToSchema)]
pub struct OkTrue {
    pub ok: bool,
}

/// Pending interactive requests over every chat.
#[derive(ToSchema)]
pub struct PendingSummary {
    pub pending_requests_total: i64,
}

/// Unread messages over every chat, and per agent.
#[derive(ToSchema)]
pub struct UnreadSummary {
    pub total_unread: i64,
    pub unread_by_agent: Value,
}

/// A message.
#[derive(ToSchema)]
pub struct Message {
    pub id: String,
    pub chat_id: String,
    /// `user`, `agent`, `system` or `tool`.
    pub role: String,
    pub sender_id: String,
    pub created_at: String,
    pub updated_at: String,
    pub content_final: Option<String>,
    pub content_partial: Option<String>,
    /// `none`, `streaming`, `complete` or `cancelled`.
    pub stream_state: String,
    pub model_id: Option<String>,
    pub trace: Value,
}

/// A page of messages.
#[derive(ToSchema)]
pub struct MessagePage {
    pub data: Vec<Message>,
    pub cursor: Cursor,
}

/// `POST /api/v1/chats/{id}/messages`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct NewMessage {
    /// `user`, `agent`, `system` or `tool`.
    #[schema(min_length = 1)]
    pub role: String,
    #[schema(min_length = 1)]
    pub sender_id: String,
    /// Required unless `streaming` (or `trace.mediaIds`); absent when streaming.
    pub content: Option<String>,
    pub streaming: Option<bool>,
    pub model_id: Option<String>,
    pub trace: Option<Object>,
}

/// `POST /api/v1/messages/{id}/chunks`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Chunk {
    #[schema(min_length = 1)]
    pub delta_text: String,
}

/// `POST /api/v1/messages/{id}/complete`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Complete {
    pub final_text: Option<String>,
    pub trace: Option<Object>,
}

/// The messages a cancel-streaming ended.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct CancelledMessages {
    pub cancelled_message_ids: Vec<String>,
}

/// `POST /api/v1/chats/{id}/typing`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Typing {
    #[schema(min_length = 1)]
    pub agent_id: String,
}

/// An interactive request (a question to the user).
#[derive(ToSchema)]
pub struct InteractiveRequest {
    pub id: String,
    pub chat_id: String,
    /// `choice`, `text_input` or `form`.
    #[schema(rename = "type")]
    pub kind: String,
    /// `pending`, `resolved` or `cancelled`.
    pub status: String,
    pub title: String,
    pub body: Option<String>,
    pub config: Value,
    pub created_at: String,
    pub resolved_at: Option<String>,
    pub resolved_by: Option<String>,
    pub resolution_payload: Value,
    pub trace: Value,
}

/// The interactive requests of a chat.
#[derive(ToSchema)]
pub struct RequestList {
    pub data: Vec<InteractiveRequest>,
}

/// `POST /api/v1/chats/{id}/requests`.
#[derive(ToSchema)]
pub struct NewRequest {
    /// `choice`, `text_input` or `form`.
    #[schema(rename = "type", min_length = 1)]
    pub kind: String,
    #[schema(min_length = 1)]
    pub title: String,
    pub body: Option<String>,
    /// The question's options or fields, by type.
    pub config: Object,
    pub trace: Option<Object>,
}

/// `PATCH /api/v1/requests/{id}`: at least one field.
#[derive(ToSchema)]
pub struct RequestPatch {
    pub title: Option<String>,
    pub body: Option<String>,
    pub config: Option<Object>,
    pub trace: Option<Object>,
}

/// `POST /api/v1/dispatch/claim` and `claim-many`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ClaimRequest {
    #[schema(min_length = 1)]
    pub worker_id: String,
    /// At least 1000 (smaller values are raised to it).
    #[schema(minimum = 0)]
    pub lease_ms: Option<u64>,
    /// How long to wait for work (long poll).
    #[schema(minimum = 0)]
    pub wait_ms: Option<u64>,
    /// claim-many: most batches (capped by `DISPATCH_CLAIM_MANY_LIMIT`).
    #[schema(minimum = 1)]
    pub limit: Option<u64>,
    pub chat_id: Option<String>,
    pub agent_id: Option<String>,
}

/// A claimed batch: the inputs, compiled, under a lease.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Batch {
    pub batch_id: String,
    pub chat_id: String,
    /// `user_batch`, or `request_batch` when every input is a resolved request.
    pub kind: String,
    /// The chat's first agent.
    pub agent_id_hint: Option<String>,
    pub compiled_content: String,
    pub items: Vec<Value>,
    pub attachments: Vec<Value>,
}

/// claim-many's answer.
#[derive(ToSchema)]
pub struct Batches {
    pub batches: Vec<Batch>,
}

/// `POST /api/v1/dispatch/{id}/heartbeat`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Heartbeat {
    #[schema(min_length = 1)]
    pub worker_id: String,
    #[schema(minimum = 0)]
    pub extend_ms: Option<u64>,
}

/// `POST /api/v1/dispatch/{id}/complete`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct WorkerOnly {
    #[schema(min_length = 1)]
    pub worker_id: String,
}

/// `POST /api/v1/dispatch/{id}/fail`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Fail {
    #[schema(min_length = 1)]
    pub worker_id: String,
    #[schema(min_length = 1)]
    pub reason: String,
    pub retryable: bool,
    #[schema(minimum = 0)]
    pub retry_delay_ms: Option<u64>,
}

// ------------------------------------------------------------------ front doors

/// The chat API's and the conversations API's error envelope.
#[derive(ToSchema)]
pub struct FdErrorBody {
    pub error: FdErrorDetail,
}

#[derive(ToSchema)]
pub struct FdErrorDetail {
    pub code: String,
    pub message: String,
    pub details: Option<Value>,
}

/// The agent messages API's error envelope.
#[derive(ToSchema)]
pub struct V1ErrorBody {
    /// Always `false`.
    pub success: bool,
    pub error: FdErrorDetail,
}

/// `POST /agents/{id}/chat` and `/chat/stream`.
#[derive(ToSchema)]
pub struct AgentChatRequest {
    #[schema(min_length = 1)]
    pub message: String,
    pub conversation_id: Option<String>,
}

/// The agent's answer.
#[derive(ToSchema)]
pub struct AgentChatReply {
    pub response: String,
    pub agent_id: String,
    pub agent_name: String,
    pub conversation_id: String,
    pub message_id: Option<String>,
    /// A question the agent asked instead of (or with) its answer.
    pub request: Option<Value>,
}

/// One message of a conversation's history.
#[derive(ToSchema)]
pub struct HistoryMessage {
    pub id: String,
    /// `user` or `assistant`.
    pub role: String,
    pub content: Option<String>,
    pub created_at: Value,
}

/// `GET /agents/{id}/history`.
#[derive(ToSchema)]
pub struct History {
    pub messages: Vec<HistoryMessage>,
    pub conversation_id: String,
}

/// One of an agent's conversations.
#[derive(ToSchema)]
pub struct AgentConversation {
    pub id: String,
    pub title: String,
    pub created_at: Value,
    pub updated_at: Value,
    pub unread_count: i64,
    pub last_message_preview: Option<String>,
}

/// `GET /agents/{id}/conversations`.
#[derive(ToSchema)]
pub struct AgentConversations {
    pub conversations: Vec<AgentConversation>,
}

/// `POST /agents/{id}/conversations`.
#[derive(ToSchema)]
pub struct NewAgentConversation {
    pub title: Option<String>,
}

/// `PUT /agents/{id}/conversations/{conv}`.
#[derive(ToSchema)]
pub struct RenameConversation {
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
}

/// `DELETE /agents/{id}/conversations/{conv}`.
#[derive(ToSchema)]
pub struct DeletedConversation {
    pub deleted: bool,
    pub id: String,
    pub messages_deleted: i64,
}

/// One unread answer of the inbox.
#[derive(ToSchema)]
pub struct InboxMessage {
    pub id: String,
    pub conversation_id: String,
    pub role: String,
    pub content: Option<String>,
    pub created_at: Value,
}

/// `GET /agents/{id}/inbox`.
#[derive(ToSchema)]
pub struct Inbox {
    pub unread: u64,
    pub messages: Vec<InboxMessage>,
}

/// `POST /agents/{id}/mark-read`.
#[derive(ToSchema)]
pub struct MarkReadRequest {
    pub conversation_id: Option<String>,
}

/// How many answers were marked read.
#[derive(ToSchema)]
pub struct Marked {
    pub ok: bool,
    pub marked: i64,
}

/// `POST /teams/{id}/chat`.
#[derive(ToSchema)]
pub struct TeamChatRequest {
    #[schema(min_length = 1)]
    pub message: String,
    /// `parallel` (the default) or `brainstorm`.
    pub mode: Option<String>,
}

/// A team's answers.
#[derive(ToSchema)]
pub struct TeamReply {
    pub responses: Vec<Object>,
    pub summary: Option<String>,
    pub mode: String,
    pub team_id: String,
}

/// `POST /v1/agents/{agent_id}/messages`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct V1MessageRequest {
    #[schema(min_length = 1)]
    pub text: String,
    pub user_id: Option<String>,
    pub room_id: Option<String>,
    pub context: Option<Object>,
    pub stream: Option<bool>,
}

/// The agent messages API's answer.
#[derive(ToSchema)]
pub struct V1MessageReply {
    /// Always `true`.
    pub success: bool,
    pub data: Object,
}

/// `POST /conversations`.
#[derive(ToSchema)]
pub struct NewConversation {
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
    pub participants: Option<Vec<String>>,
    pub metadata: Option<Object>,
}

/// A created conversation.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct CreatedConversation {
    pub id: String,
    pub title: String,
    pub created_at: String,
}

/// A conversation.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Conversation {
    pub id: String,
    pub title: String,
    pub participants: Value,
    pub metadata: Value,
    pub bots: Value,
    pub contract_id: Value,
    pub last_message: Value,
    pub created_at: String,
    pub updated_at: String,
    pub unread_count: Option<i64>,
}

/// `POST /conversations/{id}/bots`.
#[derive(ToSchema)]
pub struct SetBot {
    #[schema(min_length = 1, max_length = 200)]
    pub bot: String,
    pub enabled: bool,
}

/// A conversation's bot, switched.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct BotSet {
    pub conversation_id: String,
    pub bot: String,
    pub enabled: bool,
    pub bots: Value,
}

/// A conversation's bots.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Bots {
    pub conversation_id: String,
    pub bots: Vec<Object>,
}

/// `POST /messages/{id}`.
#[derive(ToSchema)]
pub struct NewConvMessage {
    #[schema(min_length = 1, max_length = 200)]
    pub from: String,
    pub to: Option<String>,
    /// `text` (the default), `image`, `file` or `ping`.
    #[schema(rename = "type")]
    pub kind: Option<String>,
    pub content: Option<String>,
    /// References (`{"url": ...}`), never uploads.
    pub attachments: Option<Vec<Object>>,
}

/// A message of a conversation.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ConvMessage {
    pub id: String,
    pub message_id: String,
    pub conversation_id: String,
    pub from: String,
    pub to: Option<String>,
    #[schema(rename = "type")]
    pub kind: String,
    pub content: String,
    pub attachments: Value,
    pub is_automated: bool,
    pub created_at: String,
    pub read_by: Value,
}

/// `POST /messages/{id}/read`.
#[derive(ToSchema)]
pub struct ConvMarkRead {
    pub participant: Option<String>,
}

/// How many messages were marked read.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ConvMarked {
    pub conversation_id: String,
    pub marked: i64,
}

/// A conversation's delivery log.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct DeliveryLogs {
    pub conversation_id: String,
    pub logs: Vec<Object>,
}

/// A page of the conversations feed.
#[derive(ToSchema)]
pub struct ConvEvents {
    pub events: Vec<Object>,
    pub next: Option<i64>,
}

/// Any JSON object.
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct Object(serde_json::Map<String, Value>);
