"""Questions about one image share its prompt prefix: encoded once, its KV cache reused.

A benchmark asks many questions of each image (POPE: 6 to 18 per COCO image). In a batch of
(image, question) rows, the rows of one image begin with the same tokens (chat header, image
tokens, the text up to the question), and that prefix is most of each row (the embedded model:
69 of about 75 tokens). Decoding them plainly runs the vision tower and the prefix through the
decoder once per question. Here the prefix of each distinct image is run once, its cache copied
to that image's rows, and ``generate`` continues from it with only the questions' tokens.

Rows are laid out as ``[prefix][padding][question]``: the padding sits between the shared prefix
and each row's own tokens, masked out; the positions ``generate`` derives from the attention
mask (its cumulative sum) give every token the position it has in the unpadded row, so each
row is computed as in the plain left-padded batch (the same tokens; logits equal up to float
summation order, tested). Only for plain greedy decoding with no intervention (an intervention
counts the prompt pass as the first forward; here the prompt takes two) and for families whose
adapter declares ``shares_prefix`` (positions that follow the attention mask, image tokens
attended causally; not Qwen2-VL's 3-D positions or Gemma's bidirectional image attention).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from studio.engine.images import ImageLike, load_image


@dataclass(frozen=True)
class PrefixPlan:
    """Rows grouped by image: ``firsts`` one row per group, ``group`` each row's group, and the
    shared prefix length ``length`` (every image token of every row lies inside it)."""

    firsts: list[int]
    group: list[int]
    length: int


def _image_key(image: ImageLike) -> tuple:
    """Equal for the same image: the same file path, or the same pixels."""
    if isinstance(image, str | Path):
        return ("path", str(Path(image).resolve()))
    picture = load_image(image)
    return picture.mode, picture.size, picture.tobytes()


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def plan_prefix(images: Sequence[ImageLike], rows: list[list[int]], image_token: int) -> PrefixPlan | None:
    """How ``rows`` (unpadded token ids, one per image) share prefixes; None when nothing is
    gained (no image asked twice) or no one prefix length covers every row's image tokens."""
    keys: dict[tuple, int] = {}
    group = [keys.setdefault(_image_key(image), len(keys)) for image in images]
    if len(keys) == len(rows):
        return None
    firsts = [group.index(g) for g in range(len(keys))]
    length = min(min(_common(rows[r], rows[firsts[g]]), len(rows[r]) - 1) for r, g in enumerate(group))
    last_image = max(max((i for i, t in enumerate(row) if t == image_token), default=-1) for row in rows)
    if length <= last_image:
        return None
    return PrefixPlan(firsts, group, length)


def unpadded_rows(inputs: dict) -> list[list[int]]:
    """Each row's token ids without its left padding."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    return [row[row_mask.bool()].tolist() for row, row_mask in zip(ids, mask)]


def middle_padded(rows: list[list[int]], length: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[prefix][padding][rest]`` ids and attention mask for rows sharing ``length`` prefix tokens."""
    rest = max(len(row) - length for row in rows)
    ids = torch.full((len(rows), length + rest), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        tail = row[length:]
        ids[r, :length], mask[r, :length] = torch.tensor(row[:length]), 1
        ids[r, length + rest - len(tail):], mask[r, length + rest - len(tail):] = torch.tensor(tail), 1
    return ids, mask


def prefix_cache(model: Any, inputs: dict, plan: PrefixPlan, rows: list[list[int]]):
    """The KV cache of each group's prefix (one forward over the groups' first rows, whose image
    inputs are ``inputs``, processed right-padded), copied to every row of the group; None if
    those inputs do not begin with the prefix."""
    prefix = torch.tensor([rows[f][:plan.length] for f in plan.firsts], device=inputs["input_ids"].device)
    if not torch.equal(inputs["input_ids"][:, :plan.length], prefix):
        return None
    given = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    out = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True, **given)
    cache = out.cache
    cache.batch_select_indices(torch.tensor(plan.group, device=prefix.device))
    return cache


def decode_with_shared_prefix(model: Any, process_firsts: Callable[[list[int]], dict], images: Sequence,
                              inputs: dict, image_token: int, pad: int, **generate_kwargs) -> torch.Tensor | None:
    """The generated ids [rows, new tokens] of greedy ``generate`` over ``inputs`` (left-padded
    rows, one per image of ``images``), with each image's prefix run once; None when no prefix is
    shared (the caller decodes plainly). ``process_firsts(rows)`` gives the model inputs of those
    rows, right-padded. ``model`` is the Hugging Face model (typed loosely: its ``generate``)."""
    rows = unpadded_rows(inputs)
    plan = plan_prefix(images, rows, image_token)
    if plan is None:
        return None
    cache = prefix_cache(model, process_firsts(plan.firsts), plan, rows)
    if cache is None:
        return None
    ids, mask = middle_padded(rows, plan.length, pad)
    ids, mask = ids.to(inputs["input_ids"].device), mask.to(inputs["input_ids"].device)
    out = model.generate(input_ids=ids, attention_mask=mask, cache=cache, do_sample=False, **generate_kwargs)
    sequences = out.sequences if hasattr(out, "sequences") else out
    return sequences[:, ids.shape[1]:]
