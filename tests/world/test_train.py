import json

from studio.cli import main


def test_quick_training_lowers_the_loss_and_saves_safetensors(tmp_path, capsys):
    assert main(["world", "train", "--quick", "--out", str(tmp_path)]) == 0
    assert "loss" in capsys.readouterr().out
    record = json.loads((tmp_path / "training.json").read_text())
    joint, vision = record["joint_loss"], record["vision_loss"]
    assert sum(joint[-2:]) / 2 < 0.6 * joint[0], joint
    assert vision[-1] < vision[0]
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
