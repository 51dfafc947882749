"""Everything the bot remembers across restarts: limits, usage, jobs, blocked words."""
