"""A line chart of one or more curves (plotext through textual-plotext)."""

from __future__ import annotations

from textual_plotext import PlotextPlot

from tuneyard.tui.series import Series


class MetricPlot(PlotextPlot):
    """Curves against the optimizer step, with a title and y-label; an empty chart says
    what it waits for (``placeholder``)."""

    def __init__(self, title: str, *, ylabel: str = "", placeholder: str = "no data yet",
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.title, self.ylabel, self.placeholder = title, ylabel, placeholder
        self.curves: dict[str, tuple[list[float], list[float]]] = {}

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
        for label, (xs, ys) in self.curves.items():
            if xs:
                plt.plot(xs, ys, label=label if len(self.curves) > 1 else None, marker="braille")
                drawn = True
        if not drawn:
            plt.title(f"{self.title}: {self.placeholder}")
        self.refresh()
