-- imagine PostgreSQL schema version 4: drop the columns nothing reads: the jobs' batch key (never set)
-- and when a job was last claimed (written, never read; the lease columns say who holds it and how long).

ALTER TABLE jobs
    DROP COLUMN batch_key,
    DROP COLUMN claimed_at;
