"""SID with its pruned vision tokens removed (``prune="drop"``): the amateur equals the one that
masks the same tokens, selected once at the prompt, on every family; the removed positions are
not computed; nothing is left on the model."""
import dataclasses
import threading

import pytest
import torch
from torch import nn

from studio.decoding import strategy_by_name
from studio.decoding.base import DecodePlan
from studio.decoding.sid import SID
from studio.engine.errors import InputError
from studio.engine.hooks import hook_count
from studio.engine.pruning import Pruning, pruned
from studio.interventions import Intervention, intervene


@dataclasses.dataclass(frozen=True)
class MaskedOnce(SID):
    """The reference: SID selecting once at the prompt, masking the dropped tokens at every pass
    (prompt included) instead of removing them."""

    def plan(self, session, batch) -> DecodePlan:
        plan = SID.plan(dataclasses.replace(self, prune="drop"), session, batch)
        read, _, *masks = plan.interventions
        masks = [dataclasses.replace(m, phase="both") for m in masks]
        return DecodePlan(plan.processors, [read, *masks], None, plan.trace)


def test_dropping_equals_masking_the_tokens_selected_at_the_prompt(family):
    session, prepared = family
    layers = session.adapter.decoder_layers()
    lengths: list[int] = []
    handle = session.adapter.attention_modules()[1].register_forward_pre_hook(
        lambda m, a, k: lengths.append((a[0] if a else k["hidden_states"]).shape[:2]), with_kwargs=True)
    try:
        dropped = session.generate(prepared, 5, strategy_by_name("sid", layer=1, keep_ratio=0.3, prune="drop"))
    finally:
        handle.remove()
    masked = session.generate(prepared, 5, MaskedOnce(layer=1, keep_ratio=0.3))
    assert [t.id for t in dropped.tokens] == [t.id for t in masked.tokens]
    assert dropped.trace["kept"] == masked.trace["kept"] and len(dropped.trace["kept"]) == 1
    for a, b in zip(dropped.trace["amateur"], masked.trace["amateur"], strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(dropped.trace["expert"], masked.trace["expert"], strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    images, length = len(prepared.token_map.image_positions), prepared.length
    kept = len(dropped.trace["kept"][0])
    assert lengths[:2] == [(1, length), (1, length - images + kept)], "the expert whole, the amateur without dropped"
    assert all(shape == (2, 1) for shape in lengths[2:]), "later steps: both rows in one batch"
    assert all("forward" not in layer.__dict__ for layer in layers)


def test_drop_in_a_batch_of_requests_equals_each_alone(embedded):
    from studio.world.render import render
    from studio.world.scenes import sample_scene
    images = [render(sample_scene(i, "cooccur")) for i in range(3)]
    prompts = ["describe the image .", "what color is the circle ?", "is there a ring in the image ?"]
    strategy = strategy_by_name("sid", prune="drop")
    embedded.answer_batch(images[:1], prompts[:1], 1)  # transformers adds its output recorders on a first pass
    hooks = hook_count(embedded.model)
    together = embedded.answer_batch(images, prompts, 10, strategy)
    assert together == [embedded.answer_batch([i], [p], 10, strategy)[0] for i, p in zip(images, prompts)]
    assert hook_count(embedded.model) == hooks
    assert all("forward" not in layer.__dict__ for layer in embedded.adapter.decoder_layers())


class Doubler(nn.Module):
    def forward(self, hidden_states, position_ids=None, cache=None):
        return hidden_states * 2 + position_ids[..., None]


def test_pruned_rows_keep_their_removed_states_and_other_requests_see_the_layer_as_it_is():
    layer = Doubler()
    states = torch.arange(2 * 4, dtype=torch.float).view(2, 4, 1)
    positions = torch.arange(4).expand(2, 4)
    pruning = Pruning((1,), lambda s: torch.tensor([[0, 2]]), lambda: True)
    seen = {}
    with pruned([layer], pruning):
        worker = threading.Thread(target=lambda: seen.update(other=layer(states, position_ids=positions)))
        worker.start()
        worker.join()
        out = layer(states, position_ids=positions)
    assert torch.equal(seen["other"], states * 2 + positions[..., None]), "another request: the layer unchanged"
    assert torch.equal(out[0, :, 0], torch.tensor([0.0, 3, 6, 9]))
    assert torch.equal(out[1, :, 0], torch.tensor([8.0, 5, 14, 7])), "kept 0 and 2 computed, 1 and 3 passed through"
    assert "forward" not in layer.__dict__


def test_removed_positions_exclude_attention_edits_in_the_prompt_pass(family):
    session, prepared = family
    removal = Intervention("kept_positions", 1, lambda s: None, "prompt", rows=(1,))
    clash = Intervention("attention_mask", 1, lambda m: None, "both", rows=(1,))
    adapter = session.adapter
    with pytest.raises(InputError, match="cannot act in the prompt pass"):
        with intervene(session.model, adapter.decoder_layers(), adapter.attention_modules(), [removal, clash]):
            pass
    with pytest.raises(InputError, match="prompt phase"):
        Intervention("kept_positions", 1, lambda s: None, "both", rows=(1,))
    with pytest.raises(InputError, match="prune"):
        strategy_by_name("sid", prune="cut")
