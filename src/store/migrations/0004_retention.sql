-- Retention: the periodic pruner finds old rows by age without scanning whole tables.
CREATE INDEX events_by_age ON events (created_at);
CREATE INDEX fd_events_by_age ON fd_events (created_at);
CREATE INDEX dispatch_batches_finished ON dispatch_batches (completed_at) WHERE status IN ('completed', 'failed');
CREATE INDEX dispatch_inputs_done_by_age ON dispatch_inputs (created_at) WHERE state <> 'pending';
