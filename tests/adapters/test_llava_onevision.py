"""LLaVA-OneVision's token map and pixel groups against the processor's and the model's own arithmetic.

The tiny model (tiny_models/llava_onevision.py): a 32x32 base view of 4x4 patches, 32x32 tiles
laid out by the best of the 1..3 x 1..3 tile pinpoints, "anyres_max_4". Expected grids, derived
from ``select_best_resolution``, ``unpad_image`` and ``pack_image_features`` (image_sizes is
(height, width)):

- 32x32: pinpoint (32, 32), one tile, 4x4 grid, sqrt(16 / 64) < 1.1 so no pooling: 16 + 4 * 5 = 36.
- 40x24: every pinpoint keeps at most the 960 original pixels; (32, 64) wastes least: 1x2 tiles,
  a 4x8 grid; unpad: new width int(40 * 4 / 24) = 6, padding (8 - 6) // 2 = 1, a 4x6 grid: 44 tokens.
- 64x32: pinpoint (32, 64) exactly, a 4x8 grid, no padding: 16 + 4 * 9 = 52.
- 96x64: pinpoint (64, 96), 2x3 tiles, an 8x12 grid; ratio sqrt(96 / 64) = 1.22 > 1.1, pooled to
  int(8 // 1.22) x int(12 // 1.22) = 6x9: 16 + 6 * 10 = 76.
- 96x96: 3x3 tiles, 12x12, ratio 1.5, pooled to 8x8: 16 + 8 * 9 = 88.
- 200x150: pinpoint (96, 96) (scale 0.48 -> 96x72 effective), 12x12 unpadded to 12 - 2 * 1 = 10 rows
  (new height int(150 * 12 / 200) = 9, padding 1), ratio sqrt(120 / 64) = 1.37, pooled to
  int(10 // 1.37) x int(12 // 1.37) = 7x8: 16 + 7 * 9 = 79.
"""
from collections import Counter

import pytest
import torch

from studio.adapters.llava_onevision import dominant_target
from studio.engine.errors import StudioError
from studio.engine.session import ModelSession
from tiny_models import build_tiny, sample_image

# (width, height, tile grid (rows, cols) or None, image tokens)
CASES = [(32, 32, (4, 4), 36), (40, 24, (4, 6), 44), (64, 32, (4, 8), 52), (96, 64, (6, 9), 76),
         (96, 96, (8, 8), 88), (200, 150, (7, 8), 79)]


@pytest.fixture(scope="module")
def session():
    model, processor = build_tiny("llava_onevision")
    return ModelSession(model, processor)


