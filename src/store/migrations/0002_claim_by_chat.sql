-- Scoped claims (`chatId`) look up a chat's claimable batches directly.
CREATE INDEX dispatch_batches_claim_chat ON dispatch_batches (chat_id, available_at, seq) WHERE status = 'pending';
