"""The import direction of the wings: UI and CLI on top, the engine at the bottom. Read from the
source (every import statement, also those inside functions), so a violation fails here before
it becomes a cycle or drags the UI into a notebook."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UPPER = ("studio.ui", "studio.cli", "studio.sharing", "studio.world", "studio.steering", "studio.concepts",
         "studio.heads", "studio.benchmarks", "studio.sharding", "probes", "views", "vlm_studio", "tiny_models", "gradio")
RULES = {  # package -> prefixes it must never import
    "studio.engine": UPPER,
    "studio.adapters": UPPER + ("studio.decoding",),
    "studio.interventions": UPPER + ("studio.decoding", "studio.engine.session"),
    "studio.decoding": UPPER,
    "probes": ("studio.world", "studio.ui", "studio.cli", "studio.sharing", "gradio", "tiny_models"),
    "views": ("torch", "studio", "probes", "gradio", "tiny_models"),
    "studio.steering": ("studio.ui", "studio.cli", "studio.sharing", "gradio", "tiny_models"),
    "studio.concepts": ("studio.ui", "studio.cli", "studio.sharing", "gradio", "tiny_models"),
    "studio.heads": ("studio.world", "studio.ui", "studio.cli", "studio.sharing", "gradio", "tiny_models"),
    "studio.world": ("studio.ui", "studio.cli", "studio.sharing", "gradio", "tiny_models"),
    "studio.sharding": ("studio.world", "studio.ui", "studio.cli", "studio.sharing", "studio.decoding", "gradio",
                        "tiny_models", "studio.engine.session"),
    "studio.benchmarks": ("studio.world", "studio.ui", "studio.cli", "studio.sharing", "gradio", "tiny_models"),
    "studio.sharing": ("studio.ui", "studio.cli", "gradio", "tiny_models"),
    "vlm_studio": ("studio.ui", "studio.cli", "gradio", "tiny_models"),
    "studio.ui": ("studio.cli", "tiny_models"),
    "studio.cli": ("tiny_models",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def runtime_modules() -> list[Path]:
    return sorted(p for package in ("studio", "probes", "views", "vlm_studio") for p in (ROOT / package).rglob("*.py"))


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("path", runtime_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    module = module_name(path)
    forbidden = next((banned for package, banned in sorted(RULES.items(), key=lambda kv: -len(kv[0]))
                      if _under(module, package)), ())
    bad = sorted(name for name in imports(path) for prefix in forbidden if _under(name, prefix))
    assert not bad, f"{module} imports {bad}"


def test_every_runtime_module_belongs_to_a_wing():
    loose = [module_name(p) for p in runtime_modules()
             if not any(_under(module_name(p), package) for package in RULES) and module_name(p) != "studio"]
    assert not loose, f"modules outside every wing: {loose}"


def test_test_builders_stay_off_the_runtime_path():
    from studio.sharing.wheel import PACKAGES
    assert "tiny_models" not in PACKAGES
    import tomllib
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(pattern.startswith("tiny") for pattern in found)
