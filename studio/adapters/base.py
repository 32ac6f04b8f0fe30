"""What every VLM family adapter provides, and the token map it helps build.

An adapter holds the only family-specific facts the studio needs: where the image tokens
are and which patch each covers, the decoder layers, the final norm and the unembedding.
Probes and the session never branch on the family; they ask the adapter.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, cast

import torch
from torch import nn

from studio.engine.errors import StudioError

IMAGE_TOKEN_NAMES = ("image_token_id", "image_token_index")
WHOLE_IMAGE_GRIDS = ("image", "tiles", "base", "global")  # grid names that cover the whole image


class AdapterError(StudioError, ValueError):
    """A model or its inputs do not look the way the family adapter expects."""


@dataclass(frozen=True)
class PatchGrid:
    """A grid of image tokens covering ``box`` (left, top, right, bottom) of the original image.

    ``name`` says what the grid is ("image", "base", "tiles", "tile 1,2", "global").
    """

    name: str
    rows: int
    cols: int
    box: tuple[float, float, float, float]

    @classmethod
    def from_dict(cls, data: dict) -> "PatchGrid":
        """The grid from its ``asdict`` form (the box may come back from JSON as a list)."""
        return cls(name=data["name"], rows=data["rows"], cols=data["cols"], box=tuple(data["box"]))

    def patch_box(self, row: int, col: int) -> tuple[float, float, float, float]:
        """Pixel box of one patch of this grid in original-image coordinates."""
        x0, y0, x1, y1 = self.box
        w, h = (x1 - x0) / self.cols, (y1 - y0) / self.rows
        return (x0 + col * w, y0 + row * h, x0 + (col + 1) * w, y0 + (row + 1) * h)

    def locate(self, x: float, y: float) -> tuple[int, int] | None:
        """The (row, col) of the patch holding pixel (x, y), or None when outside this grid."""
        x0, y0, x1, y1 = self.box
        if not (x0 <= x < x1 and y0 <= y < y1):
            return None
        return (int((y - y0) * self.rows / (y1 - y0)), int((x - x0) * self.cols / (x1 - x0)))


@dataclass(frozen=True)
class ImagePlacement:
    """Where one image position sits: grid index into ``TokenMap.grids`` and (row, col).

    ``row``/``col`` are None for image tokens that cover no patch (e.g. LLaVA-NeXT row ends).
    """

    grid: int
    row: int | None
    col: int | None


@dataclass
class TokenMap:
    """For every input position: its token string, whether it is an image token, and its patch."""

    input_ids: list[int]
    tokens: list[str]
    image: dict[int, ImagePlacement] = field(default_factory=dict)
    grids: list[PatchGrid] = field(default_factory=list)
    image_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def is_image(self) -> list[bool]:
        return [i in self.image for i in range(len(self.input_ids))]

    @property
    def image_positions(self) -> list[int]:
        return sorted(self.image)

    @property
    def text_positions(self) -> list[int]:
        return [i for i in range(len(self.input_ids)) if i not in self.image]

    @property
    def main_grid(self) -> int | None:
        """The grid a patch click should map to: the finest one covering the whole image."""
        if not self.grids:
            return None
        return max(range(len(self.grids)), key=lambda g: self.grids[g].rows * self.grids[g].cols
                   if self.grids[g].name in WHOLE_IMAGE_GRIDS else -1)

    def require_main_grid(self) -> int:
        """The main grid's index, or an AdapterError when the prompt has no patch geometry."""
        if self.main_grid is None:
            raise AdapterError("patch geometry unknown: this prompt has no image grid the studio can place")
        return self.main_grid

    def positions_of_grid(self, grid: int) -> dict[tuple[int, int], int]:
        """(row, col) -> input position for every patch of one grid."""
        return {(p.row, p.col): pos for pos, p in self.image.items()
                if p.grid == grid and p.row is not None and p.col is not None}

    def to_dict(self) -> dict:
        return {"input_ids": self.input_ids, "tokens": self.tokens,
                "image": {str(k): asdict(v) for k, v in self.image.items()},
                "grids": [asdict(g) for g in self.grids], "image_size": self.image_size}

    @classmethod
    def from_dict(cls, data: dict) -> "TokenMap":
        return cls(input_ids=list(data["input_ids"]), tokens=list(data["tokens"]),
                   image={int(k): ImagePlacement(**v) for k, v in data["image"].items()},
                   grids=[PatchGrid.from_dict(g) for g in data["grids"]],
                   image_size=tuple(data["image_size"]) if data["image_size"] else None)


