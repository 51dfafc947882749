"""A job's life from accepted to settled, apart from Discord: the runner, where jobs come from (an
in-process queue or claims on a shared one), and the small delivery interface `bot/` implements."""
