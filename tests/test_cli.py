"""The CLI: a real answer on success; on bad input, exit code 2 and one readable line."""
import json

import pytest
from PIL import Image

from studio.cli import main
from studio.world.render import render
from studio.world.scenes import sample_scene


@pytest.fixture()
def scene_png(tmp_path):
    path = tmp_path / "scene.png"
    render(sample_scene(2, "neutral")).save(path)
    return path


def test_describe_prints_the_answer(scene_png, capsys):
    assert main(["describe", str(scene_png), "--prompt", "how many objects are there ?", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] and all(0 < t["prob"] <= 1 for t in out["tokens"])


@pytest.mark.parametrize("case", ["not-image", "tiny", "missing", "bad-model", "empty-prompt"])
def test_bad_input_exits_2_with_one_line(case, scene_png, tmp_path, capsys):
    args = ["describe", str(scene_png)]
    if case == "not-image":
        bad = tmp_path / "x.png"
        bad.write_text("hello")
        args = ["describe", str(bad)]
    elif case == "tiny":
        Image.new("RGB", (1, 1)).save(tmp_path / "t.png")
        args = ["describe", str(tmp_path / "t.png")]
    elif case == "missing":
        args = ["describe", str(tmp_path / "nope.png")]
    elif case == "bad-model":
        args += ["--model", "nobody/nothing-at-all"]
    elif case == "empty-prompt":
        args += ["--prompt", " "]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err


def test_world_sample_writes_images_and_ground_truth(tmp_path, capsys):
    assert main(["world", "sample", "--split", "cooccur", "--n", "3", "--out", str(tmp_path)]) == 0
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    assert len(truth) == 3 and all("cross" in t["caption"] for t in truth)
    assert Image.open(tmp_path / truth[0]["image"]).size == (64, 64)


@pytest.mark.parametrize("args", [["--methods", "greedy,nonsense"], ["--methods", "greedy,sid", "--set", "sid.bogus=1"],
                                  ["--methods", "greedy,sid", "--set", "sid.layer=99"],
                                  ["--methods", "greedy", "--set", "vcd.alpha=1"]])
def test_bad_method_settings_exit_2_with_one_line(args, capsys):
    assert main(["world", "eval", "--n", "1", "--splits", "neutral", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err


@pytest.mark.parametrize("args,needle", [(["concepts", "word", "zebra"], "vocabulary"),
                                         (["concepts", "word", "ring", "--acts", "/nonexistent"], "activation set"),
                                         (["steer", "fit", "--alphas", "1,x"], "numbers"),
                                         (["concepts", "train", "--layer", "9", "--scenes", "2"], "out of range")])
def test_representation_commands_fail_with_one_line(args, needle, capsys, tmp_path):
    assert main([*args, *(["--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c")]
                        if args[:2] == ["concepts", "train"] else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()
