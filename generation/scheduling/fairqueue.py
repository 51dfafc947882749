"""A round-robin queue across owners: one owner's many items never starve another owner's one.

Each owner keeps its own FIFO; owners take turns in a rotation. An owner that is served goes to the
back of the rotation; a new owner joins at the back. `ordered()` lists items in exactly the order
`pop_next()` would return them if nothing else changed. Pure data structure: no I/O, no threads.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    """Items keyed by a unique id, grouped by owner, served round-robin across owners."""

    def __init__(self) -> None:
        self._lanes: OrderedDict[str, deque[str]] = OrderedDict()  # rotation order = dict order
        self._items: dict[str, tuple[str, T]] = {}  # key -> (owner, item)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self.ordered())

    def get(self, key: str) -> T | None:
        """The item stored under `key`, or None."""
        entry = self._items.get(key)
        return None if entry is None else entry[1]

    def push(self, key: str, owner: str, item: T) -> None:
        """Add `item` at the end of `owner`'s lane; a new owner joins the back of the rotation."""
        if key in self._items:
            raise ValueError(f"duplicate key {key!r}")
        self._items[key] = (owner, item)
        lane = self._lanes.get(owner)
        if lane is None:
            lane = self._lanes[owner] = deque()
        lane.append(key)

    def remove(self, key: str) -> T | None:
        """Take `key` out wherever it waits (the rotation is unchanged); None if absent."""
        entry = self._items.pop(key, None)
        if entry is None:
            return None
        owner, item = entry
        lane = self._lanes[owner]
        lane.remove(key)
        if not lane:
            del self._lanes[owner]
        return item

    def pop_next(self) -> T | None:
        """The next item in fair order (None if empty); its owner moves to the back of the rotation."""
        if not self._lanes:
            return None
        owner, lane = next(iter(self._lanes.items()))
        key = lane.popleft()
        self._served(owner)
        return self._items.pop(key)[1]

    def ordered(self) -> list[T]:
        """All items in the order they would be popped: round by round across the rotation."""
        return [item for _, _, item in self._order()]

    def ordered_with_owners(self) -> list[tuple[str, T]]:
        """Like `ordered()`, with each item's owner."""
        return [(owner, item) for _, owner, item in self._order()]

    def pop_batch(
        self,
        key_of: Callable[[T], Hashable],
        size_of: Callable[[T], int],
        cap_of: Callable[[T], int],
    ) -> list[T]:
        """The next item fairly, plus later items (in fair order) with an equal `key_of`, while the
        summed `size_of` stays within `cap_of(first)`. The first item is taken even if it alone
        exceeds the cap. Every owner served moves to the back of the rotation, in serving order."""
        order = self._order()
        if not order:
            return []
        first_key, first_owner, first = order[0]
        batch_key = key_of(first)
        cap = cap_of(first)
        total = size_of(first)
        chosen = [(first_key, first_owner, first)]
        for key, owner, item in order[1:]:
            if total >= cap:
                break
            size = size_of(item)
            if key_of(item) == batch_key and total + size <= cap:
                chosen.append((key, owner, item))
                total += size
        for key, owner, _ in chosen:
            del self._items[key]
            self._lanes[owner].remove(key)
        for _, owner, _ in chosen:
            self._served(owner)
        return [item for _, _, item in chosen]

    def _order(self) -> list[tuple[str, str, T]]:
        lanes = [(owner, list(lane)) for owner, lane in self._lanes.items()]
        out: list[tuple[str, str, T]] = []
        depth = max((len(lane) for _, lane in lanes), default=0)
        for i in range(depth):
            for owner, lane in lanes:
                if i < len(lane):
                    out.append((lane[i], owner, self._items[lane[i]][1]))
        return out

    def _served(self, owner: str) -> None:
        lane = self._lanes.get(owner)
        if lane is None:
            return
        if lane:
            self._lanes.move_to_end(owner)
        else:
            del self._lanes[owner]
