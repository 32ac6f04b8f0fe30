"""The EOS study's bookkeeping on hand-made captions, and the Selective EOS Supervision loss by hand."""
import math

import numpy as np
import pytest
import torch

from studio.engine.errors import InputError
from studio.world.eos_eval import (
    FinetuneConfig,
    auroc,
    bootstrap_auroc,
    caption_steps,
    chair_metrics,
    complete_step,
    named_fraction,
    negative_steps,
    plain_loss,
    selective_eos_loss,
    step_scores,
    training_end_ids,
)
from studio.world.modelkit import build_processor
from studio.world.scenes import Scene, SceneObject

END, STOP = 2, 9
SCENE = Scene([SceneObject("cross", "purple", "large", 0, 0), SceneObject("heart", "red", "small", 1, 2)], seed=7)
# a bias caption: both true objects, then a phantom ring, then the end
PHANTOM = "a large purple cross , a small red heart , a small orange ring . <|end|>".split()


def _ids(steps: list[str]) -> list[int]:
    return [STOP if s == "." else END if s == "<|end|>" else 100 + i for i, s in enumerate(steps)]


def test_named_share_and_the_complete_step():
    assert named_fraction(SCENE, PHANTOM)[:5] == [0, 0, 0, 0, 0.5]
    assert named_fraction(SCENE, PHANTOM)[8:10] == [0.5, 1.0]
    assert complete_step(SCENE, PHANTOM) == 9, "the step after 'heart': where the list should end"
    assert complete_step(SCENE, "a large purple cross , a small orange ring .".split()) is None, "heart never named"
    out_of_order = "a small red heart , a large purple cross .".split()
    assert complete_step(SCENE, out_of_order) == 9


def test_caption_steps_scores_up_to_the_end_and_places_the_phantom():
    p_end = np.arange(2 * len(PHANTOM), dtype=float).reshape(2, -1)
    c = caption_steps(SCENE, PHANTOM, _ids(PHANTOM), [END, STOP], p_end)
    assert c.steps == PHANTOM[:15], "steps after the first end token (the full stop) are not scored"
    assert c.p_end.shape == (2, 15) and c.p_end[1, 14] == p_end[1, 14]
    assert c.complete == 9 and c.boundaries == [4, 9, 14]
    assert c.ring_phantoms_after_complete == [True] and c.phantoms_after_complete == [True]
    early = "a small orange ring , a large purple cross , a small red heart .".split()
    c2 = caption_steps(SCENE, early, _ids(early), [END, STOP], np.zeros((1, len(early))))
    assert c2.ring_phantoms_after_complete == [False] and c2.complete == 14 == len(early) - 1


def test_auroc_by_hand():
    # 0.9 beats 0.1 and 0.5, loses to 0.95; 0.5 beats 0.1, ties 0.5, loses to 0.95: (2 + 1.5) / 6
    assert auroc(np.array([0.9, 0.5]), np.array([0.1, 0.5, 0.95])) == pytest.approx(3.5 / 6)
    assert auroc(np.array([1.0]), np.array([0.0, 0.2])) == 1.0 and auroc(np.array([0.0]), np.array([0.5])) == 0.0
    assert math.isnan(auroc(np.array([]), np.array([0.3])))


def test_negative_sets_and_pooled_scores():
    p_end = np.zeros((1, len(PHANTOM)))
    p_end[0, 4], p_end[0, 9], p_end[0, 14] = 0.1, 0.3, 0.99  # after cross, at the complete step, after the ring
    c = caption_steps(SCENE, PHANTOM, _ids(PHANTOM), [END, STOP], p_end)
    assert negative_steps(c, "boundary") == [4, 14] and negative_steps(c, "incomplete") == [4]
    assert negative_steps(c, "all") == [t for t in range(15) if t != 9]
    pos, neg = step_scores([c], 0, "boundary")
    assert pos.tolist() == [0.3] and sorted(neg.tolist()) == [0.1, 0.99]
    assert auroc(*step_scores([c], 0, "incomplete")) == 1.0
    assert auroc(*step_scores([c], 0, "boundary")) == 0.5, "the step after the phantom outscores the complete one"
    point, ci = bootstrap_auroc([c, c], 0, "boundary", n_boot=20)
    assert point == 0.5 and ci == [0.5, 0.5]
    with pytest.raises(InputError):
        negative_steps(c, "later")


def test_selective_eos_loss_by_hand():
    row = [1.0, 0.5, 2.0, -1.0]  # EOS is id 2
    logits = torch.tensor([[row, row, row, row]])
    labels = torch.tensor([[-100, 0, 2, -100]])  # position 0 predicts 0 (non-EOS), position 1 predicts EOS
    exp = [math.exp(v) for v in row]
    without_eos = -math.log(exp[0] / (exp[0] + exp[1] + exp[3]))
    plain_eos = -math.log(exp[2] / sum(exp))
    assert selective_eos_loss(logits, labels, [2]).item() == pytest.approx((without_eos + plain_eos) / 2, abs=1e-6)
    assert plain_loss(logits, labels).item() == pytest.approx((-math.log(exp[0] / sum(exp)) + plain_eos) / 2, abs=1e-6)
    # two end tokens (EOS 2, full stop 3): a full-stop target keeps itself, drops EOS
    stop = torch.tensor([[-100, 3, 0, -100]])
    wanted = (-math.log(exp[3] / (exp[0] + exp[1] + exp[3])) - math.log(exp[0] / (exp[0] + exp[1]))) / 2
    assert selective_eos_loss(logits, stop, [2, 3]).item() == pytest.approx(wanted, abs=1e-6)


def test_the_selective_loss_never_pushes_the_end_token_down_at_other_targets():
    logits = torch.zeros(1, 3, 4, requires_grad=True)
    selective_eos_loss(logits, torch.tensor([[-100, 1, 0]]), [2]).backward()
    assert logits.grad is not None and torch.all(logits.grad[0, :2, 2] == 0)
    logits.grad = None
    plain_loss(logits, torch.tensor([[-100, 1, 0]])).backward()
    assert logits.grad is not None and torch.all(logits.grad[0, :2, 2] > 0), "plain CE pushes p(EOS) down"


def test_training_end_ids_and_config():
    tok = build_processor().tokenizer
    vocab = len(tok)
    assert training_end_ids(tok, vocab, "eos+stop") == [tok.convert_tokens_to_ids("<|end|>"), tok.convert_tokens_to_ids(".")]
    assert training_end_ids(tok, vocab, "eos") == [tok.convert_tokens_to_ids("<|end|>")]
    with pytest.raises(InputError):
        FinetuneConfig(objective="scoring")
    with pytest.raises(InputError):
        FinetuneConfig(steps=0)


def test_chair_metrics_by_hand():
    total = {"halluc": 1, "mentions": 4, "recalled": 3, "objects": 4, "bad": 1, "captions": 2}
    assert chair_metrics(total) == {"chair_i": 0.25, "chair_s": 0.5, "recall": 0.75}


def test_the_scene_figure_sets_the_named_share_beside_p_end(embedded):
    from probes import ProbeRequest, run_probe
    from studio.world.eos_eval import scene_figure
    from studio.world.language import CAPTION_PROMPT
    from studio.world.render import render
    from studio.world.scenes import sample_scene
    scene = sample_scene(0, "cooccur")
    fig = scene_figure(embedded, scene)
    result = run_probe(embedded, "eos", ProbeRequest(render(scene), CAPTION_PROMPT, 48))
    assert list(fig.data[2].y) == named_fraction(scene, result.steps)
    assert np.allclose(fig.data[0].y, result.p_end[-1])
