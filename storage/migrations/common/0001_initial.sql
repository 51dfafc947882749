-- imagine schema version 1: limits, blocked words, jobs and the usage ledger.
-- Limit columns: NULL = not set here (fall through to the next level), -1 = unlimited.

CREATE TABLE guild_limits (
    guild_id         INTEGER PRIMARY KEY,
    images_per_hour  INTEGER CHECK (images_per_hour IS NULL OR images_per_hour >= -1),
    images_per_day   INTEGER CHECK (images_per_day IS NULL OR images_per_day >= -1),
    max_queued       INTEGER CHECK (max_queued IS NULL OR max_queued >= -1),
    cooldown_seconds REAL    CHECK (cooldown_seconds IS NULL OR cooldown_seconds >= 0)
);

CREATE TABLE role_limits (
    guild_id         INTEGER NOT NULL,
    role_id          INTEGER NOT NULL,
    images_per_hour  INTEGER CHECK (images_per_hour IS NULL OR images_per_hour >= -1),
    images_per_day   INTEGER CHECK (images_per_day IS NULL OR images_per_day >= -1),
    max_queued       INTEGER CHECK (max_queued IS NULL OR max_queued >= -1),
    cooldown_seconds REAL    CHECK (cooldown_seconds IS NULL OR cooldown_seconds >= 0),
    PRIMARY KEY (guild_id, role_id)
) WITHOUT ROWID;

CREATE TABLE user_limits (
    guild_id         INTEGER NOT NULL,
    user_id          INTEGER NOT NULL,
    images_per_hour  INTEGER CHECK (images_per_hour IS NULL OR images_per_hour >= -1),
    images_per_day   INTEGER CHECK (images_per_day IS NULL OR images_per_day >= -1),
    max_queued       INTEGER CHECK (max_queued IS NULL OR max_queued >= -1),
    cooldown_seconds REAL    CHECK (cooldown_seconds IS NULL OR cooldown_seconds >= 0),
    PRIMARY KEY (guild_id, user_id)
) WITHOUT ROWID;

CREATE TABLE blocked_words (
    guild_id INTEGER NOT NULL,
    phrase   TEXT    NOT NULL CHECK (phrase <> ''),
    PRIMARY KEY (guild_id, phrase)
) WITHOUT ROWID;

CREATE TABLE jobs (
    job_id            TEXT    PRIMARY KEY,
    guild_id          INTEGER NOT NULL,
    channel_id        INTEGER NOT NULL,
    owner_id          INTEGER NOT NULL,
    request_json      TEXT    NOT NULL,
    images            INTEGER NOT NULL CHECK (images > 0),
    state             TEXT    NOT NULL
                      CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    created_at        REAL    NOT NULL,
    interaction_id    INTEGER,
    interaction_token TEXT,
    token_expires_at  REAL,
    parent_job_id     TEXT,
    parent_index      INTEGER,
    error             TEXT,
    seeds_json        TEXT    NOT NULL DEFAULT '[]',
    image_paths_json  TEXT    NOT NULL DEFAULT '[]',
    result_message_id INTEGER,
    result_channel_id INTEGER
);

-- max_queued: a member's queued/running jobs in one guild.
CREATE INDEX jobs_owner_state ON jobs (guild_id, owner_id, state);
-- restart: unfinished and undelivered jobs, oldest first; /queue per guild.
CREATE INDEX jobs_state_created ON jobs (state, created_at);
CREATE INDEX jobs_guild_state ON jobs (guild_id, state, created_at);

CREATE TABLE usage_ledger (
    id          INTEGER PRIMARY KEY,
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    job_id      TEXT    NOT NULL UNIQUE REFERENCES jobs (job_id) ON DELETE CASCADE,
    images      INTEGER NOT NULL CHECK (images > 0),
    at          REAL    NOT NULL,
    refunded    INTEGER NOT NULL DEFAULT 0 CHECK (refunded IN (0, 1)),
    refunded_at REAL
);

-- the sliding windows and the cooldown: one member's spends in one guild by time.
CREATE INDEX usage_window ON usage_ledger (guild_id, user_id, at);
