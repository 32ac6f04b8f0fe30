"""Mistral 3 and Pixtral-in-LLaVA token maps and pixel groups against the processor's and model's arithmetic.

The tiny models (tiny_models/mistral3.py): 8 px Pixtral patches, images shrunk to fit 128 px
(``get_resize_output_image_size``: ratio = max(h, w) / 128 when above 1, sides floored, then each
side rounded up to a multiple of the token step). Image sizes are width x height.

``mistral3`` (2x2 merge, 16 px a token):
- 32x32 -> 32x32 px, a 2x2 grid; 40x24 -> 48x32 px (sides rounded up), a 2x3 grid;
- 64x64 -> 64x64 px, 4x4; 300x200 -> ratio 2.34, 128x85 -> 128x96 px, a 6x8 grid;
- 2000x20 -> ratio 15.6, 128x1 -> 128x16 px, a 1x8 grid.
``llava_pixtral`` (Pixtral-12B's layout, no merge, 8 px a token):
- 32x32 -> 4x4; 40x24 -> 40x24 px, 3x5; 300x200 -> 128x88 px, 11x16; 2000x20 -> 128x8 px, 1x16.
"""
from collections import Counter

import pytest
import torch

from studio.adapters.llava import LlavaAdapter
from studio.adapters.mistral3 import Mistral3Adapter
from studio.engine.errors import StudioError
from studio.engine.session import ModelSession
from tiny_models import build_tiny, sample_image
from tiny_models.mistral3 import llava_pixtral

CASES = [("mistral3", 32, 32, (2, 2)), ("mistral3", 40, 24, (2, 3)), ("mistral3", 64, 64, (4, 4)),
         ("mistral3", 300, 200, (6, 8)), ("mistral3", 2000, 20, (1, 8)),
         ("llava_pixtral", 32, 32, (4, 4)), ("llava_pixtral", 40, 24, (3, 5)), ("llava_pixtral", 300, 200, (11, 16)),
         ("llava_pixtral", 2000, 20, (1, 16))]
IDS = [f"{c[0]}-{c[1]}x{c[2]}" for c in CASES]
STEP = {"mistral3": 16, "llava_pixtral": 8}


def _build(kind):
    if kind == "mistral3":
        return build_tiny("mistral3")
    config, model_class, processor = llava_pixtral()
    torch.manual_seed(0)
    return model_class(config).eval(), processor


@pytest.fixture(scope="module")
def sessions():
    return {kind: ModelSession(*_build(kind)) for kind in STEP}


def test_adapters(sessions):
    assert type(sessions["mistral3"].adapter) is Mistral3Adapter
    assert type(sessions["llava_pixtral"].adapter) is LlavaAdapter


@pytest.mark.parametrize("kind,width,height,grid", CASES, ids=IDS)
def test_token_map_matches_the_processor(sessions, kind, width, height, grid):
    session = sessions[kind]
    prepared = session.prepare(sample_image(width, height), "what is this ?")
    tmap, ids, inputs = prepared.token_map, prepared.inputs["input_ids"][0], prepared.inputs
    rows, cols = grid
    assert inputs["image_sizes"][0].tolist() == [rows * STEP[kind], cols * STEP[kind]]
    assert tmap.image_positions == (ids == session.adapter.image_token_id()).nonzero().flatten().tolist()
    assert [(g.name, g.rows, g.cols, g.box) for g in tmap.grids] == [
        ("image", rows, cols, (0.0, 0.0, float(width), float(height)))]
    cells = Counter((p.grid, p.row, p.col) for p in tmap.image.values())
    assert sorted(cells) == [(0, r, c) for r in range(rows) for c in range(cols)] and set(cells.values()) == {1}
    positions = tmap.positions_of_grid(0)
    ends = [tmap.tokens[positions[(r, cols - 1)] + 1] for r in range(rows)]
    assert ends == ["[IMG_BREAK]"] * (rows - 1) + ["[IMG_END]"], "a break closes each row, the end the last"
    assert sum(t in ("[IMG_BREAK]", "[IMG_END]") for t in tmap.tokens) == rows, "breaks and end stay text"
    with torch.inference_mode():
        features = session.model.get_image_features(pixel_values=inputs["pixel_values"],
                                                    image_sizes=inputs["image_sizes"])
    assert sum(f.shape[0] for f in features.pooler_output) == len(tmap.image_positions)


