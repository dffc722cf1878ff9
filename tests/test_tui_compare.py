"""The Compare screen: overlaid loss curves that grow while a run trains, latest evaluation
metrics with the best value highlighted, the spec keys that differ, and its pictures."""

from __future__ import annotations

from tuneyard.core.registry import Registry
from tuneyard.tui.screens.compare import (
    MISSING, CompareScreen, best_index, flatten, run_labels, spec_diff, spec_value)
from tuneyard.tui.widgets.plot import MetricPlot

LORA, FULL = "smollm2-wordnet-lora", "smollm2-wordnet-full"


def cells(table) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def open_compare(pilot, wait_for, run_ids: list[str]) -> CompareScreen:
    pilot.app.open_compare(run_ids)
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, CompareScreen)
    await wait_for(pilot, lambda: screen.polls > 0)
    await pilot.pause()
    return screen


# -- flatten and diff ----------------------------------------------------------------------
def test_flatten_nested_dicts_and_lists():
    spec = {"name": "x", "strategy": {"name": "lora", "options": {"r": 8, "target": ["q", "v"]}},
            "evaluators": [{"name": "perplexity"}, {"name": "rouge", "options": {"limit": 4}}],
            "dataset": {"options": {}}, "note": None}
    assert flatten(spec) == {
        "name": "x", "strategy.name": "lora", "strategy.options.r": 8,
        "strategy.options.target.0": "q", "strategy.options.target.1": "v",
        "evaluators.0.name": "perplexity", "evaluators.1.name": "rouge",
        "evaluators.1.options.limit": 4, "note": None,
    }


def test_spec_diff_keeps_only_differing_keys_in_spec_order():
    a = {"name": "a", "training": {"lr": 1e-3, "seed": 0}, "evaluators": [{"name": "ppl"}]}
    b = {"name": "b", "training": {"lr": 1e-3, "seed": 1},
         "evaluators": [{"name": "ppl"}, {"name": "rouge"}]}
    c = {"name": "c", "training": {"lr": 1e-3}, "evaluators": [{"name": "ppl"}]}
    assert spec_diff([a, b, c]) == [
        ("name", ["a", "b", "c"]),
        ("training.seed", [0, 1, MISSING]),
        ("evaluators.1.name", [MISSING, "rouge", MISSING]),
    ]
    assert spec_diff([a, dict(a)]) == []
    assert spec_diff([{"limit": None}, {}]) == [("limit", [None, MISSING])]


def test_spec_values_best_values_and_labels():
    assert [spec_value(v) for v in ("lora", 5e-05, 8, None, True, MISSING)] == [
        "lora", "5e-05", "8", "null", "true", "—"]
    assert best_index("perplexity", [15.0, 14.5]) == 1
    assert best_index("eval_loss", [None, 2.7, 2.6]) == 2
    assert best_index("rouge1", [0.3, 0.5, None]) == 1
    assert best_index("exact_match", [0.3, None]) is None
    runs = [{"id": "20261101-080000-ab12", "name": "x"},
            {"id": "20261101-090000-cd34", "name": "x"},
            {"id": "20261101-100000-ef56", "name": "y"}]
    assert run_labels(runs) == ["x (ab12)", "x (cd34)", "y"]


