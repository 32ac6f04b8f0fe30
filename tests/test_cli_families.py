"""A user's own model folder of every supported family, through the CLI: `describe` answers and
`probe` runs (the tiny offline builders, saved with save_pretrained)."""
import pytest

from studio.cli import main
from tiny_models import FAMILIES, sample_image, save_tiny


@pytest.mark.parametrize("family", FAMILIES)
def test_describe_and_probe_run_on_a_saved_folder(family, tmp_path, capsys):
    folder = save_tiny(family, tmp_path / family)
    image = tmp_path / "image.png"
    sample_image(40, 24).save(image)
    assert main(["describe", str(image), "--prompt", "what is this ?", "--model", str(folder),
                 "--max-new-tokens", "3", "--json"]) == 0
    assert '"answer"' in capsys.readouterr().out
    assert main(["probe", "detector", str(image), "--model", str(folder), "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("detector: ")
    assert main(["describe", str(image), "--prompt", "<image> what is this ?", "--model", str(folder)]) in (0, 2)
