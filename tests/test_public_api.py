"""The public API (``vlm_studio``): what notebooks and scripts call, checked against the session."""
import numpy as np
import pytest

import vlm_studio as vs
from probes import REGISTRY
from studio.engine.errors import InputError
from studio.world.samples import load_samples

PROMPT = "describe the image ."


def test_probes_lists_the_registry_and_run_rejects_unknown_names(embedded):
    assert set(vs.probes()) == set(REGISTRY) and all(vs.probes().values())
    image = load_samples()[0].path
    with pytest.raises(InputError, match="unknown probe 'lens'"):
        vs.run(embedded, "lens", image, PROMPT)
    with pytest.raises(InputError, match="no parameter"):
        vs.run(embedded, "drift", image, PROMPT, layer=3)
    with pytest.raises(InputError, match="unknown decoding method"):
        vs.decode(embedded, image, PROMPT, method="beam")


def test_decode_greedy_is_the_session_answer_and_vcd_reports_both(embedded):
    image = next(s for s in load_samples() if s.scene.split == "cooccur").path
    plain = embedded.generate(embedded.prepare(image, PROMPT), max_new_tokens=30)
    greedy = vs.decode(embedded, image, PROMPT, max_new_tokens=30)
    assert greedy.answer_ids.tolist() == [t.id for t in plain.tokens] == greedy.baseline_ids.tolist()
    assert greedy.text == plain.text
    assert np.allclose(greedy.probs, [t.prob for t in plain.tokens])
    vcd = vs.decode(embedded, image, PROMPT, method="vcd", max_new_tokens=30, alpha=1.0)
    assert vcd.baseline_ids.tolist() == greedy.answer_ids.tolist() and "vcd alpha=1.0" == vcd.setting


def test_every_probe_has_figures_and_results_round_trip(embedded, tmp_path):
    image = load_samples()[0].path
    for name in REGISTRY:
        result = vs.run(embedded, name, image, PROMPT, max_new_tokens=6)
        figures = vs.figures(result, vs.image_array(image))
        assert figures and all(f.to_dict()["data"] for f in figures.values()), name
        result.save(tmp_path / name)
        assert vs.digest(vs.load_result(tmp_path / name)) == vs.digest(result)
