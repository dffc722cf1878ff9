"""A line chart of one or more curves (plotext through textual-plotext)."""

from __future__ import annotations

from typing import Any

from textual.app import RenderResult
from textual_plotext import PlotextPlot

from tuneyard.tui.series import Series, thin


class MetricPlot(PlotextPlot):
    """Curves against the optimizer step, with a title and y-label; an empty chart says
    what it waits for (``placeholder``)."""

    def __init__(self, title: str, *, ylabel: str = "", placeholder: str = "no data yet",
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.title, self.ylabel, self.placeholder = title, ylabel, placeholder
        self.curves: dict[str, tuple[list[float], list[float]]] = {}
        self._drawn: tuple[Any, Any] | None = None  # (what was drawn, its picture)
        self._version = 0  # bumped by every _draw

    def show(self, curves: dict[str, Series | tuple[list[float], list[float]]]) -> None:
        """Replace the curves (label → Series or (xs, ys)) and redraw."""
        self.curves = {label: c.points() if isinstance(c, Series) else c
                       for label, c in curves.items()}
        self._draw()

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title)
        plt.xlabel("step")
        if self.ylabel:
            plt.ylabel(self.ylabel)
        drawn = False
        # braille draws 2 points per cell across; plotext's build time grows with the points
        # (~0.1 s for 1,000 on 2 cores), so more than 2 per cell would only cost key latency
        most = 2 * (self.size.width or 100)
        for label, (xs, ys) in self.curves.items():
            if xs:
                plt.plot(*thin(xs, ys, most), label=label if len(self.curves) > 1 else None,
                         marker="braille")
                drawn = True
        if not drawn:
            plt.title(f"{self.title}: {self.placeholder}")
        self._version += 1
        self.refresh()

    def render(self) -> RenderResult:
        """The picture, built again only when the curves, size or theme changed: building
        takes plotext tens of ms, and a monitor repaints on every tab switch."""
        key = (self._version, self.size, self.app.theme)
        if self._drawn is None or self._drawn[0] != key:
            self._drawn = (key, super().render())
        return self._drawn[1]
