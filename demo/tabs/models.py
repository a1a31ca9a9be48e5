"""Models tab: the zoo on this machine as a table (pretext metric, linear-probe top-1 per tap)
and each model's card with its probe plot. Reads configs and cards only: loads no weights."""
from __future__ import annotations

from sslzoo.zoo._metric import format_value, headline_metric

from . import Tab
from .._core import DemoError, model_card, model_config, models_for, probe_plot


def probe_taps(configs: list[dict]) -> list[str]:
    """The probed taps of the models, each model's in its order, first seen first (an AlexNet's
    conv1..conv5, a ResNet-50's own stage names after them)."""
    taps: dict[str, None] = {}
    for cfg in configs:
        taps.update(dict.fromkeys(((cfg.get("probe") or {}).get("accuracy") or {})))
    return list(taps)


def models_table(names: list[str]) -> tuple[list[str], list[list[str]]]:
    """(column headers, one row per model): name, pretext, pretext metric, linear-probe top-1 (%)
    per tap the models were probed at (best tap marked *), and the best tap of the random-init
    baseline. The tap columns are whatever the models have, not a fixed conv1..conv5."""
    configs = [model_config(name) for name in names]
    taps = probe_taps(configs)
    rows = []
    for name, cfg in zip(names, configs):
        pm = headline_metric(cfg) or {}
        probe = cfg.get("probe") or {}
        acc = probe.get("accuracy") or {}
        best = max(acc, key=acc.get, default=None)
        rand = max(next(iter((probe.get("baselines") or {}).values()), {}).values(), default=None)
        cells = [f"{100 * acc[t]:.1f}{' *' if t == best else ''}" if t in acc else "" for t in taps]
        rows.append([cfg.get("name", name), cfg.get("pretext", "?"),
                     f"{pm['name']} {format_value(pm['name'], pm['value'])}" if pm else "",
                     *cells, f"{100 * rand:.1f}" if rand is not None else ""])
    return ["model", "pretext", "pretext metric", *taps, "random init (best tap)"], rows


def model_info(model_name: str):
    """-> (the model card as markdown, front matter stripped; the probe plot path or None)."""
    if not model_name:
        raise DemoError("pick a model first")
    return model_card(model_name), probe_plot(model_name)


def build() -> None:
    """The table of every local model, a card picker, the card and its probe plot."""
    from .._ui import gr, missing, picker, safe, shown

    names = models_for()
    if not names:
        return missing("")
    headers, rows = models_table(names)
    gr.Dataframe(value=rows, headers=headers, interactive=False, wrap=True,
                 label="The zoo on this machine: linear-probe top-1 (%) on frozen features per tap, best tap *")
    model = picker(names, "Model card")
    card, plot = model_info(names[0])
    with gr.Row():
        with gr.Column(scale=3):
            card_md = gr.Markdown(card, elem_id="model-card")
        with gr.Column(scale=2):
            plot_img = shown("Linear-probe top-1 by layer", value=plot)
    model.change(safe(model_info), [model], [card_md, plot_img], api_name="model_info")


TAB = Tab(id="models", title="Models", pretexts=None, build=build)
