"""MC²'s instruction-contrast direction and the validation/report split: the principal component
recovers a planted difference with its sign toward the image, the paper's layer window maps to
other depths as documented, the splits share no scene, alpha follows the validation split
alone, and alpha 0 of the direction is the plain model bit for bit."""
import pytest
import torch

from studio.engine.errors import InputError
from studio.engine.hooks import hook_count
from studio.steering import split
from studio.steering.fit import DirectionFit
from studio.steering.mc2 import (
    fit_instruction_direction,
    instructed,
    instruction_items,
    layer_window,
    principal_direction,
)
from studio.steering.preference import direction_items, held_out_items, training_items
from studio.steering.sweep import Sweep, chosen_alpha
from studio.world.render import render
from studio.world.scenes import sample_scene


def test_the_principal_direction_recovers_a_planted_difference_toward_the_image():
    generator = torch.Generator().manual_seed(0)
    planted = torch.randn(96, generator=generator)
    planted = 3 * planted / planted.norm()
    differences = planted + 0.3 * torch.randn(400, 96, generator=generator)  # noise of norm ~2.9 per pair
    found = principal_direction(differences)
    cosine = torch.nn.functional.cosine_similarity(found.unit, planted, dim=0)
    assert cosine > 0.99, cosine
    assert found.scale == pytest.approx(3.0, rel=0.05) and 0.4 < found.explained < 1
    assert torch.allclose(found.vector, found.unit * found.scale)
    flipped = principal_direction(-differences)
    assert torch.nn.functional.cosine_similarity(flipped.unit, -planted, dim=0) > 0.99, "the sign follows the image side"
    with pytest.raises(InputError, match="paired differences"):
        principal_direction(torch.zeros(5))


@pytest.mark.parametrize("n_layers,window", [(28, [20, 21, 22, 23]), (32, [23, 24, 25, 26]), (4, [3]), (1, [0])])
def test_the_paper_window_maps_proportionally(n_layers, window):
    assert layer_window(n_layers) == window


def test_pairs_are_the_same_item_under_both_instructions():
    items = instruction_items(5)
    image, text = instructed(items, "image"), instructed(items, "text")
    for base, a, b in zip(items, image, text):
        assert (a.scene, a.kind, a.attribute, a.text_answer) == (b.scene, b.kind, b.attribute, b.text_answer) \
            == (base.scene, base.kind, base.attribute, base.text_answer)
        assert "answer from the image ." in a.prompt and "answer from the text ." in b.prompt and a.conflict


def test_the_validation_and_report_splits_share_no_scene():
    validation, report = split.validation_split(200), split.report_split(200)
    scenes = {name: {i.scene.seed for i in s.conflict() + s.matched()} for name, s in
              (("validation", validation), ("report", report))}
    assert scenes["validation"] == set(validation.seeds) and scenes["report"] == set(report.seeds)
    assert not scenes["validation"] & scenes["report"]
    fitting = {i.scene.seed for i in direction_items(200) + training_items(600) + instruction_items(200)}
    assert not fitting & (scenes["validation"] | scenes["report"])
    assert validation.conflict()[:20] == held_out_items(200)[0][:20], "validation is the held-out set the sweep always used"
    assert report.to_dict() == {"name": "report", "scene_seeds": [200_000, 200_200], "items_per_style": 200}
    with pytest.raises(InputError, match="1..100000"):
        split.report_split(100_001)


def _sweep(ratios, accuracy):
    rows = [{"neutral answerable": {"image_ratio": r}} for r in ratios]
    return Sweep([1], [0.0, 1.0, 2.0, 4.0], rows, accuracy)


