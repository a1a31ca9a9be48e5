"""The Python functions behind the demo's tabs (no gradio here; the app wraps them).

Each takes the model's name, the upload (a file path or an image) and the tab's controls, and
returns plain values: PIL images, {label: probability} dicts for gr.Label, markdown strings.
Problems the user can fix raise ``DemoError``.
"""
from __future__ import annotations

import random

import torch
from PIL import Image

from sslzoo.zoo._metric import format_value, headline_metric
from sslzoo.zoo.pretexts import jigsaw as jg, relpatch as rp, rotation as rot
from sslzoo.zoo.pretexts.patches import GRID, cut_tiles, grid_image

from ._core import (DemoError, get_model, load_upload, model_config, model_input, probe_plot, probs_dict, square,
                    to_pil, to_tensor)

ANGLE_LABELS = [f"{a}°" for a in rot.ANGLES]
SCALE = 3  # display tiles are SCALE x the model's tile size
GAP = 6  # px between displayed tiles


def _model(name: str, pretext: str):
    m = get_model(name)
    if m.pretext != pretext:
        raise DemoError(f"{name} is a {m.pretext} model; this tab needs a {pretext} model")
    return m


def _pct(p: float) -> str:
    return f"{100 * p:.1f} %"


def _view(m, x: torch.Tensor, size: int = 192) -> Image.Image:
    """The model's normalised input as the picture it sees (its size and mode, upscaled)."""
    cfg = m.data_config
    mean = torch.tensor(cfg["mean"]).view(-1, 1, 1)
    std = torch.tensor(cfg["std"]).view(-1, 1, 1)
    return to_pil(x * std + mean, size)


# --- Rotation --------------------------------------------------------------------------------------

