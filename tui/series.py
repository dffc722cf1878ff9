"""Bounded curves for a monitor left open for days.

:class:`Series` keeps at most ``2 × capacity`` points of a curve that grows without end: when
full it keeps every other point and from then on records one point in two, then one in four…
(stride doubling), so memory stays flat while the curve keeps its whole span. The first and
latest points are always kept.
"""

from __future__ import annotations


class Series:
    """``(step, value)`` points of one metric, decimated to stay under ``2 × capacity``."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self.steps: list[float] = []
        self.values: list[float] = []
        self.stride = 1  # record one point in `stride`
        self._seen = 0
        self.last: tuple[float, float] | None = None  # latest point, even if not recorded

    def add(self, step: float, value: float) -> None:
        self.last = (step, value)
        if self._seen % self.stride == 0:
            self.steps.append(step)
            self.values.append(value)
            if len(self.steps) >= 2 * self.capacity:
                self.steps, self.values = self.steps[::2], self.values[::2]
                self.stride *= 2
        self._seen += 1

    def points(self) -> tuple[list[float], list[float]]:
        """At most ``capacity`` (+1) points spanning the whole curve, latest point included."""
        step = max(1, -(-len(self.steps) // self.capacity))  # ceil: ≤ capacity points
        xs, ys = self.steps[::step], self.values[::step]
        if self.last and (not xs or xs[-1] != self.last[0]):
            xs, ys = xs + [self.last[0]], ys + [self.last[1]]
        return xs, ys

    def __len__(self) -> int:
        return self._seen
