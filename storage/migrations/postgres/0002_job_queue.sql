-- imagine PostgreSQL schema version 2: the jobs table becomes the shared queue of many bot processes.
-- A claimed job is `running` under a lease (who holds it, until when); a lease that runs out puts the
-- job back in the queue. `batch_key` groups jobs that can run in one batch.

ALTER TABLE jobs
    ADD COLUMN batch_key        TEXT,
    ADD COLUMN lease_owner      TEXT,
    ADD COLUMN lease_expires_at DOUBLE PRECISION,
    ADD COLUMN claimed_at       DOUBLE PRECISION;

-- Round-robin across owners (a member of a guild, as the in-process queue keys them): the owner
-- served least recently (or never) goes first. `last_served` is a number from one sequence, not a
-- clock, so processes on machines whose clocks differ still agree.
CREATE SEQUENCE queue_serve_seq;
CREATE TABLE queue_owners (
    guild_id    BIGINT NOT NULL,
    owner_id    BIGINT NOT NULL,
    last_served BIGINT NOT NULL,
    PRIMARY KEY (guild_id, owner_id)
);

-- claim_next scans queued jobs; reclaim_expired scans running ones by lease.
CREATE INDEX jobs_queued ON jobs (created_at) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
