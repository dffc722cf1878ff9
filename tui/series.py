"""Bounded curves for a monitor left open for days.

:class:`Series` keeps at most ``2 × capacity`` points of a curve that grows without end: when
full it keeps every other point and from then on records one point in two, then one in four…
(stride doubling), so memory stays flat while the curve keeps its whole span. The first and
latest points are always kept. :class:`Curves` starts a run's series from its curves as the
registry downsamples them, then feeds them the metric rows that polls read.
"""

from __future__ import annotations

from typing import Any

#: points a curve is read with at first (``Registry.metric_curve``) and kept at (``Series``)
POINTS = 1000


def thin(xs: list[float], ys: list[float], most: int) -> tuple[list[float], list[float]]:
    """Every k-th point, k the smallest that leaves at most ``most`` of them, and the latest
    point always (so ``most`` + 1 at the most). Returns new lists."""
    every = max(1, -(-len(xs) // most))  # ceil
    kept_x, kept_y = xs[::every], ys[::every]
    if xs and kept_x[-1] != xs[-1]:
        kept_x, kept_y = kept_x + [xs[-1]], kept_y + [ys[-1]]
    return kept_x, kept_y


class Series:
    """``(step, value)`` points of one metric, decimated to stay under ``2 × capacity``."""

    def __init__(self, capacity: int = POINTS) -> None:
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
        xs, ys = self.steps, self.values
        if self.last and (not xs or xs[-1] != self.last[0]):
            xs, ys = xs + [self.last[0]], ys + [self.last[1]]
        return thin(xs, ys, self.capacity)

    def __len__(self) -> int:
        return self._seen


class Curves:
    """One run's metric curves, read a little at a time: the first poll (worker thread) reads
    each curve downsampled (``Registry.metric_curve``: a run of a million steps costs what one
    of a thousand does) and :meth:`start` (UI thread) begins the series with them; every later
    poll reads the metric rows after :attr:`after` (``Registry.metrics_since``) and :meth:`add`
    appends them. ``series`` is cleared in place, never replaced."""

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}  # metric name → its curve
        self.after = 0  # id of the last metric row added (0: not started)

    def start(self, history: dict[str, list[tuple[float, float]]], after: int) -> None:
        """Begin again from ``history`` (metric name → its ``(step, value)`` points, as
        ``Registry.metric_curve`` reads them), which holds the rows up to id ``after``."""
        self.series.clear()
        for name, points in history.items():
            if points:
                series = self.series[name] = Series()
                for step, value in points:
                    series.add(step, value)
        self.after = after

    def add(self, rows: list[dict[str, Any]], read_after: int) -> list[dict[str, Any]] | None:
        """Append the metric rows (``id``, ``step``, ``name``, ``value``) that a poll read
        after row id ``read_after``. Rows added already are skipped (a poll that overlapped an
        earlier one), and all of them when the poll read from before a reset.

        Returns:
            The rows added; ``None`` when a step came again: a resumed run logs again the
            steps after its checkpoint (the registry dropped the old rows), so the curves were
            cleared, to be read again from the first row.
        """
        if read_after > self.after:
            return []
        added = []
        for row in rows:
            if row["id"] <= self.after:
                continue
            series = self.series.get(row["name"])
            if series and series.last and row["step"] <= series.last[0]:
                self.series.clear()
                self.after = 0
                return None
            self.after = row["id"]
            self.series.setdefault(row["name"], Series()).add(row["step"], row["value"])
            added.append(row)
        return added
