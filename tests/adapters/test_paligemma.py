"""PaliGemma's token map against its processor and vision tower (tiny model: every image squashed
to 32x32, 8 px patches, one image token per patch: 16 tokens in a 4x4 grid, before ``<bos>``),
for PaliGemma 2 (the registered tiny model) and PaliGemma 1."""
import pytest
import torch

from studio.engine.session import ModelSession
from tiny_models import build_tiny, sample_image
from tiny_models.paligemma import paligemma

# (width, height). SiglipImageProcessor resizes to 32x32 whatever the aspect ratio, so every
# image, 2000x20 included, is one 4x4 grid over the whole image.
SIZES = [(32, 32), (40, 24), (24, 56), (2000, 20)]


@pytest.fixture(scope="module")
def session():
    model, processor = build_tiny("paligemma")
    return ModelSession(model, processor)


@pytest.fixture(scope="module")
def session_v1():
    config, model_class, processor = paligemma(version=1)
    torch.manual_seed(0)
    return ModelSession(model_class(config).eval(), processor)


@pytest.mark.parametrize("width,height", SIZES, ids=[f"paligemma-{w}x{h}" for w, h in SIZES])
def test_paligemma_token_map_follows_the_processor(session, width, height):
    prepared = session.prepare(sample_image(width, height), "what is this ?")
    inputs, tmap = prepared.inputs, prepared.token_map
    assert [(g.name, g.rows, g.cols, g.box) for g in tmap.grids] == [("image", 4, 4, (0, 0, width, height))]
    assert tmap.image_positions == list(range(16)), "the image tokens come first"
    assert tmap.tokens[16:] == ["<bos>", "what", "is", "this", "?"]
    ids = inputs["input_ids"][0]
    assert tmap.image_positions == (ids == session.adapter.image_token_id()).nonzero().flatten().tolist()
    assert sorted(tmap.positions_of_grid(0)) == [(r, c) for r in range(4) for c in range(4)]
    with torch.inference_mode():
        features = session.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    assert features.shape[:2] == (1, 16), "one image feature per mapped token"

    pixels = inputs["pixel_values"]
    groups = session.adapter.pixel_token_groups(inputs)
    torch.broadcast_shapes(groups.shape, pixels.shape)
    assert groups.min() >= -1 and groups.max() < 16
    assert set(groups.unique().tolist()) == set(range(16)), "every image token is fed by some pixels"
    embed = session.model.model.vision_tower.embeddings.patch_embedding
    for token in (0, 6, 15):
        with torch.inference_mode():
            moved = (embed(pixels + (groups == token)) - embed(pixels)).abs().sum(1).flatten()
        assert moved.nonzero().flatten().tolist() == [token], f"token {token}'s pixels are its patch's and no other's"


def test_paligemma_1_maps_the_same_and_its_lens_is_the_model(session_v1):
    """PaliGemma 1 (Gemma text, no soft cap): the same map, and the last layer's lens gives the logits."""
    prepared = session_v1.prepare(sample_image(40, 24), "what is this ?")
    assert [(g.name, g.rows, g.cols) for g in prepared.token_map.grids] == [("image", 4, 4)]
    assert prepared.token_map.image_positions == list(range(16))
    captured = session_v1.forward(prepared, capture=True)
    with torch.inference_mode():
        lens = session_v1.adapter.lens(captured.hidden[-1]).float()
    assert (lens - captured.logits).abs().max().item() < 1e-4


def test_paligemma_2_lens_soft_caps_as_the_model_does(session):
    """Without the cap the lens would not give PaliGemma 2's logits, which stay within +-30."""
    prepared = session.prepare(sample_image(32, 32), "what is this ?")
    captured = session.forward(prepared, capture=True)
    adapter = session.adapter
    with torch.inference_mode():
        uncapped = adapter.unembedding()(adapter.final_norm()(captured.hidden[-1])).float()
        lens = adapter.lens(captured.hidden[-1]).float()
    assert (lens - captured.logits).abs().max().item() < 1e-4
    assert captured.logits.abs().max() < 30 and not torch.allclose(uncapped, captured.logits)
