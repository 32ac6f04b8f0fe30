"""Every supported family, as a tiny random model built offline: token map, lens identity, no perturbation."""
import pytest
import torch

from studio.engine.hooks import hook_count
from studio.engine.session import ModelSession
from tiny_models import FAMILIES, build_tiny, sample_image, save_tiny

# (family, image width, height, expected grids as (name, rows, cols))
CASES = [
    ("llava", 32, 32, [("image", 4, 4)]),
    ("llava_next", 40, 24, [("base", 4, 4), ("tiles", 4, 6)]),
    ("llava_next", 64, 64, [("base", 4, 4), ("tiles", 8, 8)]),
    ("qwen2_vl", 48, 32, [("image", 2, 3)]),
    ("qwen2_5_vl", 32, 32, [("image", 2, 2)]),
    ("idefics3", 32, 32, [("tile 1,1", 2, 2), ("tile 1,2", 2, 2), ("tile 2,1", 2, 2), ("tile 2,2", 2, 2),
                          ("global", 2, 2)]),
    ("smolvlm", 64, 32, [("tile 1,1", 2, 2), ("tile 1,2", 2, 2), ("global", 2, 2)]),
]


@pytest.fixture(scope="module", params=FAMILIES)
def family_session(request):
    model, processor = build_tiny(request.param)
    return request.param, ModelSession(model, processor)


def _session(family):
    model, processor = build_tiny(family)
    return ModelSession(model, processor)


@pytest.mark.parametrize("family,width,height,grids", CASES, ids=[f"{c[0]}-{c[1]}x{c[2]}" for c in CASES])
def test_token_map_matches_the_processor(family, width, height, grids):
    session = _session(family)
    prepared = session.prepare(sample_image(width, height), "what is this ?")
    tmap = prepared.token_map
    ids = prepared.inputs["input_ids"][0]
    image_id = session.adapter.image_token_id()
    assert tmap.image_positions == (ids == image_id).nonzero().flatten().tolist()
    assert [(g.name, g.rows, g.cols) for g in tmap.grids] == grids
    for index, grid in enumerate(tmap.grids):
        cells = tmap.positions_of_grid(index)
        assert sorted(cells) == [(r, c) for r in range(grid.rows) for c in range(grid.cols)]
    with torch.inference_mode():
        features = session.model.get_image_features(**{k: v for k, v in prepared.inputs.items()
                                                        if k in ("pixel_values", "image_sizes", "image_grid_thw",
                                                                 "pixel_attention_mask")})
    pooled = features.pooler_output if hasattr(features, "pooler_output") else features
    n_features = sum(f.shape[0] for f in pooled) if isinstance(pooled, (list, tuple)) else pooled.reshape(
        -1, pooled.shape[-1]).shape[0]
    assert n_features == len(tmap.image_positions), "one image feature per mapped image token"


def test_lens_at_last_layer_reproduces_logits_and_capture_changes_nothing(family_session):
    family, session = family_session
    prepared = session.prepare(sample_image(32, 32), "what is this ?")
    plain = session.forward(prepared)
    hooks_before = hook_count(session.model)  # after a first pass: transformers adds its own hooks lazily
    captured = session.forward(prepared, capture=True)
    assert hook_count(session.model) == hooks_before
    assert torch.equal(plain.logits, captured.logits), family
    assert captured.hidden.shape[:2] == (session.n_layers, prepared.length)
    with torch.inference_mode():
        lens = session.adapter.lens(captured.hidden[-1]).float()
    assert (lens - plain.logits).abs().max().item() < 1e-4, family
    generation = session.generate(prepared, max_new_tokens=3)
    assert 1 <= len(generation.sequence) - prepared.length <= 3


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_folder_loads_through_the_session(family, tmp_path):
    save_tiny(family, tmp_path)
    session = ModelSession.load(str(tmp_path), device="cpu")
    direct = _session(family)
    image = sample_image(32, 32)
    a = session.forward(session.prepare(image, "what is this ?")).logits
    b = direct.forward(direct.prepare(image, "what is this ?")).logits
    assert torch.equal(a, b)
