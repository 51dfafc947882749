"""A Ray replica whose step hangs for good (a wedged GPU kernel: no step callback ever comes): the
driver's watchdog fails that batch's jobs after the time limit plus grace, kills the replica so Serve
starts a fresh one, and the next job is generated there. Stand-in engine (tests.scale_out_worker);
waits are on futures with timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from tests.ray_fixtures import require_ray

require_ray()

from generation.backends.protocol import JobFailed  # noqa: E402
from generation.backends.ray_driver import RayBackend  # noqa: E402
from tests.scale_out_worker import StandInEngine, request, stand_in_backend  # noqa: E402

WAIT = 60.0  # bound on every wait (a replica restart takes seconds); never reached when the code is right
TIMEOUT_S = 1.0


@pytest.fixture
async def one_replica(ray_cluster: None) -> AsyncIterator[RayBackend]:
    backend = stand_in_backend("imagine-watchdog", replicas=1, job_timeout_s=TIMEOUT_S, watchdog_grace_s=0.5)
    await backend.start()
    yield backend
    await backend.close()


async def test_a_hung_replica_fails_its_job_and_is_replaced(one_replica: RayBackend) -> None:
    hung = one_replica.submit("hung", "u1", replace(request(1), prompt=f"a fox {StandInEngine.HANG}"))
    with pytest.raises(JobFailed, match=f"took longer than {TIMEOUT_S:g} s"):
        await asyncio.wait_for(hung.result(), WAIT)
    wedged = one_replica.replica_of("hung")
    assert wedged is not None

    # Had the wedged replica stayed, this job would wait behind the hung step for ever.
    after = one_replica.submit("after", "u2", request(2))
    result = await asyncio.wait_for(after.result(), WAIT)
    assert [image.seed for image in result.images] == [2]
    assert one_replica.replica_of("after") not in (None, wedged)
