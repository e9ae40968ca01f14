"""Long GUI-thread work (filling a tree or list with thousands of rows) done in slices.

Each slice runs for at most BUDGET_MS of wall-clock time, then yields to the event loop
(a zero timer) so that painting, input and timers run in between. A budget in time, not
in rows, keeps each turn short on a loaded machine too, where a fixed batch of rows takes
several times longer. The first slice runs at once, so a short job (a list of a few dozen
rows) is complete when the call returns.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

from PySide6.QtCore import QTimer

BUDGET_MS = 8.0
CHECK_EVERY = 8  # items between looks at the clock


class Slices:
    """`each(item)` for every item, in time-boxed slices; `done()` after the last one.
    `cancel()` stops it (a newer fill replaced this one); `alive()` may stop it too (the
    target widget or item is gone); `stopped()` is then called instead of `done()`."""

    def __init__(self, items: Sequence[Any], each: Callable[[Any], None], done: Callable[[], None] | None = None,
                 alive: Callable[[], bool] | None = None, budget_ms: float = BUDGET_MS,
                 stopped: Callable[[], None] | None = None):
        self.items = items
        self.each = each
        self.done = done
        self.alive = alive
        self.stopped = stopped
        self.budget = budget_ms / 1000
        self.position = 0
        self.cancelled = False
        self.finished = False
        self._step()

    @property
    def running(self) -> bool:
        return not (self.finished or self.cancelled)

    def remaining(self) -> Iterable[Any]:
        return self.items[self.position:]

    def cancel(self) -> None:
        if self.running:
            self.cancelled = True
            if self.stopped is not None:
                self.stopped()

    def _step(self) -> None:
        if self.cancelled:
            return
        if self.alive is not None and not self.alive():
            self.cancel()
            return
        deadline = time.perf_counter() + self.budget
        items, each, end = self.items, self.each, len(self.items)
        i = self.position
        while i < end:
            each(items[i])
            i += 1
            if i % CHECK_EVERY == 0 and time.perf_counter() >= deadline:
                break
        self.position = i
        if i < end:
            QTimer.singleShot(0, self._step)
            return
        self.finished = True
        if self.done is not None:
            self.done()
