"""Decoding strategies: identities that must hold exactly, every family, and clear errors."""
import hashlib

import pytest
import torch

from studio.decoding import STRATEGIES, strategy_by_name
from studio.decoding.contrastive import contrast
from studio.decoding.vcd import alpha_bar, diffuse
from studio.engine.errors import InputError
from studio.engine.hooks import hook_count

CONTRASTIVE = ("vcd", "sid", "icd")


def digest(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode() + t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_alpha_zero_is_greedy_and_nothing_is_left_behind(family):
    session, prepared = family
    greedy = [t.id for t in session.generate(prepared, max_new_tokens=6).tokens]
    hooks, weights = hook_count(session.model), digest(session.model)
    attn = (session.model.config._attn_implementation, session.model.config.text_config._attn_implementation)
    for name in CONTRASTIVE:
        tokens = [t.id for t in session.generate(prepared, 6, strategy_by_name(name, alpha=0.0)).tokens]
        assert tokens == greedy, name
        session.generate(prepared, 6, strategy_by_name(name))
    assert hook_count(session.model) == hooks and digest(session.model) == weights
    assert (session.model.config._attn_implementation, session.model.config.text_config._attn_implementation) == attn


def test_sid_keeping_every_vision_token_has_the_plain_model_as_amateur(family):
    session, prepared = family
    out = session.generate(prepared, 4, strategy_by_name("sid", keep_ratio=1.0))
    plain = session.forward(prepared).logits[-1]
    assert torch.allclose(out.trace["amateur"][0], plain, atol=1e-4)
    for expert, amateur in zip(out.trace["expert"], out.trace["amateur"]):
        assert torch.allclose(expert, amateur, atol=1e-5)
    assert all(len(k) == len(prepared.token_map.image_positions) for k in out.trace["kept"])


def test_sid_keeps_the_requested_share_of_vision_tokens(untrained_world):
    from studio.world.render import render
    from studio.world.scenes import sample_scene
    prepared = untrained_world.prepare(render(sample_scene(1)), "describe the image .")
    out = untrained_world.generate(prepared, 3, strategy_by_name("sid", layer=1, keep_ratio=0.25))
    assert [len(k) for k in out.trace["kept"]] == [16] * len(out.trace["kept"])
    assert set(out.trace["kept"][0]) <= set(prepared.token_map.image_positions)


def test_contrast_formula_and_plausibility():
    expert = torch.tensor([3.0, 2.0, -5.0])
    amateur = torch.tensor([3.0, 0.0, -9.0])
    out = contrast(expert, amateur, alpha=1.0, beta=0.1)
    assert torch.equal(out[:2], torch.tensor([3.0, 4.0]))
    assert out[2] == float("-inf"), "p(-5) < 0.1 * max p: masked"
    assert torch.equal(contrast(expert, amateur, 0.0, 0.0), expert)


def test_vcd_noise_follows_the_reference_schedule():
    a = alpha_bar(500)
    assert abs(a ** 0.5 - 0.863) < 2e-3 and abs((1 - a) ** 0.5 - 0.505) < 2e-3
    x = torch.ones(2, 3, 8, 8)
    assert torch.equal(diffuse(x, 500, 0), diffuse(x, 500, 0))
    assert not torch.equal(diffuse(x, 500, 0), diffuse(x, 500, 1))


@pytest.mark.parametrize("name,params,needle", [
    ("vcd", {"alpha": -1}, "alpha"), ("vcd", {"alpha": 1e6}, "alpha"), ("sid", {"beta": 1.5}, "beta"),
    ("sid", {"keep_ratio": 0}, "keep_ratio"), ("sid", {"keep_ratio": 1.2}, "keep_ratio"),
    ("vcd", {"noise_step": 1000}, "noise_step"), ("vcd", {"noise_step": -1}, "noise_step"),
    ("nonsense", {}, "greedy"), ("sid", {"noise_step": 3}, "keep_ratio"),
])
def test_bad_parameters_name_the_valid_range(name, params, needle):
    with pytest.raises(InputError, match=needle):
        strategy_by_name(name, **params)


def test_sid_layer_beyond_depth(untrained_world):
    from studio.world.render import render
    from studio.world.scenes import sample_scene
    prepared = untrained_world.prepare(render(sample_scene(1)), "describe the image .")
    with pytest.raises(InputError, match="beyond the model's depth"):
        untrained_world.generate(prepared, 2, strategy_by_name("sid", layer=untrained_world.n_layers))
    assert set(STRATEGIES) >= {"greedy", "sampling", "vcd", "sid", "icd"}


def test_settings_parse_into_method_parameters():
    from studio.decoding import parse_settings
    assert parse_settings(["sid.layer=3", "sid.keep_ratio=0.5", "vcd.alpha=1"]) == {
        "sid": {"layer": 3, "keep_ratio": 0.5}, "vcd": {"alpha": 1}}
    assert strategy_by_name("sid", **parse_settings(["sid.layer=3"])["sid"]).layer == 3
    with pytest.raises(InputError, match="METHOD.PARAM=VALUE"):
        parse_settings(["layer=3"])
