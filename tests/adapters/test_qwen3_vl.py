"""Qwen3-VL's token map against the Qwen2-VL image processor's smart resize (tiny model: 8 px
patches merged 2x2, so sides are resized to multiples of 16 px within 16x16 .. 64x64 pixels), and
where DeepStack's visual features enter the residual stream."""
import pytest
import torch

from studio.adapters.qwen2_vl import Qwen2VLAdapter
from studio.engine.session import ModelSession
from tiny_models import build_tiny, sample_image

# (width, height, image_grid_thw, merged grid rows x cols). 32x32 and 48x32 are multiples of 16
# within the pixel budget; 64x64 is exactly the 4096-pixel maximum; 2000x20 rounds to 2000x16,
# over budget, so both sides shrink by sqrt(2000 * 20 / 4096) = 3.125: the width to 640, the
# height floors to 0 and is raised to one 16 px step.
CASES = [
    (32, 32, (1, 4, 4), (2, 2)),
    (48, 32, (1, 4, 6), (2, 3)),
    (64, 64, (1, 8, 8), (4, 4)),
    (2000, 20, (1, 2, 80), (1, 40)),
]


@pytest.fixture(scope="module")
def session():
    model, processor = build_tiny("qwen3_vl")
    return ModelSession(model, processor)


def test_qwen3_vl_reuses_the_qwen2_vl_geometry(session):
    adapter = session.adapter
    assert adapter.family == "qwen3_vl"
    assert type(adapter).image_layout is Qwen2VLAdapter.image_layout
    assert type(adapter).pixel_token_groups is Qwen2VLAdapter.pixel_token_groups


@pytest.mark.parametrize("width,height,thw,grid", CASES, ids=[f"qwen3_vl-{c[0]}x{c[1]}" for c in CASES])
def test_qwen3_vl_token_map_follows_the_smart_resize(session, width, height, thw, grid):
    prepared = session.prepare(sample_image(width, height), "what is this ?")
    inputs, tmap = prepared.inputs, prepared.token_map
    assert tuple(inputs["image_grid_thw"][0].tolist()) == thw
    rows, cols = grid
    assert [(g.name, g.rows, g.cols, g.box) for g in tmap.grids] == [("image", rows, cols, (0, 0, width, height))]
    ids = inputs["input_ids"][0]
    assert tmap.image_positions == (ids == session.adapter.image_token_id()).nonzero().flatten().tolist()
    assert sorted(tmap.positions_of_grid(0)) == [(r, c) for r in range(rows) for c in range(cols)]
    with torch.inference_mode():
        features = session.model.get_image_features(
            pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
    assert sum(f.shape[0] for f in features.pooler_output) == rows * cols, "one image feature per mapped token"
    assert all(sum(f.shape[0] for f in level) == rows * cols for level in features.deepstack_features)

    groups = session.adapter.pixel_token_groups(inputs)
    torch.broadcast_shapes(groups.shape, inputs["pixel_values"].shape)
    assert groups.min() >= -1 and groups.max() < rows * cols
    assert set(groups.unique().tolist()) == set(range(rows * cols)), "every image token is fed by some pixels"


def test_qwen3_vl_deepstack_is_added_after_the_layer_output_at_image_positions_only(session):
    """The "residual" read of layer 0 is the decoder layer's output; layer 1 reads it plus the
    DeepStack features, which touch the image positions and nothing else."""
    prepared = session.prepare(sample_image(48, 32), "what is this ?")
    seen = []
    handle = session.adapter.decoder_layers()[1].register_forward_pre_hook(lambda m, args: seen.append(args[0][0]))
    try:
        captured = session.forward(prepared, capture=True)
    finally:
        handle.remove()
    added = (seen[0] - captured.hidden[0]).abs().sum(-1)
    is_image = torch.tensor(prepared.token_map.is_image)
    assert (added[~is_image] == 0).all() and (added[is_image] > 0).all()
