"""The ``sslzoo`` command line (typer). Exit codes: 0 done, 1 failed, 2 bad usage,
3 done but some inputs were skipped (each named on stderr)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._cli_common import friendly_errors, shown

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console(highlight=False)


@app.command("list")
def list_(pattern: str = typer.Argument("*", help="glob over names"),
          tags: bool = typer.Option(False, "--tags", help="one row per name.tag"),
          as_json: bool = typer.Option(False, "--json", help="print a JSON list of objects, one per row")):
    """List the zoo's models (full names at any terminal width; --json for scripts)."""
    from rich.measure import Measurement

    from sslzoo import zoo
    from sslzoo.zoo._registry import lookup

    rows = []
    for name in zoo.list_models(pattern, tags=tags):
        entry, w = lookup(name)
        rows.append({"name": name, "default_tag": entry.default_tag, "tags": list(entry.weights),
                     "pretext": w.config["pretext"], "architecture": w.config["architecture"], "source": w.source})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "default tag", "tags", "pretext", "source")
    for r in rows:
        table.add_row(*(escape(v) for v in (r["name"], r["default_tag"], ", ".join(r["tags"]), r["pretext"], r["source"])))
    # As wide as the table needs, not the terminal (80 columns when piped): no name is cut or wrapped.
    wide = Console(highlight=False, width=max(out.width, Measurement.get(out, out.options.update_width(10_000), table).maximum))
    wide.print(table)


@app.command()
def info(name: str = typer.Argument(..., help="zoo name, local model dir or hf-hub:ORG/NAME\\[@REV]"),
         as_json: bool = typer.Option(False, "--json", help="print config.json")):
    """Show a model's configuration, data config, provenance and probe results (read from its
    config.json, checked, without building the model)."""
    from rich.markup import escape

    from sslzoo import zoo

    from sslzoo.zoo._metric import headline_metric, metric_text

    def text(value) -> str:  # config.json's strings and the path are user text: no markup, no control characters
        return escape(shown(str(value)))

    with friendly_errors():
        directory = zoo.resolve(name)
        config = zoo.read_config(directory)  # schema-checked: the fields printed below exist and have their types
    if as_json:
        print(json.dumps(config, indent=2))
        return
    out.print(f"[bold]{text(config.get('name', name))}[/]  ({text(directory)})")
    out.print(text(f"architecture {config['architecture']} {config.get('arch_args', {})}, pretext {config['pretext']}"))
    out.print(text(f"input {config['data_config']['input_size']} {config['data_config'].get('channels')}"))
    record = headline_metric(config)
    if record:
        out.print(text(f"pretext {metric_text(record)}"))
    acc = (config.get("probe") or {}).get("accuracy")
    if acc:
        out.print(text("linear probe: " + "  ".join(f"{k} {100 * v:.2f}" for k, v in acc.items())))