# -- the screen ----------------------------------------------------------------------------
async def test_compare_two_runs(seeded_registry, tui_app, wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_compare(pilot, wait_for, ["run-a", "run-b"])
        model = "SmolLM2-135M-Instruct.Q4_1.gguf"
        assert cells(screen.query_one("#header-table")) == [
            [LORA, "completed", "lora", "40/40", "1.846", "3:50", model],
            [FULL, "completed", "full", "40/40", "1.811", "3:50", model],
        ]
        curves = screen.query_one(MetricPlot).curves
        assert list(curves) == [LORA, FULL]
        for xs, ys in curves.values():
            assert xs == list(range(1, 41)) and len(ys) == 40
        assert curves[LORA][1][0] == 4.4486 and curves[FULL][1][-1] == 1.811

        await pilot.press("m")
        metrics = screen.query_one("#metrics-table")
        assert metrics.has_focus
        assert [str(c.label) for c in metrics.columns.values()] == [
            "evaluator", "metric", LORA, FULL]
        assert cells(metrics) == [["perplexity", "perplexity", "15", "14.5"],
                                  ["perplexity", "eval_loss", "2.708", "2.674"]]
        styles = [[cell.style for cell in metrics.get_row_at(i)[2:]] for i in range(2)]
        assert styles == [["", "bold green"], ["", "bold green"]]

        await pilot.press("d")
        diff = screen.query_one("#diff-table")
        assert cells(diff) == [
            ["name", LORA, FULL],
            ["strategy.name", "lora", "full"],
            ["strategy.options.r", "8", "—"],
            ["training.learning_rate", "0.001", "5e-05"],
        ]
        assert not screen.query_one("#diff-empty").display
        await pilot.press("escape")
        assert not isinstance(app.screen, CompareScreen)


async def test_compare_grows_while_a_run_trains(seeded_registry, tui_app, wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_compare(pilot, wait_for, ["run-a", "run-b"])
        plot = screen.query_one(MetricPlot)
        registry = Registry(seeded_registry)
        registry.add_metrics("run-a", 41, {"loss": 1.5, "learning_rate": 0.0})
        registry.add_evaluation("run-a", "final-2", "rouge", {"rougeL": 0.25})
        await wait_for(pilot, lambda: len(plot.curves[LORA][0]) == 41)
        assert plot.curves[LORA][0][-1] == 41 and plot.curves[LORA][1][-1] == 1.5
        assert len(plot.curves[FULL][0]) == 40
        await wait_for(pilot, lambda: screen.query_one("#metrics-table").row_count == 3)
        await pilot.pause(0.1)
        assert cells(screen.query_one("#header-table"))[0][3:5] == ["41/40", "1.5"]
        assert cells(screen.query_one("#metrics-table"))[2] == ["rouge", "rougeL", "0.25", ""]


async def test_compare_rereads_the_steps_a_resumed_run_logs_again(seeded_registry, tui_app,
                                                                   wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_compare(pilot, wait_for, ["run-a", "run-b"])
        plot = screen.query_one(MetricPlot)
        registry = Registry(seeded_registry)
        # a checkpoint at step 30; the resumed run logs 31… again
        registry.delete_metrics_after("run-a", 30)
        registry.add_metrics("run-a", 31, {"loss": 0.5})
        await wait_for(pilot, lambda: plot.curves[LORA][1][-1:] == [0.5])
        assert plot.curves[LORA][0] == list(range(1, 32))
        assert plot.curves[FULL][0] == list(range(1, 41))
        await pilot.pause(0.1)
        assert cells(screen.query_one("#header-table"))[0][4] == "0.5"


async def test_compare_same_spec_says_so(seeded_registry, tui_app, wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_compare(pilot, wait_for, ["run-a", "smollm2-wordnet-lora", "run-b"])
        assert list(screen.query_one(MetricPlot).curves) == [LORA, FULL]  # one run, named twice
        screen = await open_compare(pilot, wait_for, ["run-a", "run-a"])
        assert not screen.query_one("#compare-tabs").display  # a run is not compared to itself


async def test_unknown_runs_say_so(seeded_registry, tui_app, wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_compare(pilot, wait_for, ["run-a", "nope"])
        message = screen.query_one("#compare-message")
        assert str(message.render()) == (
            "Compare needs two or more runs; found 1 of 2 (no run 'nope' in the registry).")
        assert not screen.query_one("#compare-tabs").display
        screen = await open_compare(pilot, wait_for, ["run-a", "nope", "run-b"])
        assert str(screen.query_one("#compare-message").render()) == (
            "No run 'nope' in the registry; comparing the others.")
        assert screen.query_one("#compare-tabs").display
        assert list(screen.query_one(MetricPlot).curves) == [LORA, FULL]


async def test_without_registry(tmp_path, tui_app, wait_for):
    app = tui_app(tmp_path / "registry.db")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_compare(pilot, wait_for, ["run-a", "run-b"])
        assert str(screen.query_one("#compare-message").render()) == (
            f"No registry yet at {(tmp_path / 'registry.db').resolve()}: nothing to compare.")
        assert not screen.query_one("#compare-tabs").display


# -- pictures ------------------------------------------------------------------------------
def test_compare_curves_snapshot(snap_compare, seeded_registry, tui_app, wait_for):
    """Compare of run-a and run-b on the Loss curves tab: a header table with both runs
    (completed in green, lora/full, 40/40 steps, final loss 1.846/1.811, 3:50), then one plot
    with two falling curves from ~4.4 and ~4.0 to ~1.8 over steps 1–40 and a legend naming
    smollm2-wordnet-lora and smollm2-wordnet-full; footer: esc Back, l/m/d tabs."""
    async def run_before(pilot):
        await open_compare(pilot, wait_for, ["run-a", "run-b"])

    assert snap_compare(tui_app(seeded_registry),
                        terminal_size=(100, 30), run_before=run_before)


def test_compare_spec_diff_snapshot(snap_compare, seeded_registry, tui_app, wait_for):
    """Compare of run-a and run-b on the Spec diff tab: exactly four rows — name,
    strategy.name (lora/full), strategy.options.r (8/—) and training.learning_rate
    (0.001/5e-05) — with one column per run."""
    async def run_before(pilot):
        await open_compare(pilot, wait_for, ["run-a", "run-b"])

    assert snap_compare(tui_app(seeded_registry),
                        terminal_size=(100, 30), run_before=run_before, press=["d"])
