"""The ``tuneyard`` command line. Everything the TUI does, headless.

Exit codes: 0 success, 1 a run failed, 2 a user error (bad spec, unknown run, missing file).
Heavy modules (torch, transformers) are imported only by the commands that train or evaluate.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.style import Style
from rich.table import Table
from rich.text import Text

from tuneyard.core.errors import TuneyardError
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.scaffold import SCAFFOLD_KINDS

console = Console()
err_console = Console(stderr=True)


def handle_errors(fn):
    """Print a TuneyardError in one or two lines (exit 2), any other error as a failed run
    (exit 1); ``--debug`` prints the traceback first, with the same exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except TuneyardError as exc:
            if ctx.obj.get("debug"):
                traceback.print_exc()
            err_console.print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False,
                              soft_wrap=True)
            sys.exit(exc.exit_code)
        except Exception as exc:
            if ctx.obj.get("debug"):
                traceback.print_exc()
            hint = "" if ctx.obj.get("debug") else "\n(run with --debug for the traceback)"
            err_console.print(f"[bold red]Failed:[/] {escape(f'{type(exc).__name__}: {exc}')}"
                              f"{hint}", highlight=False, soft_wrap=True)
            sys.exit(1)

    return wrapper


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tuneyard", prog_name="tuneyard")  # read when asked
@click.option("--registry", type=click.Path(dir_okay=False),
              help="Registry file [default: ./registry.db; env TUNEYARD_REGISTRY]")
@click.option("--plugins-dir", type=click.Path(exists=True, file_okay=False),
              help="Also load each *.py file of this folder as a plugin [env "
                   "TUNEYARD_PLUGINS_DIR]. TUNEYARD_LOAD_PLUGINS=a,b loads only those "
                   "third-party plugins (empty: none); TUNEYARD_TRACE_PLUGINS=1 prints hook calls.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, registry: str | None, plugins_dir: str | None, debug: bool) -> None:
    """tuneyard: train language models (fine-tune, LoRA, pre-train), evaluate, compare.

    \b
    Quick start:
      tuneyard run examples/smollm2-wordnet-lora.yaml
      tuneyard runs list
      tuneyard --registry other.db runs list   (global options go before the command)
    """
    ctx.obj = {"registry": registry, "debug": debug}
    configure_logging(debug)
    if plugins_dir is not None:
        use_plugins_dir(plugins_dir)
    if ctx.invoked_subcommand is None:
        if "tui" in cli.commands and sys.stdin.isatty() and sys.stdout.isatty():
            ctx.invoke(cli.commands["tui"])  # the TUI plugin's command
        else:
            click.echo(ctx.get_help())


def configure_logging(debug: bool) -> None:
    """Log warnings (debug: everything, with the source line) to stderr through rich."""
    handler = RichHandler(console=err_console, show_time=False, show_path=debug,
                          level=logging.DEBUG if debug else logging.WARNING)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(message)s",
                        handlers=[handler])


def use_plugins_dir(folder: str) -> None:
    """Load plugins from ``folder`` from now on, in this process and the processes it starts
    (runs, the TUI's commands): ``TUNEYARD_PLUGINS_DIR`` is set to its absolute path."""
    from tuneyard.core.plugins import PLUGINS_DIR_ENV, get_plugins

    folder = str(Path(folder).resolve())
    if os.environ.get(PLUGINS_DIR_ENV) != folder:
        os.environ[PLUGINS_DIR_ENV] = folder
        get_plugins.cache_clear()


