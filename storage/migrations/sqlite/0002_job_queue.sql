-- imagine schema version 2 (SQLite): the jobs' batch key, as PostgreSQL's step 2 adds it with the
-- shared queue (SQLite has no shared queue: its other columns and tables are PostgreSQL's alone).
-- Step 4 drops the column again: nothing ever set it.

ALTER TABLE jobs ADD COLUMN batch_key TEXT;
