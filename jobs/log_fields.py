"""The ids a job's log lines carry as fields (`extra=`), so JSON logs can be filtered by job, guild
or member without parsing messages."""

from __future__ import annotations

from storage.interface import JobRecord


def job_fields(job: JobRecord) -> dict[str, object]:
    """`log.info(..., extra=job_fields(job))`: `job_id`, `guild_id` and `member_id` on the record."""
    return {"job_id": job.job_id, "guild_id": job.guild_id, "member_id": job.owner_id}
