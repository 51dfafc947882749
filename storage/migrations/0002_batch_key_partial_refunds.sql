-- imagine schema version 2: the job's batch key, finding a job by its result message, partial refunds.

-- Jobs with equal keys may share a batch (the same column as in the PostgreSQL schema).
ALTER TABLE jobs ADD COLUMN batch_key TEXT;

-- Reactions on a result message: which job it carries (Store.job_by_message).
CREATE INDEX jobs_result_message ON jobs (result_message_id) WHERE result_message_id IS NOT NULL;

-- Part of a spend given back (flagged images not posted). The windows count images - refunded_images;
-- `refunded` stays the flag for "all of it given back", so refunded = 1 exactly when
-- refunded_images = images.
ALTER TABLE usage_ledger ADD COLUMN refunded_images INTEGER NOT NULL DEFAULT 0
    CHECK (refunded_images >= 0 AND refunded_images <= images);
UPDATE usage_ledger SET refunded_images = images WHERE refunded = 1;
