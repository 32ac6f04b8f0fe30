"""Concept dictionaries on an untrained world model: collection, sae-lens training and format,
quality measures, and the clamping splice (a no-op at a feature's own value)."""
import json

import numpy as np
import pytest
import torch

from studio.concepts.activations import (
    PATCH,
    WORD,
    ActivationSet,
    CollectConfig,
    collect,
)
from studio.concepts.dictionary import learn_concepts, semi_nmf
from studio.concepts.explore import Dictionary, activations, clamp_generate, image_heat
from studio.concepts.labels import attribute_values, patch_labels
from studio.concepts.quality import auroc_columns
from studio.concepts.sae import (
    DictionaryConfig,
    check_matches,
    load_sae,
    save_sae,
    train_sae,
)
from studio.engine.errors import InputError
from studio.engine.hooks import hook_count
from studio.interventions import read
from studio.world.render import render
from studio.world.scenes import sample_scene


@pytest.fixture(scope="module")
def acts(untrained_world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("acts")
    return collect(untrained_world, CollectConfig(layer=1, n_scenes=10, batch=4, shard_rows=300), folder,
                   progress=False)


@pytest.fixture(scope="module")
def dictionary(untrained_world, acts, tmp_path_factory):
    sae = train_sae(acts, DictionaryConfig(d_sae=32, k=4, steps=20, batch=64))
    folder = save_sae(sae, tmp_path_factory.mktemp("sae") / "dict", {"grid_side": 8})
    return folder, Dictionary.load(folder, untrained_world)


def test_collection_streams_shards_with_patch_and_word_rows(acts, untrained_world):
    data, meta = acts.load()
    assert len(acts.meta["shards"]) >= 2 and data.shape == (len(acts), untrained_world.model.config.text_config.hidden_size)
    per_scene = np.bincount(meta[meta[:, 1] == PATCH, 0])
    assert (per_scene == 64).all() and sorted(set(meta[meta[:, 1] == PATCH, 2])) == list(range(64))
    assert (meta[meta[:, 1] == WORD, 2] == -1).all() and (meta[:, 1] == WORD).sum() >= 10 * 5
    batch = next(acts.batches(16))
    assert batch.shape == (16, data.shape[1])


def test_incomplete_activation_set_and_bad_layer_are_refused(tmp_path, untrained_world):
    with pytest.raises(InputError, match="no complete activation set"):
        ActivationSet(tmp_path)
    with pytest.raises(InputError, match="out of range"):
        collect(untrained_world, CollectConfig(layer=99, n_scenes=1), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_sae_lens_format_round_trip_and_model_check(dictionary, untrained_world, embedded):
    folder, d = dictionary
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors", "studio.json"]
    assert json.loads((folder / "cfg.json").read_text())["architecture"] == "topk"
    again = load_sae(folder)
    assert torch.equal(again.W_dec, d.sae.W_dec) and check_matches(again, untrained_world) == 1
    with pytest.raises(InputError, match="width"):
        check_matches(again, embedded)
    again.cfg.metadata.model_name = "0123456789abcdef"
    with pytest.raises(InputError, match="another model"):
        check_matches(again, untrained_world)
    with pytest.raises(InputError, match="does not exist"):
        d.check_feature(32)


def test_clamping_a_feature_to_its_own_value_is_bit_identical(dictionary, untrained_world):
    _, d = dictionary
    prepared = untrained_world.prepare(render(sample_scene(3, "neutral")), "describe the image .")
    before = hook_count(untrained_world.model)
    plain = [t.id for t in untrained_world.generate(prepared, 8).tokens]
    assert clamp_generate(untrained_world, d, prepared, 5, None, "all", 8) == plain
    assert clamp_generate(untrained_world, d, prepared, 5, None, "image", 8) == plain
    assert hook_count(untrained_world.model) == before
    values = activations(untrained_world, d, prepared)
    assert values.shape == (len(prepared.token_map), 32) and (values >= 0).all()
    heat = image_heat(prepared.token_map, values[:, 0])
    assert heat.shape == (8, 8) and np.isclose(heat.sum(), values[prepared.token_map.image_positions, 0].sum())


def test_auroc_matches_the_rank_definition_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((200, 3)), 1) * (rng.random((200, 3)) > 0.5)
    labels = rng.random(200) > 0.7
    pos, neg = scores[labels], scores[~labels]
    brute = [((pos[:, j, None] > neg[None, :, j]).mean() + 0.5 * (pos[:, j, None] == neg[None, :, j]).mean())
             for j in range(3)]
    assert np.allclose(auroc_columns(scores, labels), brute)


def test_patch_labels_follow_the_scene():
    scene = sample_scene(4, "neutral")
    obj = scene.objects[0]
    patch = (obj.row * 2) * 8 + obj.col * 2 + 1
    labels = patch_labels(np.array([4]), np.array([patch]), "neutral", 8)[0]
    names = attribute_values()
    assert {names[j] for j in np.flatnonzero(labels)} == {
        ("kind", obj.kind), ("colour", obj.colour), ("size", obj.size), ("position", f"r{obj.row}c{obj.col}")}


def test_semi_nmf_keeps_activations_non_negative_and_reconstructs():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, 20))
    z = rng.random((120, 3)) @ basis
    v, u = semi_nmf(z, 3)
    assert (v >= 0).all()
    assert np.linalg.norm(z - v @ u) < 0.05 * np.linalg.norm(z)


