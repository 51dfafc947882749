-- imagine schema version 4 (SQLite): drop the jobs' batch key, which nothing ever set.
-- (ALTER TABLE … DROP COLUMN needs SQLite 3.35 or newer.)

ALTER TABLE jobs DROP COLUMN batch_key;
