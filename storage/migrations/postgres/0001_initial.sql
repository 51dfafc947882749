-- imagine PostgreSQL schema version 1: limits, blocked words, jobs and the usage ledger.
-- The same tables as the SQLite schema (storage/migrations/sqlite/0001_initial.sql), in PostgreSQL types.
-- Limit columns: NULL = not set here (fall through to the next level), -1 = unlimited.
-- Times are UNIX seconds (double precision), as the store's callers pass them.

CREATE TABLE guild_limits (
    guild_id         BIGINT PRIMARY KEY,
    images_per_hour  INTEGER CHECK (images_per_hour IS NULL OR images_per_hour >= -1),
    images_per_day   INTEGER CHECK (images_per_day IS NULL OR images_per_day >= -1),
    max_queued       INTEGER CHECK (max_queued IS NULL OR max_queued >= -1),
    cooldown_seconds DOUBLE PRECISION CHECK (cooldown_seconds IS NULL OR cooldown_seconds >= 0)
);

CREATE TABLE role_limits (
    guild_id         BIGINT NOT NULL,
    role_id          BIGINT NOT NULL,
    images_per_hour  INTEGER CHECK (images_per_hour IS NULL OR images_per_hour >= -1),
    images_per_day   INTEGER CHECK (images_per_day IS NULL OR images_per_day >= -1),
    max_queued       INTEGER CHECK (max_queued IS NULL OR max_queued >= -1),
    cooldown_seconds DOUBLE PRECISION CHECK (cooldown_seconds IS NULL OR cooldown_seconds >= 0),
    PRIMARY KEY (guild_id, role_id)
);

CREATE TABLE user_limits (
    guild_id         BIGINT NOT NULL,
    user_id          BIGINT NOT NULL,
    images_per_hour  INTEGER CHECK (images_per_hour IS NULL OR images_per_hour >= -1),
    images_per_day   INTEGER CHECK (images_per_day IS NULL OR images_per_day >= -1),
    max_queued       INTEGER CHECK (max_queued IS NULL OR max_queued >= -1),
    cooldown_seconds DOUBLE PRECISION CHECK (cooldown_seconds IS NULL OR cooldown_seconds >= 0),
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE blocked_words (
    guild_id BIGINT NOT NULL,
    phrase   TEXT   NOT NULL CHECK (phrase <> ''),
    PRIMARY KEY (guild_id, phrase)
);

CREATE TABLE jobs (
    job_id            TEXT    PRIMARY KEY,
    guild_id          BIGINT  NOT NULL,
    channel_id        BIGINT  NOT NULL,
    owner_id          BIGINT  NOT NULL,
    request_json      TEXT    NOT NULL,
    images            INTEGER NOT NULL CHECK (images > 0),
    state             TEXT    NOT NULL
                      CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    created_at        DOUBLE PRECISION NOT NULL,
    interaction_id    BIGINT,
    interaction_token TEXT,
    token_expires_at  DOUBLE PRECISION,
    parent_job_id     TEXT,
    parent_index      INTEGER,
    error             TEXT,
    seeds             BIGINT[] NOT NULL DEFAULT '{}',
    image_paths       TEXT[]   NOT NULL DEFAULT '{}',
    result_message_id BIGINT,
    result_channel_id BIGINT
);

-- max_queued: a member's queued/running jobs in one guild.
CREATE INDEX jobs_owner_state ON jobs (guild_id, owner_id, state);
-- restart: unfinished and undelivered jobs, oldest first; /queue per guild.
CREATE INDEX jobs_state_created ON jobs (state, created_at);
CREATE INDEX jobs_guild_state ON jobs (guild_id, state, created_at);

CREATE TABLE usage_ledger (
    id          BIGSERIAL PRIMARY KEY,
    guild_id    BIGINT  NOT NULL,
    user_id     BIGINT  NOT NULL,
    job_id      TEXT    NOT NULL UNIQUE REFERENCES jobs (job_id) ON DELETE CASCADE,
    images      INTEGER NOT NULL CHECK (images > 0),
    at          DOUBLE PRECISION NOT NULL,
    refunded    BOOLEAN NOT NULL DEFAULT FALSE,
    refunded_at DOUBLE PRECISION
);

-- the sliding windows and the cooldown: one member's spends in one guild by time.
CREATE INDEX usage_window ON usage_ledger (guild_id, user_id, at);
