-- imagine PostgreSQL schema version 3: finding a job by its result message, partial refunds
-- (the same step as the SQLite schema's version 3).

-- Reactions on a result message: which job it carries (Store.job_by_message).
CREATE INDEX jobs_result_message ON jobs (result_message_id) WHERE result_message_id IS NOT NULL;

-- Part of a spend given back (flagged images not posted). The windows count images - refunded_images;
-- `refunded` stays the flag for "all of it given back", so refunded is true exactly when
-- refunded_images = images.
ALTER TABLE usage_ledger ADD COLUMN refunded_images INTEGER NOT NULL DEFAULT 0
    CHECK (refunded_images >= 0 AND refunded_images <= images);
UPDATE usage_ledger SET refunded_images = images WHERE refunded;