def echo_json(value: Any, indent: int | None = 2) -> None:
    """Print ``value`` as strict JSON (RFC 8259), which every ``--json`` output is: a
    non-finite float (NaN, ±Infinity), which Python's ``json`` writes as a bare ``NaN`` or
    ``Infinity`` that JavaScript's ``JSON.parse`` and jq reject, becomes ``null``
    (:func:`strict_json`); other values that are not JSON (times, paths) become strings."""
    click.echo(json.dumps(strict_json(value), indent=indent, default=str, allow_nan=False))


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``; in a dict, the key of one
    gets a sibling ``<key>_nonfinite`` saying which it was: ``"nan"``, ``"inf"`` or
    ``"-inf"`` (so an evaluation whose ``value`` was infinite reads ``"value": null,
    "value_nonfinite": "inf"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out[key] = strict_json(item)
            if isinstance(item, float) and not math.isfinite(item):
                out[f"{key}_nonfinite"] = "nan" if math.isnan(item) else (
                    "inf" if item > 0 else "-inf")
        return out
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    return value


def open_registry(create: bool = False) -> Any:
    """The registry chosen by ``--registry``/``TUNEYARD_REGISTRY`` (default ``./registry.db``).
    Only ``create=True`` (``tuneyard run``) makes a new file; reading commands refuse a path
    that does not exist, so a typo in it is not silently a new, empty registry."""
    from tuneyard.core.registry import Registry

    return Registry(click.get_current_context().obj.get("registry"), create=create)


# -- run / eval / export -------------------------------------------------------------------
def distributed_options(fn):
    """torchrun's options (``torch.distributed.run``), for a run on several processes."""
    options = [
        click.option("--nproc-per-node", type=click.IntRange(min=1), default=1,
                     show_default=True, help="Processes on this node (one per GPU), through "
                     "torchrun; the Trainer trains them with DDP (or FSDP: training.fsdp)."),
        click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Nodes in the run; start the same command on each."),
        click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True,
                     help="This node's rank; node 0 records the run in its registry."),
        click.option("--rdzv-endpoint", metavar="HOST:PORT", default=None,
                     help="Node 0's address for torchrun's rendezvous (needed with --nnodes)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def launch_of(nproc_per_node: int, nnodes: int, node_rank: int, rdzv_endpoint: str | None,
              detach: bool) -> Any:
    """The :class:`~tuneyard.core.distributed.Launch` the options ask for.

    Raises:
        TuneyardError: inconsistent options, naming them.
    """
    from tuneyard.core.distributed import Launch

    if nnodes > 1 and not rdzv_endpoint:
        raise TuneyardError("--nnodes 2 or more needs --rdzv-endpoint HOST:PORT (node 0's "
                            "address, the same on every node)")
    if node_rank >= nnodes:
        raise TuneyardError(f"--node-rank {node_rank}: must be below --nnodes {nnodes}")
    launch = Launch(nproc_per_node, nnodes, node_rank, rdzv_endpoint)
    if detach and launch.distributed:
        raise TuneyardError("--detach runs one process; for several, keep the command in "
                            "the foreground (under tmux, nohup or your scheduler, e.g. srun)")
    return launch


@cli.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a spec key, e.g. --set training.learning_rate=1e-4 (repeatable).")
@click.option("--detach", is_flag=True, help="Run in the background; print the run id.")
@distributed_options
@handle_errors
def run(spec_path: str, overrides: tuple[str, ...], detach: bool, nproc_per_node: int,
        nnodes: int, node_rank: int, rdzv_endpoint: str | None) -> None:
    """Compose a run from a YAML SPEC, train it, evaluate it, and record it.

    With --nproc-per-node N (and --nnodes, --node-rank, --rdzv-endpoint for several nodes)
    the run trains on N processes per node through torchrun; see docs/distributed.md."""
    from tuneyard.core.engine import compose, create_run, launch_detached, launch_ranks
    from tuneyard.core.plugins import get_plugins
    from tuneyard.core.spec import load_spec

    launch = launch_of(nproc_per_node, nnodes, node_rank, rdzv_endpoint, detach)
    spec = load_spec(spec_path, list(overrides))
    device = compose(spec, get_plugins()).device
    if launch.node_rank > 0:  # node 0 records the run; this node's processes join it
        err_console.print(f"node {node_rank}: {nproc_per_node} process(es) join the run at "
                          f"{rdzv_endpoint}")
        launch_ranks(None, None, launch, device)
        return
    registry = open_registry(create=True)
    if launch.distributed:
        run_id, out = create_run(spec, registry)
        err_console.print(f"run [bold]{run_id}[/] → {out} ({launch.nproc_per_node * nnodes} "
                          "processes, torchrun)")
        train_on_ranks(registry, run_id, launch, device, spec.training.max_steps)
        return
    if detach:
        run_id, out = create_run(spec, registry)
        pid = launch_detached(run_id, registry, out)
        click.echo(run_id)
        err_console.print(f"started run {run_id} (pid {pid}); log: {out / 'run.log'}; "
                          f"watch it: tuneyard tui", soft_wrap=True)
        return
    from tuneyard.core.run.pipeline import execute  # before the run exists: a Ctrl-C while this
    # imports leaves no run behind

    run_id, out = create_run(spec, registry)
    registry.update_run(run_id, pid=os.getpid())  # should this process die before it starts
    err_console.print(f"run [bold]{run_id}[/] → {out}")
    with RichProgress(spec.training.max_steps) as progress:
        execute(registry, run_id, progress)
    show_run(registry, run_id)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--detach", is_flag=True, help="Resume in the background.")
@distributed_options
@handle_errors
def resume(run_ref: str, detach: bool, nproc_per_node: int, nnodes: int, node_rank: int,
           rdzv_endpoint: str | None) -> None:
    """Continue a stopped, interrupted or failed RUN from its latest complete checkpoint
    (weights, optimizer, LR scheduler, RNG states, data order, step). The options of a run
    on several processes are those of tuneyard run; the number of processes may change."""
    from tuneyard.core.engine import check_device, launch_detached
    from tuneyard.core.run.checkpoints import resume_point
    from tuneyard.core.run.pipeline import execute
    from tuneyard.core.spec import RunSpec

    launch = launch_of(nproc_per_node, nnodes, node_rank, rdzv_endpoint, detach)
    registry = open_registry()
    run = registry.get_run(run_ref)
    where = resume_point(registry, run).describe()
    out = Path(run["output_dir"])
    if launch.distributed:
        err_console.print(f"run [bold]{run['id']}[/]: {escape(where)}")
        device = check_device(RunSpec.model_validate(run["spec"]))
        train_on_ranks(registry, run["id"], launch, device, run["max_steps"], resume=True)
        return
    if detach:
        pid = launch_detached(run["id"], registry, out, resume=True)
        click.echo(run["id"])
        err_console.print(f"run {run['id']}: {where} (pid {pid}); log: {out / 'run.log'}",
                          soft_wrap=True)
        return
    err_console.print(f"run [bold]{run['id']}[/]: {escape(where)}")
    with RichProgress(run["max_steps"]) as progress:
        execute(registry, run["id"], progress, resume=True)
    show_run(registry, run["id"])


@cli.command("eval")
@click.argument("run_ref", metavar="RUN")
@click.option("--evaluator", "evaluator", default=None, help="Only this evaluator.")
@handle_errors
def eval_(run_ref: str, evaluator: str | None) -> None:
    """Evaluate RUN's final checkpoint again on its held-out set."""
    from tuneyard.core.run.evaluate import evaluate_run

    registry = open_registry()
    with RichProgress(None) as progress:
        evaluate_run(registry, run_ref, evaluator, progress)
    show_run(registry, registry.get_run(run_ref)["id"])


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.argument("out", metavar="OUT", type=click.Path())
@click.option("--merge", is_flag=True,
              help="Merge the run's adapter (LoRA) into its base model: a standalone model.")
@handle_errors
def export(run_ref: str, out: str, merge: bool) -> None:
    """Write RUN's final checkpoint to the new folder OUT as a plain Hugging Face folder.

    A whole-model run is copied; an adapter run is copied as an adapter (load it with peft on
    the base model) unless --merge. OUT must not exist or be an empty folder.
    """
    from tuneyard.core.export import export_run

    registry = open_registry()
    with RichProgress(None) as progress:
        done = export_run(registry, run_ref, out, merge, progress)
    console.print(f"exported run {done.run_id} → {escape(str(done.path))} ({escape(done.what)}; "
                  f"{done.n_params:,} params, {done.size_bytes / 1e6:.1f} MB)", soft_wrap=True,
                  highlight=False)


class RichProgress:
    """A rich progress bar for a foreground run: step/max, loss, tokens/s, ETA."""

    def __init__(self, total: int | None) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        steps = [BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        self.bar = Progress(
            SpinnerColumn(), TextColumn("{task.description}"),
            *(steps if total else [TimeElapsedColumn()]), console=err_console, transient=False,
            refresh_per_second=2,  # the default 10 Hz redraw takes ~1% of a core from training
        )
        self.task = self.bar.add_task("starting", total=total, info="")

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:  # the error message follows; drop the stale bar
            self.bar.update(self.task, visible=False)
        self.bar.stop()

    def phase(self, text: str) -> None:
        self.bar.update(self.task, description=text)

    def step(self, step: int, total: int, metrics: dict[str, float]) -> None:
        info = f"loss {metrics.get('loss', float('nan')):.4f}  " \
               f"{metrics.get('tokens_per_s', 0):,.0f} tok/s"
        self.bar.update(self.task, completed=step, total=total, info=info)


def train_on_ranks(registry: Any, run_id: str, launch: Any, device: str, total: int,
                   resume: bool = False) -> None:
    """Train (``resume``: continue) a run on torchrun's ranks with a progress bar fed from
    the registry, then print the run."""
    from tuneyard.core.engine import launch_ranks

    with RichProgress(total) as progress:
        launch_ranks(registry, run_id, launch, device, resume=resume,
                     poll=RegistryFeed(registry, run_id, progress, total))
    show_run(registry, run_id)


class RegistryFeed:
    """Shows a run that other processes train (torchrun's ranks) on a :class:`RichProgress`,
    from the metric rows its rank 0 writes: call it now and then."""

    def __init__(self, registry: Any, run_id: str, progress: RichProgress, total: int) -> None:
        self.registry, self.run_id, self.progress = registry, run_id, progress
        self.last_id, self.total = 0, total

    def __call__(self) -> None:
        rows = self.registry.metrics_since(self.run_id, self.last_id)
        if not rows:
            return
        self.last_id = rows[-1]["id"]
        step = rows[-1]["step"]
        latest = {r["name"]: r["value"] for r in rows if r["step"] == step}
        self.progress.phase("training")
        self.progress.step(step, self.total, latest)


# -- data ----------------------------------------------------------------------------------
@cli.group()
def data() -> None:
    """Look at a spec's dataset as the model will see it."""


@data.command("preview")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--rows", "n_rows", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many rows, from the top.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a spec key (as for tuneyard run).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the TUI's).")
@handle_errors
def data_preview(spec_path: str, n_rows: int, overrides: tuple[str, ...], as_json: bool) -> None:
    """The first rows of SPEC's dataset, formatted and tokenized as training sees them; the
    tokens the loss is taken on (labels) are highlighted."""
    from tuneyard.core.plugins import get_plugins
    from tuneyard.core.run.pipeline import preview_data
    from tuneyard.core.run.progress import quiet_libraries
    from tuneyard.core.spec import load_spec

    quiet_libraries()
    preview = preview_data(load_spec(spec_path, list(overrides)), get_plugins(), n_rows)
    if as_json:
        echo_json(preview, indent=None)
        return
    console.print(preview_text(preview))


#: how a previewed token looks: trained on (a label) or not (the prompt)
TRAINED = Style(bold=True, color="black", bgcolor="green")
PROMPT = Style(dim=True)


def preview_text(preview: dict[str, Any]) -> Text:
    """The rows of ``tuneyard data preview --json`` as the model sees them (CLI and TUI): each
    row's tokens concatenated, the trained-on (label) tokens in :data:`TRAINED` style, the
    others (prompt) dim; a word's tag (token classification) follows the word as ``/TAG``, a
    row's class (sequence classification) heads the row, and a preference row's rejected
    answer follows its chosen one."""
    rows = preview["rows"]
    text = Text.assemble(
        (f"{preview['source']} · format {preview['format']} · {preview['total_rows']} rows; "
         f"first {len(rows)}.  ", "bold"),
        ("trained", TRAINED), " = label tokens, ", ("prompt", PROMPT), " = not trained\n")
    for i, row in enumerate(rows, 1):
        if "label" in row:  # sequence classification: the class is the row's, no token's
            head = f"row {i}: {row['n_tokens']} tokens; label {row['label']}"
        else:
            head = f"row {i}: {row['n_trained']} of {row['n_tokens']} tokens trained"
        text.append(f"\n{head}\n", style="bold")
        tag = None  # the tag of the word being written, shown once the word is complete
        for token in row["tokens"]:
            starts_word = "label" in token or token["text"][:1].isspace()
            if tag and starts_word:
                text.append(f"/{tag}", style="bold green")
            if starts_word:
                tag = token.get("label")
            text.append(token["text"], style=TRAINED if token["trained"] else PROMPT)
        if tag:
            text.append(f"/{tag}", style="bold green")
        if "rejected" in row:  # a preference pair: the tokens above are the chosen answer's
            text.append("\nrejected: ", style="bold red")
            text.append(row["rejected"], style="red")
        text.append("\n")
    return text


# -- runs ----------------------------------------------------------------------------------
@cli.group()
def runs() -> None:
    """List and inspect runs in the registry."""


@runs.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show at most this many runs.")
@handle_errors
def runs_list(as_json: bool, limit: int) -> None:
    """Runs, newest first (the latest 50 unless --limit)."""
    rows = open_registry().list_runs(limit)
    if as_json:
        echo_json(rows)
        return
    # the id starts with the creation time (UTC), so no separate column for it
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    table.add_column("id (created UTC)", no_wrap=True, min_width=20)
    table.add_column("name", overflow="ellipsis", max_width=30)
    for col in ("status", "strategy", "step", "loss"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        loss = f"{r['last_loss']:.4f}" if r["last_loss"] is not None else ""
        table.add_row(r["id"], r["name"], _status(r["status"]), r["strategy"] or "",
                      f"{r['step']}/{r['max_steps']}", loss)
    console.print(table)


def _status(status: str) -> str:
    colour = {"completed": "green", "running": "cyan", "failed": "red", "stopped": "yellow",
              "interrupted": "magenta"}.get(status, "white")
    return f"[{colour}]{status}[/]"


@runs.command("stop")
@click.argument("run_ref", metavar="RUN")
@handle_errors
def runs_stop(run_ref: str) -> None:
    """Ask a running RUN to stop: it saves a checkpoint at its next step and ends `stopped`
    (resume it with `tuneyard resume RUN`). Also `tuneyard stop RUN`."""
    registry = open_registry()
    run = registry.get_run(run_ref)
    if not registry.request_stop(run["id"]):
        raise TuneyardError(f"run {run['id']} is {run['status']}; only a queued or running run "
                            "can be stopped")
    err_console.print(f"asked run {run['id']} to stop; it checkpoints at its next step")


cli.add_command(runs_stop, "stop")  # tuneyard stop RUN, the short form


@runs.command("show")
@click.argument("run_ref", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def runs_show(run_ref: str, as_json: bool) -> None:
    """One run: its record, evaluations (baseline vs final), checkpoints and artifacts."""
    registry = open_registry()
    run_id = registry.get_run(run_ref)["id"]
    if as_json:
        r = registry.get_run(run_id)
        r.update(evaluations=registry.evaluations(run_id), checkpoints=registry.checkpoints(run_id),
                 artifacts=registry.artifacts(run_id), loss=registry.metrics(run_id, "loss"),
                 eval_loss=registry.metrics(run_id, "eval_loss"), strategy_metrics={
                     name: registry.metrics(run_id, name)
                     for name in strategy_metric_names(registry, run_id)})
        echo_json(r)
        return
    show_run(registry, run_id)


def show_run(registry: Any, run_id: str) -> None:
    """Print a run's record (the first and last value of its loss and of its strategy's step
    metrics), its loss curve and its evaluation table (baseline, final, change)."""
    from tuneyard.core.registry import baseline_and_final

    r = registry.get_run(run_id)
    loss = registry.metric_curve(run_id, "loss")  # a chart's worth of points, first and last
    head = Table.grid(padding=(0, 2))
    for key in ("id", "name", "status", "base_model", "strategy", "dataset_source", "device",
                "train_rows", "eval_rows", "started_at", "ended_at", "output_dir", "error"):
        if r.get(key) not in (None, ""):
            head.add_row(f"[bold]{key}[/]",
                         _status(r[key]) if key == "status" else escape(str(r[key])))
    if (r.get("world_size") or 1) > 1:
        head.add_row("[bold]world_size[/]", f"{r['world_size']} processes (torchrun)")
    for name in ["loss", *strategy_metric_names(registry, run_id)]:
        first_last = loss if name == "loss" else registry.metric_curve(run_id, name, 2)
        if first_last:
            (s0, v0), (s1, v1) = first_last[0], first_last[-1]
            head.add_row(f"[bold]{escape(name)}[/]",
                         f"{v0:.4f} (step {s0}) → {v1:.4f} (step {s1})")
    for c in registry.checkpoints(run_id):
        head.add_row("[bold]checkpoint[/]", f"step {c['step']}: {c['path']}")
    for a in registry.artifacts(run_id):
        head.add_row("[bold]artifact[/]", f"{a['kind']}: {a['path']}")
    console.print(head)
    if len(loss) > 1:
        console.print(Text.from_ansi(loss_chart(loss, registry.metrics(run_id, "eval_loss"),
                                                min(console.width, 100))))
    results = baseline_and_final(registry.evaluations(run_id))
    if results:
        table = Table("evaluator", "metric", "baseline", "final", "change", title="evaluations")
        for (ev, metric), (base, final) in results.items():
            change = f"{final - base:+.4f}" if base is not None and final is not None else ""
            table.add_row(ev, metric, _num(base), _num(final), change)
        console.print(table)


def strategy_metric_names(registry: Any, run_id: str) -> list[str]:
    """The run's strategy's step metrics, then those of them recorded on the held-out set
    (``eval_<name>``, with ``training.eval_steps``)."""
    from tuneyard.core.registry import strategy_metrics

    names = registry.metric_names(run_id)
    own = strategy_metrics(names)
    return [*own, *(f"eval_{n}" for n in own if f"eval_{n}" in names)]


def loss_chart(loss: list[tuple[int, float]], eval_loss: list[tuple[int, float]],
               width: int) -> str:
    """The training loss (and the held-out loss of ``training.eval_steps``, when recorded)
    against the step, drawn with plotext in ``width`` columns and 14 lines."""
    import plotext as plt

    plt.clear_figure()
    plt.theme("clear")
    plt.plotsize(width, 14)
    plt.plot(*zip(*loss), label="train loss", marker="braille")
    if eval_loss:
        plt.plot(*zip(*eval_loss), label="eval loss", marker="hd")
    plt.xlabel("step")
    return plt.build()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


# -- plugins -------------------------------------------------------------------------------
@cli.group()
def plugins() -> None:
    """Plugins: list, install, uninstall, scaffold a new one."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@handle_errors
def plugins_list(as_json: bool, show_all: bool) -> None:
    """Third-party plugins (installed packages and plugins-directory files; --all adds the
    built-ins): version, source, hooks, components and why one was skipped."""
    from tuneyard.core.plugins import get_plugins

    p = get_plugins()
    try:
        open_registry().sync_plugins(p)
    except TuneyardError:
        pass  # no registry yet: the first run records the plugins
    infos = [i for i in p.infos.values() if show_all or i.source != "builtin"]
    if as_json:
        options = {f"{kind}:{name}": c.cls.Options.model_json_schema()
                   for kind, items in p.components.items() for name, c in items.items()}
        echo_json([{**vars(i), "status": i.status,
                    "options": {c: options[c] for c in i.components}} for i in infos])
        return
    if not infos:
        console.print("No third-party plugins (install one: tuneyard plugins install NAME|PATH; "
                      "--all lists the built-ins too).")
        return
    table = Table("plugin", "version", "source", "hooks", "status", title="plugins", box=None,
                  pad_edge=False, header_style="bold")
    for i in infos:
        status = {"ok": "[green]ok[/]", "disabled": "[yellow]disabled[/]",
                  "failed": "[red]skipped[/]"}[i.status]
        source = f"package {i.package}" if i.source == "package" else i.source
        table.add_row(escape(i.name), i.version or "", escape(source), ", ".join(i.hooks), status)
    console.print(table)
    for i in infos:
        if i.source == "file":
            console.print(f"{escape(i.name)}: file {escape(i.path)}", soft_wrap=True)
        if i.errors:
            console.print(f"[red]plugin {escape(i.name)} skipped:[/] " + escape("; ".join(
                i.errors)), soft_wrap=True)
        if i.disabled:
            console.print(f"[yellow]plugin {escape(i.name)} disabled:[/] not in "
                          "TUNEYARD_LOAD_PLUGINS", soft_wrap=True)
    shown = {i.name for i in infos}
    comps = Table("kind", "name", "plugin", "options", "description",
                  title="components (option schemas: --json)", box=None, pad_edge=False,
                  header_style="bold")
    for kind, items in p.components.items():
        for name, c in sorted(items.items()):
            if c.plugin in shown:
                comps.add_row(kind, name, c.plugin, ", ".join(c.cls.Options.model_fields),
                              c.cls.description)
    if comps.row_count:
        console.print()
        console.print(comps)


@plugins.command("install")
@click.argument("target", metavar="NAME|PATH")
@click.option("--upgrade", "-U", is_flag=True, help="Upgrade it if already installed.")
@click.option("--editable", "-e", is_flag=True,
              help="Install a local package folder in editable (development) mode.")
@handle_errors
def plugins_install(target: str, upgrade: bool, editable: bool) -> None:
    """Install a plugin package from PyPI (NAME) or a local folder or archive (PATH) with pip,
    into tuneyard's own environment; then list what it adds or changes. Exit status 2 when
    pip fails, 1 when the new plugin does not load."""
    from tuneyard.core.errors import PluginFailed
    from tuneyard.core.plugins import get_plugins, pip_argv, reload_plugins, run_pip

    argv = pip_argv("install", target, upgrade=upgrade, editable=editable)
    before = {n: (i.version, i.path, i.status) for n, i in get_plugins().infos.items()}
    run_pip(argv)
    after = reload_plugins()
    changed = [i for n, i in after.infos.items() if before.get(n) != (i.version, i.path,
                                                                       i.status)]
    if not changed:
        console.print(f"pip installed {escape(target)}; no tuneyard plugin was added or changed "
                      "(same plugins and versions as before)", soft_wrap=True)
        return
    for i in changed:
        what = ", ".join(c.replace(":", " ", 1) for c in i.components) or "no components"
        console.print(f"plugin [bold]{escape(i.name)}[/] {i.version} ({i.package}): {what} — "
                      + ("[green]ok[/]" if i.status == "ok" else "[red]skipped[/]"),
                      soft_wrap=True)
    failed = [i for i in changed if i.errors]
    if failed:
        raise PluginFailed("; ".join(
            f"plugin {i.name} is installed but skipped: {'; '.join(i.errors)} (fix it, or "
            f"tuneyard plugins uninstall {i.package or i.name})" for i in failed))


@plugins.command("uninstall")
@click.argument("name", metavar="NAME")
@handle_errors
def plugins_uninstall(name: str) -> None:
    """Uninstall a plugin package (by plugin or distribution NAME) with pip."""
    from tuneyard.core.plugins import get_plugins, package_of, pip_argv, reload_plugins, run_pip

    if name.startswith("-"):
        pip_argv("uninstall", name)  # refuses it, with the install's message
    package = package_of(get_plugins(), name)
    run_pip(pip_argv("uninstall", package))
    reload_plugins()
    console.print(f"uninstalled {package}")


@plugins.command("new")
@click.argument("name")
@click.option("--kind", type=click.Choice(SCAFFOLD_KINDS), default=SCAFFOLD_KINDS[0],
              show_default=True, help="The component it provides.")
@click.option("--dir", "parent", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Where to create the package folder.")
@handle_errors
def plugins_new(name: str, kind: str, parent: str) -> None:
    """Write a ready plugin package tuneyard-NAME/: pyproject with the entry point, a module
    with a working component, a passing test and a README."""
    from tuneyard.core.plugins import get_plugins
    from tuneyard.core.scaffold import new_plugin

    short, plugins = name.removeprefix("tuneyard-"), get_plugins()
    if short in plugins.components[kind] or short in plugins.infos:
        owner = (plugins.components[kind][short].plugin if short in plugins.components[kind]
                 else short)
        raise TuneyardError(f"plugins new: the name '{short}' is taken by plugin '{owner}'; "
                            "choose another (a second one would be skipped when loaded)")
    folder = shlex.quote(str(new_plugin(name, kind, Path(parent))))
    console.print(f"created {folder}\n\nnext:\n  tuneyard plugins install --editable {folder}\n"
                  f"  cd {folder} && python -m pytest", soft_wrap=True, highlight=False,
                  markup=False)


#: tuneyard's own commands; plugins add theirs through ``register_commands``
CORE_COMMANDS = dict(cli.commands)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """tuneyard's own commands, registered by this module as the built-in plugin ``commands``
    (an entry point like every built-in): the plugin manager never imports the CLI, and a
    plugin that replaces one of them is skipped in every process."""
    for name, command in CORE_COMMANDS.items():
        cli.add_command(command, name)


def main() -> None:
    """Console-script entry point: adds plugin commands, then runs the CLI. Ctrl-C before a
    command runs ends it without a traceback (exit 130); click turns one during a command into
    ``Aborted!`` (exit 1); a run turns it into a graceful stop.

    The plugins load here only when the command line names none of tuneyard's own commands
    (``--help``, a bare ``tuneyard``, a plugin's command): ``tuneyard runs list`` starts
    without importing them (the commands that use components load them when they do), and
    ``tuneyard --version`` answers without them (a slow plugin cannot slow it)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        options, command = global_options(sys.argv[1:])
        configure_logging("--debug" in options)
        if os.path.isdir(options.get("--plugins-dir", "")):
            use_plugins_dir(options["--plugins-dir"])
        if command not in CORE_COMMANDS and "--version" not in options:
            from tuneyard.core.plugins import get_plugins

            cli.commands.update(get_plugins().commands)
    except KeyboardInterrupt:
        err_console.print("Aborted!")
        sys.exit(130)
    cli(prog_name="tuneyard")


def global_options(args: list[str]) -> tuple[dict[str, str], str | None]:
    """The options before the command name (``--debug``, ``--plugins-dir DIR``) and the
    command name (``None`` when there is none), read before click parses the command line:
    plugins, which may add commands, load first."""
    found: dict[str, str] = {}
    takes_value = {p.opts[0] for p in cli.params if isinstance(p, click.Option) and not p.is_flag}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        name, eq, value = args[i].partition("=")
        if name in takes_value and not eq:
            value = args[i + 1] if i + 1 < len(args) else ""
            i += 1
        found[name] = value
        i += 1
    return found, args[i] if i < len(args) else None


if __name__ == "__main__":  # ``python -m tuneyard.core.cli``: how the TUI runs commands
    main()
