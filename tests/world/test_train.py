import json

import pytest

from studio.cli import main
from studio.engine.errors import InputError


def test_quick_training_lowers_the_loss_and_saves_safetensors(tmp_path, capsys):
    assert main(["world", "train", "--quick", "--out", str(tmp_path)]) == 0
    assert "loss" in capsys.readouterr().out
    record = json.loads((tmp_path / "training.json").read_text())
    joint, vision = record["joint_loss"], record["vision_loss"]
    assert sum(joint[-2:]) / 2 < 0.6 * joint[0], joint
    assert vision[-1] < vision[0]
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))


def test_conflict_phase_extends_the_vocabulary_and_can_run_alone(tmp_path):
    from dataclasses import replace

    from studio.engine.session import ModelSession
    from studio.world.modelkit import base_vocab_size, build_tokenizer
    from studio.world.train import TrainConfig, continue_with_context, train
    quick = TrainConfig.quick()
    model, _, _ = train(replace(quick, context_steps=0), out_dir=tmp_path / "phase3", progress=False)
    assert model.get_input_embeddings().weight.shape[0] == base_vocab_size(build_tokenizer())
    old_rows = model.get_input_embeddings().weight.detach().clone()
    log = continue_with_context(tmp_path / "phase3", quick, tmp_path / "phase4", progress=False)
    assert len(log.context) == 1 and log.joint
    session = ModelSession.load(str(tmp_path / "phase4"))
    emb = session.model.get_input_embeddings().weight
    assert emb.shape[0] == len(build_tokenizer()) and (emb[: len(old_rows)] != old_rows).any()
    assert session.tokenizer.convert_tokens_to_ids("text") == len(old_rows) + 2
    with pytest.raises(InputError, match="already"):
        continue_with_context(tmp_path / "phase4", quick, tmp_path / "again", progress=False)
