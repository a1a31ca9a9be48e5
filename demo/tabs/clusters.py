"""Clusters tab: the DeepCluster cluster the model's top layer puts the upload in (and its top 3
clusters' probabilities), beside training images of that cluster and its size, read from the
``clusters.safetensors`` that ships in the model's directory (``deepcluster.CLUSTERS_FILE``:
"sizes" k, "index" k x G dataset positions (-1: none), "members" k x G x C x h x w uint8). Without
that file the tab says so in one line and still shows the cluster."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from sslzoo.zoo.pretexts import deepcluster as dc
from sslzoo.zoo.pretexts.decoder import to_unit

from . import Tab
from .._core import display_factor, enlarge, load_upload, model_dir, model_input, pct, pretext_model, probs_dict, to_pil

CLUSTERS_FILE = dc.CLUSTERS_FILE
MEMBER_DISPLAY = 112  # px the training images are enlarged to (about; by a whole factor)
MAX_SHOWN = 64  # training images shown at most, whatever the file holds


class NoClusters(Exception):
    """The model's clusters file is missing or unusable: the one-line reason."""


_INT_DTYPES = ("I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64")


def read_cluster(directory: str | Path, cluster: int, k: int) -> tuple[int, list[tuple[int, torch.Tensor]]]:
    """(size of ``cluster`` in the model's last clustering, [(dataset position, C x h x w uint8
    image)] of its members in the file) from ``directory/clusters.safetensors``, reading that
    cluster's rows only; ``NoClusters`` with the reason if the file is missing or does not fit a
    model of ``k`` clusters."""
    from safetensors import SafetensorError, safe_open

    path = Path(directory) / CLUSTERS_FILE
    if not path.is_file():
        raise NoClusters(f"no {CLUSTERS_FILE} ships with this model")
    try:
        with safe_open(str(path), "pt") as f:
            missing = {"sizes", "index", "members"} - set(f.keys())
            if missing:
                raise NoClusters(f"{CLUSTERS_FILE} has no {', '.join(sorted(missing))}")
            sizes, index, members = (f.get_slice(n) for n in ("sizes", "index", "members"))
            ss, si, sm = sizes.get_shape(), index.get_shape(), members.get_shape()
            if len(ss) != 1 or len(si) != 2 or len(sm) != 5 or ss[0] != k or si[0] != k or list(sm[:2]) != list(si):
                raise NoClusters(f"{CLUSTERS_FILE} does not fit this model's {k} clusters (sizes {ss}, index {si}, "
                                 f"members {sm}; expected k, k x G, k x G x C x h x w with k = {k})")
            if (sizes.get_dtype() not in _INT_DTYPES or index.get_dtype() not in _INT_DTYPES
                    or members.get_dtype() != "U8" or sm[2] not in (1, 3) or min(sm[3:]) < 1):
                raise NoClusters(f"{CLUSTERS_FILE}: sizes and index must be integers and members 8-bit gray or "
                                 f"RGB images (got {sizes.get_dtype()}, {index.get_dtype()}, {members.get_dtype()} "
                                 f"with {sm[2]} channels)")
            size = int(sizes[cluster:cluster + 1][0])
            positions = index[cluster:cluster + 1][0].tolist()
            shown = [g for g, p in enumerate(positions) if p >= 0][:MAX_SHOWN]
            images = members[cluster:cluster + 1][0] if shown else None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise NoClusters(f"{CLUSTERS_FILE} cannot be read ({type(e).__name__}: {first})") from None
    return max(size, 0), [(int(positions[g]), images[g]) for g in shown]


def member_image(img: torch.Tensor, factor: int) -> Image.Image:
    """C x h x w uint8 -> PIL (L or RGB), enlarged by ``factor`` (nearest)."""
    return enlarge(to_pil(img.float() / 255), factor)


def clusters(model_name: str, upload):
    """-> (the upload as the model sees it, {cluster: p} of its top 3 clusters, gallery
    [(training image, caption)] of the predicted cluster's members in the clusters file, one line
    on that cluster's size (or why the file cannot be shown), summary)."""
    m = pretext_model(model_name, "deepcluster")
    x = model_input(m, load_upload(upload))  # C x H x W, normalised
    with torch.inference_mode():
        logits = m.predict_pretext(x[None])[0].float()
    c = int(dc.cluster_of(m, x[None])[0])
    k = logits.numel()
    probs = torch.softmax(logits, -1)
    top = probs_dict(probs, [f"cluster {i}" for i in range(k)], top=3)
    view = enlarge(to_pil(to_unit(x, m.data_config)), display_factor(x.shape[-2]))
    try:
        size, members = read_cluster(model_dir(model_name), c, k)
    except NoClusters as e:
        gallery, members_text = [], f"Cluster {c}'s training images cannot be shown: {e}."
    else:
        factor = display_factor(members[0][1].shape[-2], MEMBER_DISPLAY) if members else 1
        gallery = [(member_image(img, factor), f"#{pos}") for pos, img in members]
        if size == 0:
            members_text = f"Cluster {c} held no training images in the model's last clustering."
        else:
            n = len(gallery)
            shown_text = ("; none of them ships with the model" if n == 0 else " (shown)" if size == n == 1
                          else " (all shown)" if n == size else f"; {n} of them shown")
            members_text = (f"Cluster {c} held **{size:,}** training image{'s' if size != 1 else ''} in the model's "
                            f"last clustering{shown_text}.")
    summary = (f"**{model_name}** puts your image in **cluster {c}** of its {k} ({pct(float(probs[c]))}). The clusters "
               f"are k-means clusters of its own features of its training images, re-done every epoch: numbered, "
               f"not named; the training images beside it show what the cluster gathered.")
    return view, top, gallery, members_text, summary


def build() -> None:
    """Model, upload -> the predicted cluster, its top 3, training images of that cluster and its size."""
    from .._ui import examples, gr, missing, picker, run, scores, shown, upload

    names = TAB.models()
    if not names:
        return missing("deepcluster")
    with gr.Row():
        with gr.Column(scale=2):
            model = picker(names)
            image = upload("clusters")
            go = gr.Button("Find its cluster", variant="primary")
            examples("clusters", image)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id="clusters-summary")
            with gr.Row():
                view = shown("Your image, as the model sees it", height=240)
                label = scores("Model: its top 3 clusters", num_top_classes=3, elem_id="clusters-label")
            members_text = gr.Markdown(elem_id="clusters-size")
            gallery = gr.Gallery(label="Training images of that cluster (dataset position)", columns=4, height="auto",
                                 format="png", object_fit="contain", elem_id="clusters-gallery")
    run(go, clusters, [model, image], [view, label, gallery, members_text, summary], "clusters")


TAB = Tab(id="clusters", title="Clusters", pretexts=("deepcluster",), build=build)