class Adapter:
    """Family-specific facts about a loaded ``*ForConditionalGeneration`` model.

    Subclasses set ``family`` and ``model_types`` (the ``config.model_type`` values they
    serve) and implement :meth:`image_layout`. The module accessors below cover the common
    ``model.model.language_model`` layout; families that differ override them.
    """

    family: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    answer_token_type: ClassVar[int] = 0  # token_type_ids of generated tokens (PaliGemma's suffix: 1)
    # questions about one image may share its prompt prefix's KV cache (studio.engine.prefix): positions
    # follow the attention mask and image tokens are attended causally
    shares_prefix: ClassVar[bool] = False

    def __init__(self, model: nn.Module, processor=None) -> None:
        self.model: Any = model  # a *ForConditionalGeneration; its layout varies by family
        self.processor = processor

    def text_model(self) -> Any:
        return self.model.model.language_model

    def view_encoder(self) -> nn.Module | None:
        """The vision tower, when it encodes each row of its pixel input (an image, or one tile of
        it) on its own, so that gradients can be computed one row at a time
        (:func:`studio.engine.recompute.rows_recomputed`); None when its rows are not
        independent (Qwen2-VL's rows are patches of one image) or the family is not known."""
        return None

    def decoder_layers(self) -> nn.ModuleList:
        return self.text_model().layers

    def final_norm(self) -> nn.Module:
        return self.text_model().norm

    def unembedding(self) -> nn.Linear:
        return self.model.lm_head

    def embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def attention_modules(self) -> list[nn.Module]:
        """Each decoder layer's self-attention (its output is (attn_output, attn_weights))."""
        return [cast(nn.Module, layer.self_attn) for layer in self.decoder_layers()]

    def pixel_token_groups(self, inputs: dict) -> torch.Tensor:
        """For every element of ``pixel_values`` (broadcastable to it), the ordinal of the image
        token it feeds (0 .. n_image_tokens - 1), or -1 where it feeds none.

        Attribution uses these groups to ablate or sum pixels one image token at a time.
        """
        raise NotImplementedError

    def image_token_id(self) -> int:
        config = self.model.config
        for name in IMAGE_TOKEN_NAMES:
            value = getattr(config, name, None)
            if value is not None:
                return int(value)
        raise AdapterError(f"{type(config).__name__} names no image token id")

    def image_layout(self, input_ids: torch.Tensor, tokens: list[str], inputs: dict,
                     image_size: tuple[int, int]) -> tuple[list[PatchGrid], dict[int, ImagePlacement]]:
        """Grids and per-position placements for one sequence (``input_ids`` 1-D, ``tokens`` its strings)."""
        raise NotImplementedError

    def lens(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from residual-stream states: final norm, then unembedding."""
        return self.unembedding()(self.final_norm()(hidden))

    def image_positions(self, input_ids: torch.Tensor) -> list[int]:
        return (input_ids == self.image_token_id()).nonzero().flatten().tolist()


def runs(positions: list[int]) -> list[list[int]]:
    """Split sorted positions into runs of consecutive integers."""
    out: list[list[int]] = []
    for p in positions:
        if out and p == out[-1][-1] + 1:
            out[-1].append(p)
        else:
            out.append([p])
    return out


def row_major(grid: int, positions: list[int], rows: int, cols: int) -> dict[int, ImagePlacement]:
    """Placements for positions that fill a rows x cols grid in row-major order."""
    if len(positions) != rows * cols:
        raise AdapterError(f"expected {rows}x{cols}={rows * cols} image tokens, found {len(positions)}")
    return {p: ImagePlacement(grid, i // cols, i % cols) for i, p in enumerate(positions)}


def pooled_patch_groups(height: int, width: int, patch: int, kernel: int, side: int) -> torch.Tensor:
    """[height, width] ordinal of the token each pixel feeds in a side x side row-major grid of
    tokens, each pooling kernel x kernel patches of patch x patch pixels; -1 for pixels whose
    patches the tower or the pooling drops (the remainders of the integer divisions)."""
    def cells(n: int) -> torch.Tensor:
        index = torch.arange(n) // (patch * kernel)
        return torch.where(index < side, index, -1)
    rows, cols = cells(height)[:, None], cells(width)[None, :]
    return torch.where((rows >= 0) & (cols >= 0), rows * side + cols, -1)


def dominant_target(size: int, pooled: int) -> torch.Tensor:
    """For each of ``size`` rows (or columns), the row of the ``pooled``-long bilinear resize
    (``interpolate(..., mode="bilinear")``, as the model calls it) that weighs it most, or -1
    for a row no output weighs."""
    one_hot = torch.eye(size).reshape(1, size, size, 1)
    weights = nn.functional.interpolate(one_hot, [pooled, 1], mode="bilinear")[0, :, :, 0]
    return torch.where(weights.amax(1) > 0, weights.argmax(1), torch.full((size,), -1))