def test_alpha_is_chosen_on_validation_alone(monkeypatch):
    validation, report = split.validation_split(3), split.report_split(3)
    on_validation = _sweep([0.1, 0.5, 0.85, 0.9], [1, 1, 0.99, 0.9])
    on_report = _sweep([0.1, 0.82, 0.9, 0.95], [1, 1, 0.99, 0.9])
    assert chosen_alpha(on_validation) == 2.0 and chosen_alpha(on_report) == 1.0, "the splits disagree"
    swept, reported = [], []

    def fake_sweep(session, fit, layers, alphas, conflict, matched, progress):
        swept.append({i.scene.seed for i in conflict + matched})
        return on_validation if swept[-1] <= set(validation.seeds) else on_report

    def fake_report(session, fit, layers, alpha, held):
        reported.append((alpha, held))
        return "measured"
    monkeypatch.setattr(split, "sweep", fake_sweep)
    monkeypatch.setattr(split, "report", fake_report)
    result = split.validate_and_report(None, None, [1], [0.0, 1.0, 2.0, 4.0], validation, report)
    assert swept == [set(validation.seeds)], "only the validation split is swept"
    assert result.alpha == 2.0 and reported == [(2.0, report)] and result.report == "measured"
    with pytest.raises(InputError, match="share scenes"):
        split.validate_and_report(None, None, [1], [0.0], validation, validation)


@pytest.fixture(scope="module")
def mc2_fit(embedded):
    return fit_instruction_direction(embedded, instruction_items(16))


def test_an_mc2_fit_saves_and_loads(mc2_fit, embedded, tmp_path):
    fit = mc2_fit
    assert fit.method == "mc2" and fit.positions == "all" and fit.unit == "the MC² instruction direction"
    assert fit.vectors is not None and fit.vectors.shape == (embedded.n_layers, fit.directions.shape[1])
    assert all(row.any() for row in fit.vectors) and len(fit.probe_accuracy) == embedded.n_layers
    assert all(0 <= a <= 1 for a in fit.probe_accuracy) and fit.n_image == fit.n_text == 16
    fit.save(tmp_path)
    loaded = DirectionFit.load(tmp_path, embedded)
    assert loaded.method == "mc2" and torch.equal(loaded.vectors, fit.vectors)
    assert loaded.extra["explained_variance"] == fit.extra["explained_variance"]
    with pytest.raises(InputError, match="does not fit"):
        DirectionFit(fit.directions, fit.probe_accuracy, 1, 1, method="mc2")


def test_strength_zero_of_the_mc2_direction_is_the_plain_model(mc2_fit, embedded):
    prepared = embedded.prepare(render(sample_scene(7, "neutral")), "the circle is red . what color is the circle ?")
    plain_tokens = [t.id for t in embedded.generate(prepared, 6).tokens]
    plain_logits = embedded.forward(prepared).logits
    before = hook_count(embedded.model)
    zero = mc2_fit.steering(layer_window(embedded.n_layers), 0.0).interventions()
    assert [t.id for t in embedded.generate(prepared, 6, interventions=zero).tokens] == plain_tokens
    assert torch.equal(embedded.forward(prepared, interventions=zero).logits, plain_logits)
    strong = mc2_fit.steering(layer_window(embedded.n_layers), 4.0).interventions()
    assert (embedded.forward(prepared, interventions=strong).logits - plain_logits).abs().max() > 1e-2
    assert hook_count(embedded.model) == before


def test_steer_fit_mc2_saves_both_splits_and_steer_report_reads_the_validation_alpha(tmp_path, capsys):
    import json

    from studio.cli import main
    out = tmp_path / "mc2"
    assert main(["steer", "fit", "--method", "mc2", "--n", "8", "--report-n", "6", "--alphas", "0,1",
                 "--chair-scenes", "0", "--out", str(out)]) == 0
    saved = json.loads((out / "preference.json").read_text())
    assert saved["method"] == "mc2" and saved["layers"] == [3] and saved["positions"] == "all"
    assert saved["splits"] == {"validation": {"name": "validation", "scene_seeds": [0, 8], "items_per_style": 8},
                               "report": {"name": "report", "scene_seeds": [200_000, 200_006], "items_per_style": 6}}
    assert saved["chosen"]["alpha"] == 1.0 and saved["chosen"]["report"]["split"] == saved["splits"]["report"]
    capsys.readouterr()
    assert main(["steer", "report", "--steering", str(out), "--n", "6"]) == 0
    printed = capsys.readouterr().out
    assert "alpha +1 chosen on its validation split" in printed and "scenes 200000..200005" in printed
