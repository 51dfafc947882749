-- imagine schema step "guild models": which of the bot's models (MODELS) a guild offers, set by its
-- Manage Server members in /server-defaults (on the guild's row, user_id 0): model names separated
-- by commas; NULL offers every model. The guild's default model is the existing `model` column.

ALTER TABLE prompt_settings ADD COLUMN offered_models TEXT;
