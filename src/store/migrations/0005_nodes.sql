-- Several nodes on one PostgreSQL: who is alive, and which node runs each channel's worker.
-- (Created on SQLite too, where they stay empty: one node has nothing to share.)
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    workers INTEGER NOT NULL DEFAULT 0,
    heartbeat_at INTEGER NOT NULL,
    started_at INTEGER NOT NULL
);
CREATE TABLE channel_owners (
    channel TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    -- Which start of the owner took it (its process and registry generation): a late release
    -- of an earlier worker of the channel never removes a later one's row.
    claim_id TEXT,
    worker_id TEXT,
    graph TEXT NOT NULL,
    -- The validated start request (no secrets: requests carry none), to start it again elsewhere.
    start_request TEXT NOT NULL,
    lease_until INTEGER NOT NULL,
    restarts INTEGER NOT NULL DEFAULT 0,
    started_at INTEGER NOT NULL
);
CREATE INDEX channel_owners_by_node ON channel_owners (node_id);
CREATE INDEX channel_owners_by_lease ON channel_owners (lease_until);
