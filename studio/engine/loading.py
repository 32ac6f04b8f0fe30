"""Load a VLM safely: the embedded model, a local folder, or a Hub id.

Safetensors only (pickle checkpoints are refused before anything is read), no remote code
unless asked, no network when offline, and every failure is one readable ModelLoadError.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from studio.adapters import AdapterError, check_supported
from studio.engine.assets import asset
from studio.engine.errors import ModelLoadError
from studio.engine.placement import Placement, check_dispatched, input_device
from studio.engine.processors import load_processor

EMBEDDED = "embedded"
OBJECTS_FILE = "objects.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    processor: object
    source: str
    device: str
    objects: tuple[str, ...] = ()


def object_words(folder: str) -> tuple[str, ...]:
    """The object vocabulary a model folder ships (``objects.json``: ``{"objects": [...]}``), or ()."""
    path = Path(folder) / OBJECTS_FILE
    if not path.is_file():
        return ()
    try:
        words = json.loads(path.read_text())["objects"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ModelLoadError(f"{path} is not an object list ({{\"objects\": [\"word\", ...]}})") from None
    if not (isinstance(words, list) and all(isinstance(w, str) and w.strip() for w in words)):
        raise ModelLoadError(f"{path} must list object words as non-empty strings")
    return tuple(w.strip().lower() for w in words)


def embedded_dir() -> Path:
    """The folder of the embedded world model shipped in ``studio/assets/``."""
    return asset("world-model")


def pick_device(device: str = "auto") -> str:
    """``auto`` picks cuda, then mps, then cpu; an unavailable explicit choice is an error."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError("device 'mps' was asked for but Apple MPS is not available; use --device cpu")
    if device != "cpu" and not device.startswith(("cuda", "mps")):
        raise ModelLoadError(f"unknown device {device!r}; choose auto, cuda, mps or cpu")
    return device


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto``: bf16 on a GPU that supports it (else fp16), fp16 on mps, fp32 on cpu."""
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device == "mps" else torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_source(source: str | None, offline: bool) -> tuple[str, bool]:
    """(where to load from, is it a local folder) after checking it exists or is a Hub id."""
    if source in (None, "", EMBEDDED):
        folder = embedded_dir()
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"the embedded model is missing from {folder}; "
                                 "rebuild it with `vlm-studio world train`")
        return str(folder), True
    path = Path(source).expanduser()
    if path.is_dir():
        check_weights(path)
        return str(path), True
    if path.exists():
        raise ModelLoadError(f"'{source}' is a file; give the folder that holds config.json and *.safetensors")
    if source.startswith((".", "/", "~")) or os.sep in source.strip("/").replace("/", "", 1) or not HUB_ID.match(source):
        raise ModelLoadError(f"no model folder at '{source}', and it is not a Hugging Face model id")
    return source, False


def check_weights(folder: Path) -> None:
    """Refuse a folder with no safetensors weights (naming pickle files when that is all it has)."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(f"'{folder}' holds only pickle-format weights ({', '.join(pickles[:3])}); "
                             "the studio loads safetensors only — convert them first")
    raise ModelLoadError(f"'{folder}' has no *.safetensors weights")


def load_model(source: str | None = None, device: str = "auto", dtype: str = "auto",
               attn_implementation: str = "sdpa", trust_remote_code: bool = False,
               offline: bool | None = None, device_map: str | None = None,
               max_memory: str | None = None) -> LoadedModel:
    """Load model and processor; see :meth:`studio.engine.session.ModelSession.load` for the options."""
    offline = _offline() if offline is None else offline
    where, local = resolve_source(source, offline)
    placement = Placement.parse(device_map, max_memory)
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    if attn_implementation not in ("sdpa", "eager"):
        raise ModelLoadError(f"unknown attention implementation {attn_implementation!r}; choose sdpa or eager")
    common = {"trust_remote_code": trust_remote_code, "local_files_only": offline or local}
    try:
        config = AutoConfig.from_pretrained(where, **common)
    except (OSError, ValueError) as err:
        raise ModelLoadError(_explain(source or EMBEDDED, err, offline)) from None
    try:
        check_supported(config)
    except AdapterError as err:
        raise ModelLoadError(f"cannot open '{source}': {err}") from None
    try:
        model: Any = AutoModelForImageTextToText.from_pretrained(  # "sdpa": the library's default, eager where
            where, dtype=torch_dtype, use_safetensors=True,  # a sub-model has no sdpa (PaliGemma 2's Gemma 2)
            attn_implementation=None if attn_implementation == "sdpa" else attn_implementation, **common,
            **(placement.from_pretrained_kwargs() if placement else {}))
        processor = load_processor(where, **common)
    except (OSError, ValueError) as err:
        raise ModelLoadError(_explain(source or EMBEDDED, err, offline)) from None
    except ImportError as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"'{source}' needs a library that is not installed here ({first}); the studio "
                             "loads image-only processors for Qwen-VL, InternVL, LLaVA-OneVision and Pixtral "
                             "without torchvision, but not for this one") from None
    except torch.OutOfMemoryError:
        raise ModelLoadError(f"'{source}' does not fit in {device} memory; try --dtype bf16 or --device cpu") from None
    if placement is not None:
        check_dispatched(model)
        return LoadedModel(model=model.eval(), processor=processor, source=source or EMBEDDED,
                           device=input_device(model), objects=object_words(where) if local else ())
    return LoadedModel(model=model.to(device).eval(), processor=processor, source=source or EMBEDDED, device=device,
                       objects=object_words(where) if local else ())


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _explain(source: str, err: Exception, offline: bool) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if offline:
        return (f"cannot load '{source}' offline: it is not a local folder nor in the Hugging Face cache "
                f"({first[:200]})")
    return f"cannot load '{source}': {first[:300]}"
