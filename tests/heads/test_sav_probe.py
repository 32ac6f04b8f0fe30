"""The ``sav`` probe reads a fitted classifier: its votes are the classifier's on independently
captured head outputs, a classifier of another model is refused, and ``vlm-studio sav fit`` writes
one that the probe reads."""
from __future__ import annotations

import numpy as np
import pytest

from probes import ProbeRequest, run_probe
from studio.cli import main
from studio.engine.assets import asset
from studio.engine.errors import InputError
from studio.engine.session import ModelSession
from studio.heads.sav import SAVClassifier, last_token_heads
from studio.world.render import render
from studio.world.scenes import sample_scene
from tiny_models import build_tiny, sample_image
from views.registry import FIGURES


def test_the_probe_votes_as_the_classifier_does_on_captured_heads(embedded):
    scene = sample_scene(7, "neutral")
    prompt = f"what color is the {scene.objects[0].kind} ?"
    result = run_probe(embedded, "sav", ProbeRequest(render(scene), prompt, 2))
    classifier = SAVClassifier.load(asset("sav"))
    features = last_token_heads(embedded, [render(scene)], [prompt])
    assert result.task == "colour" and result.classes == classifier.classes
    assert result.votes.tolist() == classifier.votes(features)[0].tolist()
    assert result.head_votes.tolist() == classifier.head_votes(features)[0].tolist()
    assert result.prediction == classifier.predict(features)[0]
    assert result.heads.tolist() == [list(h) for h in classifier.heads]
    assert np.array_equal(result.head_accuracy, classifier.head_accuracy.astype(np.float32))
    assert set(FIGURES["sav"](result, None)) == {"votes", "heads"}


def test_a_classifier_of_another_model_is_refused():
    session = ModelSession(*build_tiny("llava"))
    with pytest.raises(InputError, match="another model"):
        run_probe(session, "sav", ProbeRequest(sample_image(), "what color is it ?", 2))


def test_sav_fit_writes_a_classifier_the_probe_reads(embedded, tmp_path, capsys):
    assert main(["sav", "fit", "--task", "size", "--k", "2", "--out", str(tmp_path / "size")]) == 0
    assert "2 head(s) chosen" in capsys.readouterr().out
    classifier = SAVClassifier.load(tmp_path / "size")
    assert classifier.task == "size" and sorted(classifier.classes) == ["large", "small"] and len(classifier.heads) == 2
    scene = sample_scene(3, "neutral")
    result = run_probe(embedded, "sav", ProbeRequest(render(scene), f"what size is the {scene.objects[0].kind} ?", 2),
                       classifier=str(tmp_path / "size"))
    assert result.task == "size" and int(result.votes.sum()) == 2
