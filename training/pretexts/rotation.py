"""Rotation (RotNet, Gidaris et al. 2018), training side: every image in all four turns in the
same batch, 4-way cross-entropy. The turns and the head are in ``sslzoo.zoo.pretexts.rotation``."""
from __future__ import annotations

from sslzoo.zoo.pretexts import rotation

from ._protocol import Batch, Classification, register


@register
class Rotation(Classification):
    name = rotation.PRETEXT

    def make_batch(self, batch: Batch, gen=None, dtype=None):
        # images at the model's size B x C x H x W -> inputs 4B x C x H x W, targets 4B (0/90/180/270)
        x = batch.resized()
        return rotation.rotate_all(x if dtype is None else x.to(dtype))
