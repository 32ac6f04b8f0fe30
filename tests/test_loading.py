"""Loading refuses what it must, with one readable message each, and never goes online in tests."""
import pytest
import torch
from safetensors.torch import save_file

from studio.engine.errors import ModelLoadError
from studio.engine.loading import load_model, pick_device, pick_dtype
from studio.engine.session import ModelSession


def test_unknown_hub_id_offline_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="offline"):
        load_model("no-such-org/no-such-model-xyz")


def test_folder_without_weights_and_missing_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no \\*.safetensors"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="no model folder"):
        load_model(str(tmp_path / "nothing-here"))


def test_pickle_only_checkpoint_is_refused_before_reading(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04 pretend pickle")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        load_model(str(tmp_path))


def test_unsupported_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="'bert'"):
        load_model(str(tmp_path))


def test_devices_and_dtypes():
    assert pick_dtype("auto", "cpu") == torch.float32
    with pytest.raises(ModelLoadError, match="dtype"):
        pick_dtype("fp8", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA"):
            pick_device("cuda")


def test_embedded_model_loads_by_default(embedded):
    assert embedded.source == "embedded" and embedded.adapter.family == "llava"
    assert embedded.model.config._attn_implementation == "sdpa"
    eager = ModelSession.load("embedded", attn_implementation="eager")
    assert eager.model.config._attn_implementation == "eager"


def test_a_processor_that_needs_a_missing_library_is_one_clear_message(tmp_path, monkeypatch):
    from tiny_models import save_tiny
    save_tiny("llava", tmp_path)

    def needs_torchvision(*args, **kwargs):
        raise ImportError("LlavaProcessor requires the Torchvision library but it was not found")
    monkeypatch.setattr("studio.engine.processors.AutoProcessor.from_pretrained", needs_torchvision)
    with pytest.raises(ModelLoadError, match="not installed here .*Torchvision"):
        load_model(str(tmp_path), device="cpu")
