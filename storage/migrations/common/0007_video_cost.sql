-- imagine schema step "video cost": how many images of a member's quota one video (Animate) spends
-- in a guild, set by its Manage Server members in /server-defaults (on the guild's row, user_id 0);
-- NULL: the bot's default (VIDEO_COST).

ALTER TABLE prompt_settings ADD COLUMN video_cost INTEGER;
