"""Named registries (experiments, models): one mechanism, looked up by the CLI and by the shared test suites."""

from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

from kdgm.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name → object map whose failed look-ups are one-line user errors with a suggestion."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def __getitem__(self, name: str) -> T:
        if name not in self._items:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UserError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self._items)})")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self):
        return self._items.items()
