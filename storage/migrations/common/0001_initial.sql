-- imagine schema version 1: limits, blocked words, jobs and the usage ledger, for both dialects.
-- storage.schema writes each placeholder (a dollar sign and a word in braces) as the dialect spells it
-- (SQLite | PostgreSQL; storage.schema.SPELLINGS):
--   snowflake      a Discord id: INTEGER | BIGINT
--   seconds        UNIX seconds, as the store's callers pass them: REAL | DOUBLE PRECISION
--   without_rowid  SQLite's WITHOUT ROWID on tables keyed by their primary key | nothing
--   row_id         an id the database counts: INTEGER PRIMARY KEY | BIGSERIAL PRIMARY KEY
--   refunded_flag  the ledger's yes/no `refunded`, no until set: INTEGER 0 or 1 | BOOLEAN
--   seed_list, path_list  the jobs' seeds and image paths: JSON text (seeds_json, image_paths_json)
--                  | arrays (seeds BIGINT[], image_paths TEXT[])
-- Limit columns: NULL = not set here (fall through to the next level), -1 = unlimited.

CREATE TABLE guild_limits (
    guild_id         ${snowflake} PRIMARY KEY,
    images_per_hour  INTEGER CHECK (images_per_hour IS NULL OR images_per_hour >= -1),
    images_per_day   INTEGER CHECK (images_per_day IS NULL OR images_per_day >= -1),
    max_queued       INTEGER CHECK (max_queued IS NULL OR max_queued >= -1),
    cooldown_seconds ${seconds} CHECK (cooldown_seconds IS NULL OR cooldown_seconds >= 0)
);

CREATE TABLE role_limits (
    guild_id         ${snowflake} NOT NULL,
    role_id          ${snowflake} NOT NULL,
    images_per_hour  INTEGER CHECK (images_per_hour IS NULL OR images_per_hour >= -1),
    images_per_day   INTEGER CHECK (images_per_day IS NULL OR images_per_day >= -1),
    max_queued       INTEGER CHECK (max_queued IS NULL OR max_queued >= -1),
    cooldown_seconds ${seconds} CHECK (cooldown_seconds IS NULL OR cooldown_seconds >= 0),
    PRIMARY KEY (guild_id, role_id)
)${without_rowid};

CREATE TABLE user_limits (
    guild_id         ${snowflake} NOT NULL,
    user_id          ${snowflake} NOT NULL,
    images_per_hour  INTEGER CHECK (images_per_hour IS NULL OR images_per_hour >= -1),
    images_per_day   INTEGER CHECK (images_per_day IS NULL OR images_per_day >= -1),
    max_queued       INTEGER CHECK (max_queued IS NULL OR max_queued >= -1),
    cooldown_seconds ${seconds} CHECK (cooldown_seconds IS NULL OR cooldown_seconds >= 0),
    PRIMARY KEY (guild_id, user_id)
)${without_rowid};

CREATE TABLE blocked_words (
    guild_id ${snowflake} NOT NULL,
    phrase   TEXT    NOT NULL CHECK (phrase <> ''),
    PRIMARY KEY (guild_id, phrase)
)${without_rowid};

CREATE TABLE jobs (
    job_id            TEXT    PRIMARY KEY,
    guild_id          ${snowflake} NOT NULL,
    channel_id        ${snowflake} NOT NULL,
    owner_id          ${snowflake} NOT NULL,
    request_json      TEXT    NOT NULL,
    images            INTEGER NOT NULL CHECK (images > 0),
    state             TEXT    NOT NULL
                      CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    created_at        ${seconds} NOT NULL,
    interaction_id    ${snowflake},
    interaction_token TEXT,
    token_expires_at  ${seconds},
    parent_job_id     TEXT,
    parent_index      INTEGER,
    error             TEXT,
    ${seed_list},
    ${path_list},
    result_message_id ${snowflake},
    result_channel_id ${snowflake}
);

-- max_queued: a member's queued/running jobs in one guild.
CREATE INDEX jobs_owner_state ON jobs (guild_id, owner_id, state);
-- restart: unfinished and undelivered jobs, oldest first; /queue per guild.
CREATE INDEX jobs_state_created ON jobs (state, created_at);
CREATE INDEX jobs_guild_state ON jobs (guild_id, state, created_at);

CREATE TABLE usage_ledger (
    id          ${row_id},
    guild_id    ${snowflake} NOT NULL,
    user_id     ${snowflake} NOT NULL,
    job_id      TEXT    NOT NULL UNIQUE REFERENCES jobs (job_id) ON DELETE CASCADE,
    images      INTEGER NOT NULL CHECK (images > 0),
    at          ${seconds} NOT NULL,
    refunded    ${refunded_flag},
    refunded_at ${seconds}
);

-- the sliding windows and the cooldown: one member's spends in one guild by time.
CREATE INDEX usage_window ON usage_ledger (guild_id, user_id, at);
