"""The pretext's headline metric as provenance records it (one key, ``pretext_metric``), read and
shown the same way by ``sslzoo info``, the model cards and the demo."""
from __future__ import annotations

from typing import Any

# how each metric reads: a share shown in %, a level in dB, a plain number
_PERCENT = {"closer_share", "auc"}  # and any name with an "accuracy" part (ab_accuracy_rebalanced), any *_auc
_UNITS = {"psnr": " dB", "input_psnr": " dB", "hole_psnr": " dB", "mean_fill_psnr": " dB"}


def headline_metric(config: dict[str, Any]) -> dict[str, Any] | None:
    """{"name", "value", "split", ...} of a model's headline pretext metric, or None. A model saved
    before the key was generic (``pretext_accuracy``) reads as accuracy."""
    prov = config.get("provenance") or {}
    if prov.get("pretext_metric"):
        return prov["pretext_metric"]
    if prov.get("pretext_accuracy"):
        old = prov["pretext_accuracy"]
        return {"name": "accuracy", "value": old["value"], "split": old["split"], "higher_is_better": True}
    return None


def format_value(name: str, value: float) -> str:
    name = name.rsplit("/", 1)[-1]  # a multi-task model's "<task>/accuracy" reads as its task's
    if name in _PERCENT or "accuracy" in name.split("_") or name.endswith("_auc"):
        return f"{100 * value:.2f} %"
    if name in _UNITS:
        return f"{value:.2f}{_UNITS[name]}"
    return f"{value:.4g}"


def metric_text(record: dict[str, Any]) -> str:
    """e.g. 'accuracy 99.25 % on fashion-mnist/test' or 'psnr 24.10 dB on fashion-mnist/test
    (input_psnr 11.2 dB)'."""
    others = [f"{k} {format_value(k, v)}" for k, v in (record.get("all") or {}).items() if k != record["name"]]
    return (f"{record['name'].replace('_', ' ')} {format_value(record['name'], record['value'])} on {record['split']}"
            + (f" ({', '.join(o.replace('_', ' ') for o in others)})" if others else ""))
