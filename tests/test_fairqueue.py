"""The round-robin queue: fairness across owners, removal, batching, and `ordered()` == pop order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from generation.scheduling.fairqueue import FairQueue


def drain(q: FairQueue[str]) -> list[str]:
    out: list[str] = []
    while (item := q.pop_next()) is not None:
        out.append(item)
    return out


def test_one_owners_many_jobs_do_not_put_another_owner_behind_them() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(10):
        q.push(f"a{i}", "A", f"a{i}")
    q.push("b0", "B", "b0")
    assert q.ordered()[:3] == ["a0", "b0", "a1"]
    assert drain(q) == ["a0", "b0", *[f"a{i}" for i in range(1, 10)]]


def test_round_robin_across_three_owners_keeps_each_owners_fifo() -> None:
    q: FairQueue[str] = FairQueue()
    for key, owner in [("a0", "A"), ("a1", "A"), ("b0", "B"), ("c0", "C"), ("c1", "C"), ("b1", "B")]:
        q.push(key, owner, key)
    assert drain(q) == ["a0", "b0", "c0", "a1", "b1", "c1"]
    assert len(q) == 0
    assert q.pop_next() is None


def test_served_owner_goes_behind_an_owner_who_waited() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("a0", "A", "a0")
    q.push("b0", "B", "b0")
    assert q.pop_next() == "a0"
    q.push("a1", "A", "a1")  # A comes back after being served: behind B
    assert q.ordered() == ["b0", "a1"]


def test_remove_takes_an_item_out_and_keeps_the_rest_in_order() -> None:
    q: FairQueue[str] = FairQueue()
    for key, owner in [("a0", "A"), ("a1", "A"), ("b0", "B")]:
        q.push(key, owner, key)
    assert q.remove("a0") == "a0"
    assert q.remove("a0") is None
    assert "a0" not in q and "a1" in q
    assert q.get("b0") == "b0"
    assert q.ordered() == ["a1", "b0"]
    assert q.remove("b0") == "b0"
    assert drain(q) == ["a1"]


def test_duplicate_key_is_refused() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("x", "A", "x")
    try:
        q.push("x", "B", "x")
    except ValueError:
        pass
    else:
        raise AssertionError("duplicate accepted")


def test_pop_batch_takes_compatible_items_in_fair_order_up_to_the_cap() -> None:
    q: FairQueue[tuple[str, str, int]] = FairQueue()  # (name, shape, images)
    items = [
        ("a0", "A", ("a0", "square", 1)),
        ("a1", "A", ("a1", "wide", 1)),
        ("a2", "A", ("a2", "square", 2)),
        ("b0", "B", ("b0", "square", 1)),
        ("c0", "C", ("c0", "square", 4)),
    ]
    for key, owner, item in items:
        q.push(key, owner, item)
    batch = q.pop_batch(key_of=lambda it: it[1], size_of=lambda it: it[2], cap_of=lambda it: 4)
    # fair order a0 b0 c0 a1 a2: c0 (4 images) does not fit, a1 is wide, a2 fits exactly.
    assert [it[0] for it in batch] == ["a0", "b0", "a2"]
    assert [it[0] for it in q.ordered()] == ["c0", "a1"]


def test_pop_batch_takes_an_oversized_first_item_alone() -> None:
    q: FairQueue[tuple[str, int]] = FairQueue()
    q.push("a", "A", ("a", 4))
    q.push("b", "B", ("b", 1))
    batch = q.pop_batch(key_of=lambda it: 0, size_of=lambda it: it[1], cap_of=lambda it: 2)
    assert batch == [("a", 4)]
    assert q.ordered() == [("b", 1)]
    assert q.pop_batch(key_of=lambda it: 0, size_of=lambda it: it[1], cap_of=lambda it: 2) == [("b", 1)]
    assert q.pop_batch(key_of=lambda it: 0, size_of=lambda it: it[1], cap_of=lambda it: 2) == []


def test_owners_served_in_a_batch_move_behind_those_not_served() -> None:
    q: FairQueue[tuple[str, str]] = FairQueue()
    for key, owner, shape in [("a0", "A", "s"), ("a1", "A", "s"), ("b0", "B", "w"), ("c0", "C", "s")]:
        q.push(key, owner, (key, shape))
    batch = q.pop_batch(key_of=lambda it: it[1], size_of=lambda it: 1, cap_of=lambda it: 2)
    assert [k for k, _ in batch] == ["a0", "c0"]
    assert [k for k, _ in q.ordered()] == ["b0", "a1"]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from("ABCD")),
        st.tuples(st.just("pop"), st.just("")),
        st.tuples(st.just("remove"), st.integers(0, 30)),
    ),
    max_size=60,
)


@given(ops)
def test_ordered_always_predicts_pop_order_and_no_owner_waits_two_turns(
    script: list[tuple[str, object]],
) -> None:
    q: FairQueue[str] = FairQueue()
    n = 0
    for op, arg in script:
        if op == "push":
            q.push(str(n), str(arg), f"{arg}{n}")
            n += 1
        elif op == "pop":
            q.pop_next()
        else:
            q.remove(str(arg))
    predicted = q.ordered()
    assert len(predicted) == len(q)
    popped = drain(q)
    assert popped == predicted
    # Fairness: between two items of one owner, every other owner still waiting gets at most one turn.
    for i, item in enumerate(popped):
        later_same = [j for j in range(i + 1, len(popped)) if popped[j][0] == item[0]]
        if later_same:
            between = [p[0] for p in popped[i + 1 : later_same[0]]]
            assert len(between) == len(set(between))
