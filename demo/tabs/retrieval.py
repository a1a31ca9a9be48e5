"""Retrieval tab: the 8 Fashion-MNIST test images whose features at one tap of a model are closest
to the upload's (cosine similarity of global-average-pooled maps; ``zoo._retrieval``), with their
classes: what each pretext's features call similar. Every model with weights here is offered,
whatever its pretext; the pseudo-tap ``pixels`` is the raw-pixel baseline at the model's input."""
from __future__ import annotations

from collections import Counter

from sslzoo import zoo
from sslzoo.zoo import _retrieval as rt
from sslzoo.zoo.pretexts.decoder import to_unit

from . import Tab
from .._core import DemoError, display_factor, enlarge, get_model, load_upload, model_input, models_for, to_pil

K = 8  # neighbours shown
NEIGHBOUR_DISPLAY = 112  # px the 28-px test images are enlarged to (about; by a whole factor)
PIXELS_LABEL = "raw pixels (baseline)"
FIRST_BUILD = ("The first query of a model builds its index of the 10,000 Fashion-MNIST test images (all its taps "
               "in one pass: from seconds to a couple of minutes on a CPU); it is cached on disk, so later queries, "
               "its other taps and a restart of the demo are instant.")


def tap_choices(model_name: str) -> list[tuple[str, str]]:
    """(label, value) of the taps a model's index can be built at: its taps, then raw pixels."""
    return [(PIXELS_LABEL if t == rt.PIXELS else t, t) for t in rt.taps(get_model(model_name))]


def _what(m, tap: str, dims: int) -> str:
    if tap == rt.PIXELS:
        c, h, w = m.data_config["input_size"]
        return (f"**raw pixels** as **{m.name}** takes them ({h} px, {c} channel{'s' if c > 1 else ''}, area-averaged "
                f"to {dims:,} values; no network)")
    return f"**{tap}** features of **{m.name}** (global average pool: {dims:,} dims)"


def _index_note(idx: rt.Index) -> str:
    if idx.source == "built":
        return (f"Index of the {len(idx):,} test images built just now in {idx.seconds:.1f} s (taps "
                f"{', '.join(idx.taps_built)}) and cached on disk: the next query is instant.")
    return f"Index from {'this process' if idx.source == 'memory' else 'the disk cache'} ({idx.seconds:.2f} s)."


def retrieval(model_name: str, tap: str, upload, gallery=None):
    """-> (the upload as the model sees it, gallery [(test image, caption)] of its K nearest test
    images, best first, summary). ``gallery``: the images searched (default: the Fashion-MNIST test
    split; tests pass a subset)."""
    m = get_model(model_name)
    if not tap:
        raise DemoError("pick a tap first")
    if tap not in rt.taps(m):
        raise DemoError(f"{model_name} has no tap {tap!r}; pick one of {', '.join(rt.taps(m))}")
    img = load_upload(upload)
    try:
        idx = rt.index(m, tap, gallery)
        positions, sims = rt.search(idx, rt.query_vector(m, tap, img), K)
    except zoo.ZooError as e:
        raise DemoError(str(e)) from None
    data = idx.gallery
    names = [data.classes[int(data.labels[p])] for p in positions]
    factor = display_factor(data.images.shape[-1], NEIGHBOUR_DISPLAY)
    shown = [(enlarge(to_pil(data.images[p].float() / 255), factor), f"{r}. #{int(p)} {name} · cos {float(s):.3f}")
             for r, (p, name, s) in enumerate(zip(positions, names, sims), 1)]
    x = model_input(m, img)  # C x H x W, normalised
    view = enlarge(to_pil(to_unit(x, m.data_config)), display_factor(x.shape[-2]))
    votes = ", ".join(f"{name} × {n}" for name, n in Counter(names).most_common())
    what = _what(m, tap, idx.vectors.shape[1])
    summary = (f"The {K} test images ({data.name}) nearest to yours by cosine similarity of {what}: {votes}. "
               f"The classes are only shown, never used to search. {_index_note(idx)}")
    return view, shown, summary


def all_models() -> list[str]:
    """Every model with weights here, whatever its pretext: what this tab offers."""
    return models_for()


def build() -> None:
    """Model, tap, upload -> the 8 nearest test images with their classes and similarities."""
    from .._ui import examples, gr, missing, picker, run, safe, shown, upload

    names = TAB.models()
    if not names:
        return missing("trained")
    taps = tap_choices(names[0])
    with gr.Row():
        with gr.Column(scale=2):
            model = picker(names)
            tap = gr.Radio(taps, value=taps[-2][1], label="Tap (or raw pixels)", elem_id="retrieval-tap")
            image = upload("retrieval")
            go = gr.Button("Find the nearest test images", variant="primary")
            gr.Markdown(FIRST_BUILD, elem_classes="caption")
            examples("retrieval", image)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id="retrieval-summary")
            view = shown("Your image, as the model sees it", height=200)
            gallery = gr.Gallery(label=f"The {K} nearest Fashion-MNIST test images (rank. #position class · cosine)",
                                 columns=4, height="auto", format="png", object_fit="contain",
                                 elem_id="retrieval-gallery")

    def pick(name):
        choices = tap_choices(name)
        return gr.Radio(choices=choices, value=choices[-2][1])

    model.change(safe(pick), [model], [tap], api_visibility="private")
    run(go, retrieval, [model, tap, image], [view, gallery, summary], "retrieval")


TAB = Tab(id="retrieval", title="Retrieval", pretexts=None, build=build, runs=all_models)
