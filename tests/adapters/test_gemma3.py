"""Gemma 3's token map against its processor and projector (tiny model: every image squashed to
64x64, 8 px patches in an 8x8 grid, average-pooled 2x2 into 16 soft tokens in a 4x4 grid), with
pan-and-scan off (the default) and on."""
import pytest
import torch
from transformers import Gemma3Processor

from studio.adapters.base import AdapterError
from studio.engine.errors import StudioError
from studio.engine.session import ModelSession
from tiny_models import build_tiny, sample_image

WHOLE = "image"
# (width, height, grids as (name, rows, cols, box)). Without pan-and-scan the processor resizes
# to 64x64 whatever the aspect ratio: one 4x4 grid over the whole image, 2000x20 included.
CASES = [
    (32, 32, [(WHOLE, 4, 4, (0, 0, 32, 32))]),
    (40, 24, [(WHOLE, 4, 4, (0, 0, 40, 24))]),
    (24, 56, [(WHOLE, 4, 4, (0, 0, 24, 56))]),
    (2000, 20, [(WHOLE, 4, 4, (0, 0, 2000, 20))]),
]
# Pan-and-scan with a 16 px minimum crop (the library's 256 px would never cut a tiny image):
# a wide image gets round(w / h) crops side by side (2 .. 4), each ceil(w / n) wide, the last
# clipped at the edge; a tall one the same downwards; under a 1.2 aspect ratio none.
# 96x32: 3 crops of 32; 100x40: round(2.5) = 3 crops of ceil(100 / 3) = 34; 30x70: round(2.33)
# = 2 crops of 35 high; 2000x20: round(100) capped at 4 crops of 500.
PAN_AND_SCAN_CASES = [
    (96, 32, [(0, 0, 32, 32), (32, 0, 64, 32), (64, 0, 96, 32)]),
    (100, 40, [(0, 0, 34, 40), (34, 0, 68, 40), (68, 0, 100, 40)]),
    (30, 70, [(0, 0, 30, 35), (0, 35, 30, 70)]),
    (2000, 20, [(0, 0, 500, 20), (500, 0, 1000, 20), (1000, 0, 1500, 20), (1500, 0, 2000, 20)]),
    (36, 32, []),
]
PAN_AND_SCAN = {**Gemma3Processor.images_kwargs, "do_pan_and_scan": True, "pan_and_scan_min_crop_size": 16}


@pytest.fixture(scope="module")
def session():
    model, processor = build_tiny("gemma3")
    return ModelSession(model, processor)


@pytest.fixture
def pan_and_scan(session):
    session.processor.images_kwargs = PAN_AND_SCAN
    yield session
    del session.processor.images_kwargs


def check_map(session, prepared, grids):
    """The map's grids, every grid's cells once, each image run wrapped in <start_of_image> ...
    <end_of_image>, one projected feature per mapped token, and pixel groups that feed every token
    through exactly the patches the projector's average pool reads for it."""
    inputs, tmap = prepared.inputs, prepared.token_map
    assert [(g.name, g.rows, g.cols, g.box) for g in tmap.grids] == grids
    ids = inputs["input_ids"][0]
    assert tmap.image_positions == (ids == session.adapter.image_token_id()).nonzero().flatten().tolist()
    for index, grid in enumerate(tmap.grids):
        cells = tmap.positions_of_grid(index)
        assert sorted(cells) == [(r, c) for r in range(grid.rows) for c in range(grid.cols)]
        first, last = min(cells.values()), max(cells.values())
        assert last - first + 1 == len(cells), "one run of tokens per view"
        assert (tmap.tokens[first - 1], tmap.tokens[last + 1]) == ("<start_of_image>", "<end_of_image>")
    n_tokens = len(tmap.image_positions)
    with torch.inference_mode():
        features = session.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    assert features.shape[0] * features.shape[1] == n_tokens, "one image feature per mapped token"

    pixels = inputs["pixel_values"]
    groups = session.adapter.pixel_token_groups(inputs)
    torch.broadcast_shapes(groups.shape, pixels.shape)
    assert groups.min() >= -1 and groups.max() < n_tokens
    assert set(groups.unique().tolist()) - {-1} == set(range(n_tokens)), "every image token is fed by some pixels"
    embed = session.model.model.vision_tower.embeddings.patch_embedding
    pool = session.model.model.multi_modal_projector.avg_pool
    for token in (0, n_tokens // 2 + 1, n_tokens - 1):
        with torch.inference_mode():
            moved = (embed(pixels + (groups == token)) - embed(pixels)).abs().sum(1, keepdim=True) > 0
            pooled = pool(moved.float()).flatten()  # view-major, row-major: the token ordinals
        assert pooled.nonzero().flatten().tolist() == [token], f"token {token}'s pixels feed its pool window only"
        assert pooled[token] == 1, "and all of its pool window"


@pytest.mark.parametrize("width,height,grids", CASES, ids=[f"gemma3-{c[0]}x{c[1]}" for c in CASES])
def test_gemma3_token_map_follows_the_processor(session, width, height, grids):
    check_map(session, session.prepare(sample_image(width, height), "what is this ?"), grids)


@pytest.mark.parametrize("width,height,crops", PAN_AND_SCAN_CASES,
                         ids=[f"gemma3-pan-and-scan-{c[0]}x{c[1]}" for c in PAN_AND_SCAN_CASES])
def test_gemma3_pan_and_scan_crops_are_placed_where_the_processor_cuts_them(pan_and_scan, width, height, crops):
    prepared = pan_and_scan.prepare(sample_image(width, height), "what is this ?")
    assert prepared.inputs["pixel_values"].shape[0] == 1 + len(crops)
    grids = [(WHOLE, 4, 4, (0, 0, width, height))] + [(f"crop {i + 1}", 4, 4, box) for i, box in enumerate(crops)]
    check_map(pan_and_scan, prepared, grids)
    assert prepared.token_map.main_grid == 0


def test_gemma3_refuses_crops_its_settings_do_not_explain(pan_and_scan):
    """Crops cut with settings the adapter cannot see (here: changed after preparing) are refused
    with a StudioError naming the unknown geometry, never placed wrongly."""
    prepared = pan_and_scan.prepare(sample_image(96, 32), "what is this ?")
    pan_and_scan.processor.images_kwargs = {**PAN_AND_SCAN, "pan_and_scan_max_num_crops": 2}
    tmap = prepared.token_map
    with pytest.raises(AdapterError, match="patch geometry unknown") as caught:
        pan_and_scan.adapter.image_layout(torch.tensor(tmap.input_ids), tmap.tokens, prepared.inputs, (96, 32))
    assert isinstance(caught.value, StudioError)


def test_gemma3_prompt_starts_with_one_bos(session):
    tokens = session.prepare(sample_image(32, 32), "what is this ?").token_map.tokens
    assert tokens[:3] == ["<bos>", "<start_of_turn>", "user"]
