-- imagine schema step "settings": members' and guilds' prompt defaults (/settings; user_id 0 holds the
-- guild's, set by Manage Server members) and members' personal macros (/prefer option).

CREATE TABLE prompt_settings (
    guild_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    remix BOOLEAN,
    image_count INTEGER,
    aspect TEXT,
    negative TEXT,
    sampler TEXT,
    suffix TEXT,
    model TEXT,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE prompt_macros (
    guild_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (guild_id, user_id, name)
);
