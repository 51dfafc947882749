-- imagine schema version 3 (SQLite): finding a job by its result message, partial refunds.
-- Files written before the steps of both dialects shared one numbering have user_version 2 for steps
-- 2 and 3 together (one file then); storage.db renumbers them to 3 when it opens them.

-- Reactions on a result message: which job it carries (Store.job_by_message).
CREATE INDEX jobs_result_message ON jobs (result_message_id) WHERE result_message_id IS NOT NULL;

-- Part of a spend given back (flagged images not posted). The windows count images - refunded_images;
-- `refunded` stays the flag for "all of it given back", so refunded = 1 exactly when
-- refunded_images = images.
ALTER TABLE usage_ledger ADD COLUMN refunded_images INTEGER NOT NULL DEFAULT 0
    CHECK (refunded_images >= 0 AND refunded_images <= images);
UPDATE usage_ledger SET refunded_images = images WHERE refunded = 1;