@pytest.mark.parametrize("kind,width,height,grid", CASES, ids=IDS)
def test_pixel_groups(sessions, kind, width, height, grid):
    session = sessions[kind]
    prepared = session.prepare(sample_image(width, height), "what is this ?")
    pixels = prepared.inputs["pixel_values"]
    groups = session.adapter.pixel_token_groups(prepared.inputs)
    n = len(prepared.token_map.image_positions)
    assert groups.expand_as(pixels).shape == pixels.shape
    assert groups.min() >= -1 and groups.max() < n
    assert set(groups.unique().tolist()) - {-1} == set(range(n)), "every image token fed"


def test_merged_token_pixels_follow_the_patch_merger(sessions):
    """Each Mistral 3 token's pixels are the 2x2 patches the projector's own unfold merges into it:
    patch coordinates sent through the merger come out where the pixel groups put them."""
    session = sessions["mistral3"]
    prepared = session.prepare(sample_image(300, 200), "what is this ?")
    sizes = prepared.inputs["image_sizes"]
    merger = session.model.model.multi_modal_projector.patch_merger
    patch, merge, width = merger.patch_size, merger.spatial_merge_size, session.model.config.vision_config.hidden_size
    h, w = (int(v) // patch for v in sizes[0])
    coords = torch.zeros(h * w, width)
    coords[:, 0], coords[:, 1] = torch.arange(h).repeat_interleave(w).float(), torch.arange(w).repeat(h).float()
    seen = []
    handle = merger.merging_layer.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        with torch.inference_mode():
            merger(coords, sizes)
    finally:
        handle.remove()
    unfolded = seen[0].reshape(-1, width, merge * merge)  # [token, channel, patch within the 2x2 block]
    groups = session.adapter.pixel_token_groups(prepared.inputs)[0, 0]
    for token, block in enumerate(unfolded):
        for row, col in zip(block[0].long().tolist(), block[1].long().tolist()):
            assert (groups[row * patch:(row + 1) * patch, col * patch:(col + 1) * patch] == token).all()


def test_padding_beyond_image_sizes_feeds_no_token(sessions):
    session = sessions["mistral3"]
    prepared = session.prepare(sample_image(40, 24), "what is this ?")
    inputs = dict(prepared.inputs)
    inputs["pixel_values"] = torch.nn.functional.pad(inputs["pixel_values"], (0, 16, 0, 16))
    groups = session.adapter.pixel_token_groups(inputs)[0, 0]
    assert (groups[32:] == -1).all() and (groups[:, 48:] == -1).all()
    assert torch.equal(groups[:32, :48], session.adapter.pixel_token_groups(prepared.inputs)[0, 0])


@pytest.mark.parametrize("kind", list(STEP))
@pytest.mark.parametrize("size", [(2000, 20), (20, 2000), (5000, 8)])
def test_extreme_aspect_gives_a_map_or_a_studio_error(sessions, kind, size):
    session = sessions[kind]
    try:
        prepared = session.prepare(sample_image(*size), "what is this ?")
    except StudioError as err:
        assert str(err)
        return
    tmap = prepared.token_map
    grid = tmap.grids[0]
    assert len(tmap.image_positions) == grid.rows * grid.cols > 0
    assert grid.box == (0.0, 0.0, float(size[0]), float(size[1]))


def test_llava_pixtral_saved_folder_reloads_and_lens_is_identity(sessions, tmp_path):
    session = sessions["llava_pixtral"]
    session.model.save_pretrained(tmp_path)
    session.processor.save_pretrained(tmp_path)
    loaded = ModelSession.load(str(tmp_path), device="cpu")
    assert type(loaded.adapter) is LlavaAdapter
    image = sample_image(40, 24)
    prepared = session.prepare(image, "what is this ?")
    captured = session.forward(prepared, capture=True)
    assert torch.equal(loaded.forward(loaded.prepare(image, "what is this ?")).logits, captured.logits)
    with torch.inference_mode():
        lens = session.adapter.lens(captured.hidden[-1]).float()
    assert (lens - captured.logits).abs().max().item() < 1e-4
