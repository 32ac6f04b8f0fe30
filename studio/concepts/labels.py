"""Ground-truth labels of image patches in the world: which object attribute each patch shows.

The renderer draws a 4x4 grid of 16-pixel cells on a 64-pixel image; the embedded model's
vision tower cuts it into 8x8 patches, so each cell spans 2x2 patches. A patch carries the
kind, colour, size and grid position of the object in its cell, or nothing (background).
"""
from __future__ import annotations

import numpy as np

from studio.world.scenes import COLOURS, GRID, KINDS, SIZES, sample_scene

ATTRIBUTES = ("kind", "colour", "size", "position")


def attribute_values() -> list[tuple[str, str]]:
    """Every (attribute, value) pair scored for purity: 8 kinds, 6 colours, 2 sizes, 16 cells."""
    positions = [f"r{r}c{c}" for r in range(GRID) for c in range(GRID)]
    return ([("kind", k) for k in KINDS] + [("colour", c) for c in COLOURS] + [("size", s) for s in SIZES]
            + [("position", p) for p in positions])


def patch_labels(seeds: np.ndarray, patches: np.ndarray, split: str, side: int) -> np.ndarray:
    """Boolean [n, len(attribute_values())]: does patch ``patches[i]`` (row-major in a ``side``
    x ``side`` grid) of scene ``seeds[i]`` show each attribute value?"""
    values = attribute_values()
    index = {v: i for i, v in enumerate(values)}
    per_cell = side // GRID
    out = np.zeros((len(seeds), len(values)), dtype=bool)
    cache: dict[int, dict] = {}
    for i, (seed, patch) in enumerate(zip(seeds.tolist(), patches.tolist())):
        if seed not in cache:
            cache[seed] = {(o.row, o.col): o for o in sample_scene(seed, split).objects}
        obj = cache[seed].get(((patch // side) // per_cell, (patch % side) // per_cell))
        if obj is None:
            continue
        for key in (("kind", obj.kind), ("colour", obj.colour), ("size", obj.size),
                    ("position", f"r{obj.row}c{obj.col}")):
            out[i, index[key]] = True
    return out
