"""The demo's tabs: one module per tab, listed here in display order.

A tab module defines its pure function(s) (plain Python values in and out, no gradio: the tests
and the benchmark call them) and one ``TAB = Tab(...)`` whose ``build()`` lays out the tab's
gradio components and wires its events. ``build()`` imports gradio itself (``from .._ui import
gr, ...``), so importing a tab module never loads gradio. The app iterates over ``TABS`` and
names no tab and no pretext.

Adding a tab (say Denoise) = one module ``demo/tabs/denoise.py`` + its name in ``MODULES``::

    from . import Tab
    from .._core import pretext_model

    def denoise(model_name, upload, noise):        # -> plain values for the outputs
        m = pretext_model(model_name, "denoising")
        ...

    def build():
        from .._ui import gr, missing, picker, run, upload
        names = TAB.models()
        if not names:
            return missing("denoising")
        model, img = picker(names), upload("denoise")
        ...
        run(go, denoise, [model, img, noise], [out, summary], api_name="denoise")

    TAB = Tab(id="denoise", title="Denoise", pretexts=("denoising",), build=build)

``id`` is the gr.Tab id and the prefix of the tab's element ids (``denoise-upload``); a model is
offered by every tab that lists one of its pretexts (``_core.models_for``), and ``launch()``
loads every model some tab runs before serving (``preload_models``). The models are the zoo's
entries whose weights are on this machine (an untrained entry is not offered: its tab shows its
"no model installed" line) and the model directories listed in ``SSLZOO_DEMO_MODELS``
(``os.pathsep``-separated, e.g. ``SSLZOO_DEMO_MODELS=runs/dn/model:runs/dc/model sslzoo demo``),
offered under their paths.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from .._core import get_model, models_for

# display order; a new tab = its module name here
MODULES = ("rotation", "jigsaw", "relpatch", "denoise", "inpaint", "colorize", "exemplar", "counting", "clusters", "retrieval",
           "classify", "models")


@dataclass(frozen=True)
class Tab:
    """One tab of the demo.

    ``pretexts``: the pretexts whose models the tab offers; None for a model-independent tab
    (Classify, Models). ``runs``: for such a tab, the models it loads (Classify: the probed ones);
    default none. ``build()``: lays out and wires the tab, called inside the app's ``gr.Tab``.
    """

    id: str
    title: str
    pretexts: tuple[str, ...] | None
    build: Callable[[], None]
    runs: Callable[[], list[str]] | None = None

    def models(self) -> list[str]:
        """The models this tab offers and runs, in zoo order (a model with several of the tab's
        pretexts once)."""
        if self.runs is not None:
            return list(self.runs())
        names = (n for p in self.pretexts or () for n in models_for(p))
        return list(dict.fromkeys(names))


def _load() -> tuple[Tab, ...]:
    tabs = []
    for name in MODULES:
        tab = getattr(importlib.import_module(f"{__name__}.{name}"), "TAB", None)
        if not isinstance(tab, Tab):
            raise TypeError(f"demo tab module {name!r} defines no TAB = Tab(...)")
        tabs.append(tab)
    ids = [t.id for t in tabs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"demo tab ids must be unique: {ids}")
    return tuple(tabs)


TABS: tuple[Tab, ...] = _load()


def offered_models() -> list[str]:
    """Every model some tab runs, each once, sorted."""
    return sorted({name for tab in TABS for name in tab.models()})


def preload_models() -> list[str]:
    """Load every model some tab runs (once per process, cached by ``_core.get_model``), so no
    request pays for a first load; -> their names."""
    names = offered_models()
    for name in names:
        get_model(name)
    return names


__all__ = ["Tab", "TABS", "MODULES", "offered_models", "preload_models"]
