"""Posting to Discord for a job: the `Outbox` on discord.py, and progress-edit throttling."""