def test_word_concepts_from_the_activation_set(acts, untrained_world):
    token = untrained_world.tokenizer.convert_tokens_to_ids("a")
    concepts = learn_concepts(acts, token, "a", n_concepts=2)
    assert concepts.concepts.shape == (2, acts.d_model) and (concepts.activations >= 0).all()
    assert set(concepts.top_scenes(0, 3)) <= set(range(10))
    with pytest.raises(InputError, match="occurs"):
        learn_concepts(acts, untrained_world.tokenizer.convert_tokens_to_ids("heart"), "heart", n_concepts=50)


def test_clamping_sets_the_feature_to_the_value_asked(dictionary, untrained_world):
    from studio.concepts.explore import clamp_intervention
    _, d = dictionary
    session = untrained_world
    prepared = session.prepare(render(sample_scene(3, "neutral")), "describe the image .")
    plain = session.forward(prepared).logits
    same = session.forward(prepared, interventions=[clamp_intervention(d, 5, None, "all")]).logits
    assert torch.equal(same, plain), "clamping a feature to its own value is no edit"
    hidden = session.layer_outputs(prepared.inputs, [d.layer])[0][0]
    own = d.encode(hidden)[:, 5]
    edited = {}
    for where in ("image", "all"):
        edit = clamp_intervention(d, 5, 50.0, where)
        reads = [edit, read("residual", d.layer, lambda h, w=where: edited.__setitem__(w, h[0].detach()))]
        session.forward(prepared, interventions=reads)
    image = torch.zeros(len(prepared.token_map), dtype=torch.bool)
    image[prepared.token_map.image_positions] = True
    # the splice adds decode(f') - decode(f) = (value - f[feature]) * W_dec[feature]: the clamped code holds the value
    for where, at in (("image", image), ("all", torch.ones_like(image))):
        delta = edited[where] - hidden
        expected = (50.0 - own)[:, None] * d.sae.W_dec[5][None]
        assert torch.allclose(delta[at], expected[at].to(delta.dtype), atol=1e-4), where
        assert torch.equal(delta[~at], torch.zeros_like(delta[~at])), where
    with pytest.raises(InputError, match="clamp value"):
        clamp_intervention(d, 5, 1e9)


def test_build_scores_grounds_maps_and_saves(untrained_world, tmp_path):
    from studio.concepts.build import BuildConfig, build
    config = BuildConfig(layer=1, train_scenes=8, eval_scenes=6, loss_scenes=2,
                         sae=DictionaryConfig(d_sae=32, k=4, steps=10, batch=64))
    quality = build(untrained_world, config, tmp_path / "dict", tmp_path / "cache")
    info = json.loads((tmp_path / "dict" / "studio.json").read_text())
    assert len(info["umap"]) == len(info["features"]) == len(info["top_patches"]) == 32
    assert set(info["quality"]["purity"]) == {f"{a}={v}" for a, v in attribute_values()}
    assert 0 <= quality.dead_share <= 1 and quality.l0 == pytest.approx(4)
    assert quality.loss_clean > 0 and quality.loss_spliced > 0
    d = Dictionary.load(tmp_path / "dict", untrained_world)
    assert d.layer == 1 and all(top[0][2] >= top[-1][2] for top in info["top_patches"] if top)
