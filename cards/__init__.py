"""Model cards: ``template.md`` (Jinja2, rendered by huggingface_hub's ModelCard) filled from a
model's config.json (provenance, probe report) and the per-model card data ``<entry>.json``;
``converted.md`` for the authors' checkpoints converted by ``sslzoo convert`` (whose provenance
in config.json says where they come from). Every save re-renders the card from config.json, so a
probe adds its results without losing the provenance."""
from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..zoo._metric import headline_metric, metric_text

HERE = files(__package__)
TEMPLATE = HERE / "template.md"
CONVERTED_TEMPLATE = HERE / "converted.md"


def card_data_for(name: str) -> dict[str, Any]:
    """Per-model card data: cards/<pretext>-<arch>.json (the tag is dropped); {} when none."""
    entry = name.split(".")[0]
    path = HERE / f"{entry}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def eval_results(config: dict[str, Any]) -> list[EvalResult]:
    """model-index entries from the probe report stored in config.json (never typed by hand)."""
    probe = config.get("probe") or {}
    out = []
    for layer, acc in (probe.get("accuracy") or {}).items():
        out.append(EvalResult(
            task_type="image-classification", task_name="Linear probe on frozen features",
            dataset_type=probe.get("dataset_id", "fashion_mnist"), dataset_name=probe.get("dataset", "Fashion-MNIST"),
            dataset_split="test", metric_type="accuracy", metric_name=f"top-1 ({layer})",
            metric_value=round(100 * acc, 2)))
    return out


def render_card(config: dict[str, Any]) -> str:
    name = config.get("name", f"{config.get('pretext')}-{config.get('architecture')}")
    prov = config.get("provenance") or {}
    tags = ["self-supervised", "pretext-task", config.get("pretext", ""), config.get("architecture", "")]
    if prov.get("converter"):  # an authors' checkpoint: its own licence, dataset and card text
        extra, template = {}, CONVERTED_TEMPLATE
        data = ModelCardData(model_name=name, library_name="sslzoo", license=prov["license_id"], tags=tags + ["converted"],
                             datasets=[prov["dataset"]], eval_results=eval_results(config) or None,
                             pipeline_tag="image-feature-extraction")
        if prov["license_id"] == "other":
            data.license_name, data.license_link = "see-card", prov["repo"]
    else:
        extra, template = card_data_for(name), TEMPLATE
        data = ModelCardData(model_name=name, library_name="sslzoo", license=extra.get("license", "mit"), tags=tags,
                             datasets=extra.get("datasets"), eval_results=eval_results(config) or None,
                             pipeline_tag="image-feature-extraction")
    record = headline_metric(config)
    card = ModelCard.from_template(data, template_path=str(template), config=config, extra=extra, name=name,
                                   probe=config.get("probe") or {}, prov=prov,
                                   pretext_metric=metric_text(record) if record else None)
    return str(card)
