"""``sslzoo probe``: linear probe on frozen features (training/probe.py) as a typer command."""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ._cli_common import err, friendly_errors

out = Console(highlight=False)


class Solver(str, Enum):
    fast = "fast"
    seed = "seed"
    both = "both"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def probe(
    name_or_dir: str = typer.Argument(..., metavar="NAME_OR_DIR",
                                      help="zoo name, local model directory or hf-hub:ORG/NAME\\[@REV]"),
    dataset: str = typer.Option("fashion-mnist", help="fashion-mnist or imagefolder:PATH (with PATH/train and PATH/test)"),
    data_root: Optional[Path] = typer.Option(None, help="directory with the Fashion-MNIST IDX files"),
    layer: Optional[List[str]] = typer.Option(None, "--layer", help="tap to probe; repeat for several (default: all)"),
    solver: Solver = typer.Option(Solver.fast, help="fast: L-BFGS on cached features; seed: the seed's SGD protocol; both"),
    train_limit: Optional[int] = typer.Option(None, min=1, help="use only the first N training images"),
    test_limit: Optional[int] = typer.Option(None, min=1, help="use only the first N test images"),
    input_size: Optional[int] = typer.Option(None, min=1, help="probe on square images of this side instead of the "
                                             "model's own input size (to compare models at one size; no heads saved)"),
    no_random: bool = typer.Option(False, "--no-random", help="skip the random-init baseline"),
    no_save_heads: bool = typer.Option(False, "--no-save-heads", help="do not store the probe heads in the model"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="where the report, plot and (with heads) the model go "
                                           "(default: the model directory if local and writable, else ./probe-NAME)"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache (default: $SSLZOO_CACHE or ~/.cache/sslzoo/features)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON instead of a table"),
):
    """Linear probe per tap on frozen features: model vs random init; writes probe_report.json and probe_plot.png."""
    from sslzoo.training.probe import run_probe

    with friendly_errors():
        report = run_probe(name_or_dir, dataset=dataset, layers=layer or None, solver=solver.value,
                           train_limit=train_limit, test_limit=test_limit, random_baseline=not no_random,
                           save_heads=not no_save_heads, out_dir=out_dir, data_root=data_root,
                           cache_dir=cache_dir, input_size=input_size, log=lambda line: err.print(line, soft_wrap=True))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    out.print(_table(report))
    timings = report["timings"]
    fits = ", ".join(f"{s} {t:.1f} s" for s, t in timings["fit_s"].items())
    out.print(f"{report['train_images']} train / {report['test_images']} test images; "
              f"fits (model) {fits}; total {timings['total_s']:.1f} s")
    dtypes = ", ".join(f"{s} {d}" for s, d in report["solver_pass_dtype"].items())
    out.print(f"solver passes over the features: {dtypes} ({report['machine']})")
    if "agreement" in report:
        a = report["agreement"]
        out.print(f"fast vs seed: max |top-1 difference| {a['max_abs_diff_pt']:.2f} pt, fast {a['speedup']:.1f}x faster")
    out.print(f"report: {report['report_path']}")
    out.print(f"plot:   {report['plot_path']}")
    if report.get("saved_model_dir"):
        out.print(f"probe heads saved with the model in {report['saved_model_dir']}")


def _table(report: dict) -> Table:
    """layer | model top-1 | random top-1 | delta (+ the second solver's column with --solver both)."""
    primary = report["primary_solver"]
    model_rows = report["results"]["model"]
    second = [s for s in model_rows if s != primary]
    table = Table(title=f"{report['model']}: {report['dataset_name']} test top-1 (%)")
    table.add_column("layer")
    table.add_column(f"model top-1 ({primary})", justify="right")
    table.add_column("random top-1", justify="right")
    table.add_column("delta", justify="right")
    for s in second:
        table.add_column(f"model top-1 ({s})", justify="right")
    random = report.get("random_accuracy") or {}
    for layer in report["layers"]:
        acc, rnd = report["accuracy"][layer], random.get(layer)
        delta = "" if rnd is None else f"{100 * (acc - rnd):+.2f}"
        table.add_row(layer, _pct(acc), _pct(rnd), delta, *(_pct(model_rows[s][layer]["top1"]) for s in second))
    return table
