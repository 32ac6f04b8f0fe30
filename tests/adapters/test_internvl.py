"""InternVL's token map against the GotOcr2 processor's tiling arithmetic (tiny model: 32 px tiles,
8 px patches pixel-shuffled 2x2, so 2x2 tokens a tile, at most 6 tiles, a thumbnail when tiled)."""
import pytest
import torch

from studio.adapters.base import AdapterError
from studio.adapters.internvl import InternVLAdapter
from studio.engine.errors import StudioError
from studio.engine.session import ModelSession
from tiny_models import build_tiny, sample_image

T = 1000 / 3  # one sixth of a 2000 px side


def tiles(cols, rows, tile_w, tile_h):
    return [(f"tile {r + 1},{c + 1}", (c * tile_w, r * tile_h, (c + 1) * tile_w, (r + 1) * tile_h))
            for r in range(rows) for c in range(cols)]


# (width, height, expected (name, box) per view; every view is a 2x2 token grid). The layout is the
# canvas of at most 6 tiles whose cols/rows ratio is closest to the image's: 1:1 -> 1x1 (a 2x2
# canvas only wins a tie once the image covers half of it: 64x64 does, 32x32 does not),
# 2:1 -> 2x1, 3:2 -> 3x2, 100:1 -> 6x1 (closest of all).
CASES = [
    (32, 32, [("image", (0, 0, 32, 32))]),
    (64, 32, tiles(2, 1, 32, 32) + [("global", (0, 0, 64, 32))]),
    (48, 32, tiles(3, 2, 16, 16) + [("global", (0, 0, 48, 32))]),
    (64, 64, tiles(2, 2, 32, 32) + [("global", (0, 0, 64, 64))]),
    (2000, 20, tiles(6, 1, T, 20) + [("global", (0, 0, 2000, 20))]),
]


@pytest.fixture(scope="module")
def session():
    model, processor = build_tiny("internvl")
    return ModelSession(model, processor)


@pytest.mark.parametrize("width,height,views", CASES, ids=[f"internvl-{c[0]}x{c[1]}" for c in CASES])
def test_internvl_token_map_follows_the_tiling(session, width, height, views):
    prepared = session.prepare(sample_image(width, height), "what is this ?")
    tmap, ids = prepared.token_map, prepared.inputs["input_ids"][0]
    assert [(g.name, g.rows, g.cols) for g in tmap.grids] == [(name, 2, 2) for name, _ in views]
    for grid, (_, box) in zip(tmap.grids, views):
        assert grid.box == pytest.approx(box)
    positions = tmap.image_positions
    assert positions == (ids == session.adapter.image_token_id()).nonzero().flatten().tolist()
    assert len(positions) == 4 * len(views) and positions == list(range(positions[0], positions[-1] + 1))
    assert tmap.tokens[positions[0] - 1] == "<img>" and tmap.tokens[positions[-1] + 1] == "</img>"
    for index in range(len(tmap.grids)):
        cells = tmap.positions_of_grid(index)
        assert sorted(cells) == [(r, c) for r in range(2) for c in range(2)]
        assert sorted(cells.values()) == positions[4 * index:4 * index + 4], "views in pixel_values order"
    with torch.inference_mode():
        features = session.model.get_image_features(pixel_values=prepared.inputs["pixel_values"]).pooler_output
    assert features.shape[:2] == (len(views), 4), "one image feature per mapped image token"


@pytest.mark.parametrize("width,height", [(32, 32), (48, 32)], ids=["internvl-1-view", "internvl-7-views"])
def test_internvl_pixel_groups_are_the_16px_blocks_of_each_view(session, width, height):
    prepared = session.prepare(sample_image(width, height), "what is this ?")
    pixels = prepared.inputs["pixel_values"]
    groups = session.adapter.pixel_token_groups(prepared.inputs)
    torch.broadcast_shapes(groups.shape, pixels.shape)
    n_tokens = len(prepared.token_map.image_positions)
    assert groups.min() >= -1 and groups.max() < n_tokens
    assert set(groups.unique().tolist()) == set(range(n_tokens)), "every image token is fed by some pixels"
    ys, xs = torch.arange(32) // 16, torch.arange(32) // 16  # 8 px patches, 2x2 of them per token
    for view in range(pixels.shape[0]):
        assert torch.equal(groups[view, 0], view * 4 + ys[:, None] * 2 + xs[None, :])


def test_internvl_tile_count_mismatch_is_a_studio_error(session):
    prepared = session.prepare(sample_image(64, 32), "what is this ?")
    inputs = {**prepared.inputs, "pixel_values": prepared.inputs["pixel_values"][:2]}
    with pytest.raises(AdapterError, match="InternVL") as caught:
        session.adapter.image_layout(prepared.inputs["input_ids"][0], prepared.token_map.tokens, inputs, (64, 32))
    assert isinstance(caught.value, StudioError)
    with pytest.raises(StudioError, match="image processor"):
        InternVLAdapter(session.model).image_layout(
            prepared.inputs["input_ids"][0], prepared.token_map.tokens, prepared.inputs, (64, 32))