def parse_turn(turn) -> int:
    """0/90/180/270 (int, "90", "90°") or None -> quarter turns 0..3."""
    if turn in (None, ""):
        return 0
    text = str(turn).strip().rstrip("°").strip()
    try:
        deg = int(float(text))
    except ValueError:
        raise DemoError(f"turn must be one of {', '.join(ANGLE_LABELS)}, got {turn!r}") from None
    if deg % 90:
        raise DemoError(f"turn must be one of {', '.join(ANGLE_LABELS)}, got {turn!r}")
    return (deg // 90) % 4


def rotation(model_name: str, upload, turn=0):
    """-> (the upload turned by ``turn``, {angle: p} the model gives it, that image turned upright
    by the model's prediction, gallery [(image, caption)] of the upload in its four rotations
    with the model's guess for each, summary)."""
    m = _model(model_name, "rotation")
    k = parse_turn(turn)
    base = square(load_upload(upload))
    x = model_input(m, base)
    with torch.inference_mode():
        probs = torch.softmax(m.predict_pretext(rot.rotate_all(x[None])[0]).float(), -1)  # 4 x 4
    gallery = []
    for j in range(4):
        pj = int(probs[j].argmax())
        mark = "✓" if pj == j else "✗"
        gallery.append((base.rotate(90 * j), f"{ANGLE_LABELS[j]} → {ANGLE_LABELS[pj]} {mark}"))
    turned = base.rotate(90 * k)
    pred = int(probs[k].argmax())
    upright = turned.rotate(-90 * pred)
    verdict = "right" if pred == k else f"wrong (it was turned by {ANGLE_LABELS[k]})"
    summary = (f"**{model_name}** says this image is turned by **{ANGLE_LABELS[pred]}** counter-clockwise "
               f"({_pct(float(probs[k, pred]))}); you turned it by {ANGLE_LABELS[k]}: {verdict}. "
               f"Turned back by {ANGLE_LABELS[pred]} it should stand upright. "
               f"Over the four turns the model is right {sum(int(probs[j].argmax()) == j for j in range(4))}/4 times.")
    return turned, probs_dict(probs[k], ANGLE_LABELS), upright, gallery, summary


# --- Jigsaw ----------------------------------------------------------------------------------------

def perm_text(perm) -> str:
    return "".join(str(int(v)) for v in perm)


def parse_index(value, size: int, what: str, rng: random.Random | None = None) -> int:
    """A user's index (int, float, numeric string) in 0..size-1; None/"" draws one at random."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "random")):
        return (rng or random).randrange(size)
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"{what} must be a number from 0 to {size - 1}, got {value!r}") from None
    if f != int(f) or not 0 <= f < size:
        raise DemoError(f"{what} must be a whole number from 0 to {size - 1}, got {value!r}")
    return int(f)


def _display_tiles(m, img: Image.Image, cells: torch.Tensor) -> torch.Tensor:
    """Colour tiles for display in the model's tile geometry, SCALE x larger: K x 3 x t x t."""
    cell, tile = m.head.cell * SCALE, m.head.tile * SCALE
    disp = to_tensor(square(img, GRID * cell))[None]
    return cut_tiles(disp, cell=cell, tile=tile, cells=cells[None])[0]


def jigsaw(model_name: str, upload, perm_index=None, top: int = 5):
    """-> (original, shuffled puzzle, puzzle reassembled by the top prediction,
    {"#index (perm)": p} for the top permutations, the permutation index used, summary)."""
    m = _model(model_name, "jigsaw")
    perms = jg.permutations_of(m)
    idx = parse_index(perm_index, len(perms), "permutation")
    img = load_upload(upload)
    base = square(img)
    tiles, _ = jg.make_puzzle(model_input(m, base), idx, m)
    with torch.inference_mode():
        logits = m.predict_pretext(tiles[None])[0]
    probs = torch.softmax(logits.float(), -1)
    best = int(probs.argmax())
    shown = _display_tiles(m, img, perms[idx])  # position i shows cell perms[idx][i]
    shuffled = to_pil(jg.puzzle_image(shown, GAP, 1.0))
    fixed = to_pil(jg.puzzle_image(jg.reassemble(shown, perms[best]), GAP, 1.0))
    original = to_pil(jg.puzzle_image(jg.reassemble(shown, perms[idx]), GAP, 1.0))
    order = torch.argsort(probs, descending=True)[:top].tolist()
    label = {f"{'✓ ' if j == idx else ''}#{j} ({perm_text(perms[j])})": float(probs[j]) for j in order}
    in_place = int((perms[best] == perms[idx]).sum())
    verdict = "solved it" if best == idx else f"guessed #{best}: {in_place}/9 tiles land in the right place"
    rank = int((probs > probs[idx]).sum()) + 1
    summary = (f"Shuffled with permutation **#{idx}** ({perm_text(perms[idx])}: position i shows tile perm[i]) "
               f"of the model's {len(perms)}. **{model_name}** {verdict} "
               f"({_pct(float(probs[best]))}); the true permutation is its rank {rank} ({_pct(float(probs[idx]))}).")
    return original, shuffled, fixed, label, idx, summary


# --- Relative patch location -----------------------------------------------------------------------

def parse_position(position, rng: random.Random | None = None) -> int:
    if isinstance(position, str) and position.strip().lower() in rp.POSITIONS:
        return rp.POSITIONS.index(position.strip().lower())
    return parse_index(position, len(rp.POSITIONS), "position", rng)


def relpatch(model_name: str, upload, position=None):
    """-> (centre | neighbour pair, {position: p}, the model's answer on the grid, where the two
    patches really are, the position used, summary)."""
    m = _model(model_name, "relative-patch")
    pos = parse_position(position)
    img = load_upload(upload)
    pair, _ = rp.make_pair(model_input(m, square(img)), pos, m)
    with torch.inference_mode():
        logits = m.predict_pretext(pair[None])[0]
    probs = torch.softmax(logits.float(), -1)
    pred = int(probs.argmax())
    tiles = _display_tiles(m, img, torch.arange(GRID * GRID))  # 9 x 3 x t x t, row-major
    neighbour = rp.NEIGHBOURS[pos]
    blank = torch.full_like(tiles[0], 0.93)
    pair_img = torch.cat([tiles[rp.CENTRE], torch.ones(3, tiles.shape[-2], 3 * GAP), tiles[neighbour]], dim=-1)
    answer = torch.stack([blank] * 9)
    answer[rp.CENTRE], answer[rp.NEIGHBOURS[pred]] = tiles[rp.CENTRE], tiles[neighbour]
    truth = tiles * 0.25 + 0.75  # the other cells faded
    truth[rp.CENTRE], truth[neighbour] = tiles[rp.CENTRE], tiles[neighbour]
    verdict = "right" if pred == pos else f"wrong: it is the **{rp.POSITIONS[pos]}** neighbour"
    summary = (f"**{model_name}** puts the second patch **{rp.POSITIONS[pred]}** of the centre patch "
               f"({_pct(float(probs[pred]))}): {verdict}.")
    return (to_pil(pair_img), probs_dict(probs, list(rp.POSITIONS)), to_pil(grid_image(answer, GAP, 1.0)),
            to_pil(grid_image(truth, GAP, 1.0)), rp.POSITIONS[pos], summary)


# --- Classify (linear probe) -----------------------------------------------------------------------

def probe_layers(model_name: str) -> list[str]:
    """Taps with a stored probe head, in network order."""
    heads = (model_config(model_name).get("probe") or {}).get("heads", {})
    return sorted(heads, key=lambda layer: (len(layer), layer))


def classify(model_name: str, layer: str, upload, top: int = 3):
    """-> ({class: p} top ``top``, what the model sees, the model's probe plot path, summary)."""
    m = get_model(model_name)
    if not len(m.probes):
        raise DemoError(f"{model_name} has no probe heads (run `sslzoo probe {model_name}`)")
    if layer not in m.probes:
        raise DemoError(f"{model_name} has no probe head for {layer!r}; pick one of {', '.join(probe_layers(model_name))}")
    x = model_input(m, load_upload(upload))
    with torch.inference_mode():
        logits = m.classify(x[None], layer)[0]
    label = probs_dict(torch.softmax(logits.float(), -1), m.classes, top)
    probe = model_config(model_name).get("probe") or {}
    acc = (probe.get("accuracy") or {}).get(layer)
    dataset = probe.get("dataset", "its probe dataset")
    acc_text = f" (that probe's test top-1: {_pct(acc)})" if acc is not None else ""
    best = max((probe.get("accuracy") or {}).items(), key=lambda kv: kv[1], default=None)
    best_text = f" The best tap of this model is {best[0]} ({_pct(best[1])})." if best else ""
    summary = (f"Linear probe on frozen **{layer}** features of **{model_name}**, trained on {dataset}{acc_text}: "
               f"**{next(iter(label))}**.{best_text} The classes are {dataset}'s, whatever the image shows.")
    return label, _view(m, x), probe_plot(model_name), summary


# --- Models ----------------------------------------------------------------------------------------

def probe_taps(configs: list[dict]) -> list[str]:
    """The probed taps of the models, each model's in its order, first seen first (an AlexNet's
    conv1..conv5, a ResNet-50's own stage names after them)."""
    taps: dict[str, None] = {}
    for cfg in configs:
        taps.update(dict.fromkeys(((cfg.get("probe") or {}).get("accuracy") or {})))
    return list(taps)


def models_table(names: list[str]) -> tuple[list[str], list[list[str]]]:
    """(column headers, one row per model): name, pretext, pretext accuracy, linear-probe top-1 (%)
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
    from ._core import model_card

    if not model_name:
        raise DemoError("pick a model first")
    return model_card(model_name), probe_plot(model_name)
