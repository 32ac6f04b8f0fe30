"""Use a trained dictionary on the current request: feature activations over the image, each
feature's grounding, and clamping a feature during generation.

Clamping splices the SAE into the residual stream with its reconstruction error added back:
the layer output h becomes h + decode(f') - decode(f), where f = encode(h) and f' is f with one
feature set to the clamp value. Clamping a feature to its own value makes f' equal f, so the
added term is exactly zero and generation is bit-identical to the plain model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import ImageDraw

from studio.concepts.sae import check_matches, load_sae
from studio.engine.errors import InputError
from studio.interventions import Intervention

Where = Literal["image", "all"]
MAX_CLAMP = 1000.0


@dataclass
class Dictionary:
    """A saved SAE checked against the session, with the grounding computed when it was built."""

    sae: Any
    layer: int
    info: dict

    @classmethod
    def load(cls, folder: str | Path, session) -> "Dictionary":
        sae = load_sae(folder)
        layer = check_matches(sae, session)
        info_path = Path(folder) / "studio.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        return cls(sae, layer, info)

    @property
    def n_features(self) -> int:
        return int(self.sae.cfg.d_sae)

    def check_feature(self, feature: int) -> int:
        if not (isinstance(feature, (int, np.integer)) and 0 <= feature < self.n_features):
            raise InputError(f"feature {feature} does not exist: this dictionary has features 0..{self.n_features - 1}")
        return int(feature)

    def encode(self, hidden: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.sae.encode(hidden.to(self.sae.W_enc.dtype))


def activations(session, dictionary: Dictionary, prepared) -> np.ndarray:
    """Feature activations at every prompt position: [positions, features]."""
    hidden = session.layer_outputs(prepared.inputs, [dictionary.layer])[0][0]
    return dictionary.encode(hidden).float().cpu().numpy()


def image_heat(token_map, values: np.ndarray) -> np.ndarray:
    """Per-position values laid out on the main image grid [rows, cols] (zeros elsewhere)."""
    index = token_map.main_grid
    grid = token_map.grids[index]
    heat = np.zeros((grid.rows, grid.cols))
    for position, placement in token_map.image.items():
        if placement.grid == index and placement.row is not None:
            heat[placement.row, placement.col] = values[position]
    return heat


def top_crops(dictionary: Dictionary, feature: int, size: int = 24) -> list[tuple[np.ndarray, float]]:
    """The feature's strongest held-out patches as image crops with the patch outlined."""
    from studio.world.render import render
    from studio.world.scenes import sample_scene
    feature = dictionary.check_feature(feature)
    side = dictionary.info.get("grid_side", 8)
    split = dictionary.info.get("eval_split", "neutral")
    out = []
    for seed, patch, value in dictionary.info.get("top_patches", [[]] * dictionary.n_features)[feature]:
        image = render(sample_scene(int(seed), split)).convert("RGB")
        step = image.width // side
        row, col = divmod(int(patch), side)
        box = (col * step, row * step, (col + 1) * step - 1, (row + 1) * step - 1)
        ImageDraw.Draw(image).rectangle(box, outline=(255, 0, 255))
        cx, cy = box[0] + step // 2, box[1] + step // 2
        crop = image.crop((cx - size // 2, cy - size // 2, cx + size // 2, cy + size // 2))
        out.append((np.asarray(crop.resize((size * 3, size * 3))), float(value)))
    return out


def clamp_intervention(dictionary: Dictionary, feature: int, value: float | None,
                       where: Where = "image") -> Intervention:
    """The splice setting ``feature`` to ``value`` (None: to its own value) at the image positions
    of the prompt pass (``where`` "image") or at every position and generated step ("all")."""
    feature = dictionary.check_feature(feature)
    if where not in ("image", "all"):
        raise InputError(f"clamp where must be 'image' or 'all'; got {where!r}")
    if value is not None and not abs(value) <= MAX_CLAMP:
        raise InputError(f"clamp value must be between -{MAX_CLAMP} and {MAX_CLAMP}; got {value}")
    sae = dictionary.sae

    def splice(h: torch.Tensor) -> torch.Tensor:
        f = sae.encode(h.to(sae.W_enc.dtype))
        clamped = f.clone()
        if value is not None:
            clamped[..., feature] = value
        return h + (sae.decode(clamped) - sae.decode(f)).to(h.dtype)
    if where == "image":
        return Intervention("residual", dictionary.layer, splice, phase="prompt", positions="image")
    return Intervention("residual", dictionary.layer, splice)


def clamp_generate(session, dictionary: Dictionary, prepared, feature: int, value: float | None,
                   where: Where = "image", max_new_tokens: int = 32) -> list[int]:
    """Greedy generation with ``feature`` clamped to ``value`` (None: to its own value, a no-op
    by construction) at the image positions or everywhere; the new token ids."""
    splice = clamp_intervention(dictionary, feature, None if value is None else float(value), where)
    if where == "image" and not prepared.token_map.image_positions:
        raise InputError("clamping at image positions needs an image in the prompt")
    return [t.id for t in session.generate(prepared, max_new_tokens, interventions=[splice]).tokens]