@app.command()
def train(
    model: str = typer.Argument("rotation-alexnet", help="zoo entry whose architecture and pretext to train"),
    data: Optional[str] = typer.Option(None, help="fashion-mnist, photos (the natural photos installed here), "
                                       "photos:PATH (a folder of large photos) or imagefolder:PATH; default: the "
                                       "pretext's (photos for the colour pretexts, else fashion-mnist)"),
    data_root: Optional[Path] = typer.Option(None, help="directory with the Fashion-MNIST IDX files"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="run directory (checkpoint, model/); default runs/MODEL"),
    epochs: Optional[float] = typer.Option(None, help="default: the pretext's recipe"),
    batch_size: Optional[int] = typer.Option(None, help="source images per step; default: the recipe's"),
    optimizer: Optional[str] = typer.Option(None, help="sgd (Nesterov momentum) or adam; default: the recipe's"),
    lr: Optional[float] = typer.Option(None, help="peak learning rate; default: the recipe's"),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum or Adam's beta1; default: the recipe's"),
    weight_decay: Optional[float] = typer.Option(None, help="on conv/linear weights; default: the recipe's"),
    warmup_steps: Optional[int] = typer.Option(None, help="linear warm-up before the cosine decay; default: the recipe's"),
    limit: Optional[int] = typer.Option(None, help="use only the first N training images"),
    zoom_out: int = typer.Option(0, min=0, help="scale jitter: a random black border of 0..N source px per batch"),
    checkpoint_every: int = typer.Option(200, help="steps between checkpoints"),
    seed: int = typer.Option(0), device: str = typer.Option("cpu", help="cpu or cuda"),
    precision: str = typer.Option("auto", help="auto, bf16 or fp32"),
    eval_limit: Optional[int] = typer.Option(None, help="images for the final pretext metric"),
    stop_after: Optional[int] = typer.Option(None, hidden=True),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/checkpoint.safetensors"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Train a pretext model; writes OUT/checkpoint.safetensors and, at the end, OUT/model (Hub layout).
    The recipe (optimiser, lr, epochs, batch size, ...) is the pretext's own unless given here."""
    from sslzoo.training.loop import TrainConfig, train as run

    cfg = TrainConfig(model=model, data=data, data_root=str(data_root) if data_root else None, out=str(out_dir or ""),
                      epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
                      weight_decay=weight_decay, warmup_steps=warmup_steps, limit=limit, zoom_out=zoom_out,
                      checkpoint_every=checkpoint_every, seed=seed, device=device, precision=precision,
                      progress=progress, eval_limit=eval_limit, stop_after=stop_after)
    with friendly_errors():
        run(cfg, resume=resume, log=out.print)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="the --out directory of sslzoo train"),
    device: str = typer.Option("cpu", help="cpu or cuda (for the final metric)"),
):
    """RUN_DIR/checkpoint.safetensors -> RUN_DIR/model, measured and saved as train would at that step
    (a run cut before its end still gives a model; its provenance says where it stopped)."""
    from sslzoo.training.loop import export as run

    with friendly_errors():
        run(run_dir, device=device, log=out.print)


@app.command()
def evaluate(
    name_or_dir: str = typer.Argument(..., metavar="NAME_OR_DIR", help="zoo name, local model dir or hf-hub:ORG/NAME\\[@REV]"),
    data: Optional[str] = typer.Option(None, help="fashion-mnist, photos, photos:PATH or imagefolder:PATH (its test "
                                       "split); default: the data the model was trained on, else the pretext's"),
    data_root: Optional[Path] = typer.Option(None, help="directory with the Fashion-MNIST IDX files"),
    limit: Optional[int] = typer.Option(None, min=1, help="use only the first N test images"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    precision: str = typer.Option("auto", help="auto, bf16 or fp32"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
):
    """The pretext's headline metric (rotation accuracy, hole PSNR, ab accuracy, ...) on the test split, as train measures it."""
    from sslzoo.training.loop import evaluate as run

    with friendly_errors():
        r = run(name_or_dir, data=data, data_root=str(data_root) if data_root else None, limit=limit,
                device=device, precision=precision)
    if as_json:
        print(json.dumps(r, indent=2))
        return
    others = "".join(f", {k} {v:.4f}" for k, v in list(r["metrics"].items())[1:])
    out.print(escape(shown(f"{r['model']}: {r['pretext']} {r['metric']} {r['value']:.4f} on {r['split']} "
                           f"({r['images']} images, {r['precision']}){others}")))


# Commands with their own modules (each keeps its heavy imports inside the command).
from ._cli_extract import extract  # noqa: E402
from ._cli_probe import probe  # noqa: E402
from ._cli_convert import convert  # noqa: E402
from ._cli_demo import demo  # noqa: E402
from ._cli_hub import publish, pull  # noqa: E402
from ._cli_cache import cache  # noqa: E402

app.command()(extract)
app.command()(probe)
app.command()(convert)
app.command()(demo)
app.command()(publish)
app.command()(pull)
app.command()(cache)


def main():  # python -m sslzoo
    app()