def _features(session, inputs):
    with torch.inference_mode():
        out = session.model.get_image_features(pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"])
    return torch.cat(list(out.pooler_output))


@pytest.mark.parametrize("width,height,tiles,n_tokens", CASES, ids=[f"llava_onevision-{c[0]}x{c[1]}" for c in CASES])
def test_token_map_matches_the_processor(session, width, height, tiles, n_tokens):
    prepared = session.prepare(sample_image(width, height), "what is this ?")
    tmap, ids = prepared.token_map, prepared.inputs["input_ids"][0]
    assert tmap.image_positions == (ids == session.adapter.image_token_id()).nonzero().flatten().tolist()
    assert len(tmap.image_positions) == n_tokens
    assert [(g.name, g.rows, g.cols) for g in tmap.grids] == [("base", 4, 4), ("tiles", *tiles)]
    assert all(g.box == (0.0, 0.0, float(width), float(height)) for g in tmap.grids)
    cells = Counter((p.grid, p.row, p.col) for p in tmap.image.values() if p.row is not None)
    for index, grid in enumerate(tmap.grids):
        assert sorted(k[1:] for k in cells if k[0] == index) == [(r, c) for r in range(grid.rows)
                                                                 for c in range(grid.cols)]
    assert set(cells.values()) == {1}, "every (row, col) of every grid exactly once"
    newlines = [pos for pos, p in tmap.image.items() if p.row is None]
    assert len(newlines) == tiles[0]
    tile_cells = tmap.positions_of_grid(1)
    assert [tile_cells[(r, tiles[1] - 1)] + 1 for r in range(tiles[0])] == newlines, "a newline closes every row"
    features = _features(session, prepared.inputs)
    assert features.shape[0] == len(tmap.image_positions), "one image feature per mapped image token"
    ordinal = {pos: i for i, pos in enumerate(tmap.image_positions)}
    newline = session.model.model.image_newline
    assert all(torch.equal(features[ordinal[pos]], newline) for pos in newlines), "newlines carry image_newline"


@pytest.mark.parametrize("width,height,tiles,n_tokens", CASES, ids=[f"llava_onevision-{c[0]}x{c[1]}" for c in CASES])
def test_pixel_groups_feed_every_patch_token(session, width, height, tiles, n_tokens):
    prepared = session.prepare(sample_image(width, height), "what is this ?")
    pixels, tmap = prepared.inputs["pixel_values"], prepared.token_map
    groups = session.adapter.pixel_token_groups(prepared.inputs)
    assert groups.expand_as(pixels).shape == pixels.shape
    assert groups.min() >= -1 and groups.max() < n_tokens
    ordinal = {pos: i for i, pos in enumerate(tmap.image_positions)}
    patch_tokens = {ordinal[pos] for pos, p in tmap.image.items() if p.row is not None}
    assert set(groups.unique().tolist()) - {-1} == patch_tokens, "every patch token fed, newlines never"


@pytest.mark.parametrize("width,height,tiles,n_tokens", CASES, ids=[f"llava_onevision-{c[0]}x{c[1]}" for c in CASES])
def test_pixel_groups_follow_pack_image_features(session, width, height, tiles, n_tokens):
    """Each patch goes to the token ``pack_image_features`` weighs it most in (the model's own
    unpad and bilinear pooling run on one-hot patch features), -1 where no token takes it."""
    prepared = session.prepare(sample_image(width, height), "what is this ?")
    inputs, model = prepared.inputs, session.model
    _, views, _, size, _ = inputs["pixel_values"].shape
    side, patch = 4, size // 4
    one_hot = torch.eye(views * side * side).reshape(views, side * side, -1)
    packed, _ = model.model.pack_image_features(
        [one_hot], inputs["image_sizes"], image_newline=torch.zeros(views * side * side),
        vision_aspect_ratio=model.config.vision_aspect_ratio)
    weights = packed[0]  # [tokens, source patches]
    expected = torch.where(weights.amax(0) > 0, weights.argmax(0), torch.full((weights.shape[1],), -1))
    groups = session.adapter.pixel_token_groups(inputs)[0, :, 0]
    at_patches = groups[:, ::patch, ::patch].reshape(views, side * side).flatten()
    assert torch.equal(at_patches, expected)
    assert torch.equal(groups, groups[:, ::patch, ::patch].repeat_interleave(patch, 1).repeat_interleave(patch, 2))


def test_every_pooled_row_keeps_a_patch():
    """Pooling shrinks every axis (by more than 1.1), so each pooled row's nearest source row is its own."""
    for size in range(2, 41):
        for pooled in range(1, size):
            assert set(dominant_target(size, pooled).tolist()) - {-1} == set(range(pooled)), (size, pooled)


@pytest.mark.parametrize("width,height,grids,n_tokens", [
    (2000, 20, [("base", 4, 4)], 16),  # unpadded to int(20 * 4 / 2000) = 0 rows: no tile tokens at all
    (20, 2000, [("base", 4, 4)], 20),  # unpadded to 0 columns: 4 rows of a newline each
])
def test_extreme_aspect_maps_the_base_view_or_says_why(session, width, height, grids, n_tokens):
    try:
        prepared = session.prepare(sample_image(width, height), "what is this ?")
    except StudioError as err:
        assert str(err)
        return
    tmap = prepared.token_map
    assert [(g.name, g.rows, g.cols) for g in tmap.grids] == grids
    assert len(tmap.image_positions) == n_tokens == _features(session, prepared.inputs).shape[0]
    assert sorted(tmap.positions_of_grid(0)) == [(r, c) for r in range(4) for c in range(4)]
    groups = session.adapter.pixel_token_groups(prepared.inputs)
    assert set(groups.unique().tolist()) == {-1, *range(16)}
