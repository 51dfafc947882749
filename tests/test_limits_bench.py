"""The `python -m bench` dispatcher, the report format and the limits benchmark's overspend check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import available
from bench.__main__ import main as bench_main
from bench.config import load_settings
from bench.limits import LIMITS, _share, overspends, postgres_url, run, with_schema
from bench.report import report
from storage.interface import LedgerEntry


def test_dispatcher_lists_and_rejects_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert "limits" in available() and "report" not in available()
    assert bench_main(["no_such_bench"]) == 2
    assert bench_main(["../etc"]) == 2
    assert bench_main(["report"]) == 2  # a helper module, not a benchmark
    assert "unknown benchmark" in capsys.readouterr().err


def test_report_prints_one_json_line_last_and_appends_a_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "RESULTS.md"
    report("demo", {"x_per_s": 1.5, "overspent": 0}, ["--n", "3"], results_path=results)
    report("demo", {"x_per_s": 2.5, "overspent": 0}, [], results_path=results)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"x_per_s": 2.5, "overspent": 0}
    text = results.read_text()
    assert text.count("## demo") == 2
    assert "`python -m bench demo --n 3`" in text and "UTC" in text and "cores" in text
    assert '"x_per_s": 1.5' in text


def test_overspend_check_catches_a_window_past_its_limit() -> None:
    hour = LIMITS.images_per_hour
    assert hour is not None
    fine = [LedgerEntry(1, f"j{i}", 1, 100.0 + i, False) for i in range(hour)]
    assert overspends(fine, LIMITS) == 0
    over = [*fine, LedgerEntry(1, "extra", 1, 100.0 + hour, False)]
    assert overspends(over, LIMITS) == 1
    refunded = [*fine, LedgerEntry(1, "extra", 1, 100.0 + hour, True)]
    assert overspends(refunded, LIMITS) == 0
    later = [*fine, LedgerEntry(1, "later", 1, 100.0 + 3600.0, False)]  # j0 has left the window
    assert overspends(later, LIMITS) == 0


def _num(value: object) -> float:
    assert isinstance(value, int | float), value
    return float(value)


async def test_small_benchmark_run_grants_some_refuses_some_and_never_overspends() -> None:
    figures = await run(count=400, users=10, tasks=8, seed=1)
    assert figures["overspent"] == 0
    assert 0.2 < _num(figures["granted_fraction"]) < 1.0
    assert figures["granted_fraction"] == figures["concurrent_granted_fraction"]
    for key in ("reservations_per_s", "concurrent_reservations_per_s", "two_connection_reservations_per_s"):
        assert _num(figures[key]) > 0


async def test_small_run_reports_the_sqlite_backend() -> None:
    figures = await run(count=40, users=4, tasks=2, seed=0)
    assert figures["backend"] == "sqlite" and figures["overspent"] == 0


def test_each_process_takes_every_member_and_all_requests_are_taken_once() -> None:
    count, users = 103, 7
    shares = [_share(count, users, k, 2) for k in range(2)]
    assert sorted(shares[0] + shares[1]) == list(range(count))
    for share in shares:  # every member is reserved for from both processes, so the limits bite across them
        assert {i % users for i in share} == set(range(users))
    assert shares[0][:users] == list(range(users))
    assert shares[1][:users] == [10, 11, 12, 13, 7, 8, 9]  # round 1, starting half-way round the members
    assert _share(7, 4, 1, 2) == [6, 4, 5]  # a last, short round


def test_postgres_url_comes_from_the_argument_then_database_url_else_none() -> None:
    env = load_settings({"DATABASE_URL": "postgresql://env/db"})
    assert postgres_url("postgresql://arg/db", env) == "postgresql://arg/db"
    assert postgres_url("", env) == "postgresql://env/db"
    assert postgres_url("", load_settings({})) is None
    assert postgres_url("", load_settings({"DATABASE_URL": ""})) is None
    assert with_schema("postgresql://h/db?sslmode=disable", "s1").endswith("?sslmode=disable&search_path=s1")
