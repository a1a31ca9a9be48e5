"""Training side of each pretext, one module per pretext on protocol v2 (``_protocol``): a plug-in
turns a ``Batch`` into (inputs, targets), scores outputs (``loss``, ``metrics``) and may hook the
run (``begin``, ``begin_epoch``, ``epoch_order``, ``eval_set``). Inference pieces (puzzles,
rotations, heads) come from ``sslzoo.zoo.pretexts``. Importing a module registers its plug-in."""
from __future__ import annotations

from . import (colorization, context_encoder, counting, deepcluster, denoising, exemplar, jigsaw,  # noqa: F401
               multi_task, relpatch, rotation, split_brain)  # (each registers its plug-in; multi_task composes the others)
from ._protocol import (PRETEXTS, Batch, Classification, Pretext, Run, UntrainableModel, get_pretext, register,
                        trainable_models)
from .jigsaw import Jigsaw
from .relpatch import RelativePatch
from .rotation import Rotation

__all__ = ["PRETEXTS", "Batch", "Classification", "Pretext", "Run", "UntrainableModel", "get_pretext", "register",
           "trainable_models", "Rotation", "Jigsaw", "RelativePatch"]
