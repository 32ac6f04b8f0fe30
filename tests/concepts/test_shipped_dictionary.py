"""The shipped dictionary for the embedded model: sae-lens format, purity against ground truth
recomputed on fresh held-out scenes, and clamping a colour feature moves colour answers."""
import numpy as np
import pytest

from studio.concepts.activations import CollectConfig, collect
from studio.concepts.explore import Dictionary, clamp_generate
from studio.concepts.quality import PURE_AUROC, attribute_aurocs, encode, purity
from studio.engine.assets import asset
from studio.world.render import render
from studio.world.scenes import COLOURS, sample_scene

ASSETS = asset("concepts")


@pytest.fixture(scope="module")
def shipped(embedded):
    return Dictionary.load(ASSETS, embedded)


def test_purity_holds_on_fresh_scenes(embedded, shipped, tmp_path):
    held_out = collect(embedded, CollectConfig(shipped.layer, n_scenes=80, split="train", start=2_000_000),
                       tmp_path, progress=False)
    acts, meta = held_out.load()
    scores = purity(attribute_aurocs(encode(shipped.sae, acts).numpy(), meta, "train", 8))
    share = np.mean([p["auroc"] >= PURE_AUROC for p in scores.values()])
    assert share >= 0.8, {k: round(v["auroc"], 3) for k, v in scores.items()}
    assert shipped.info["quality"]["pure_share"] >= 0.8


def test_clamping_a_colour_feature_moves_colour_answers(embedded, shipped):
    hits, asked = 0, 0
    for colour in COLOURS:
        entry = shipped.info["quality"]["purity"][f"colour={colour}"]
        value = 3 * max(v for _, _, v in shipped.info["top_patches"][entry["feature"]])
        for seed in range(8):
            scene = sample_scene(6000 + seed, "neutral")
            obj = next((o for o in scene.objects if o.colour != colour), None)
            if obj is None:
                continue
            prepared = embedded.prepare(render(scene), f"what color is the {obj.kind} ?")
            ids = clamp_generate(embedded, shipped, prepared, entry["feature"], value, "image", 2)
            hits += embedded.tokenizer.decode(ids[:1]).strip() == colour
            asked += 1
    assert asked >= 40 and hits / asked >= 0.5, (hits, asked)
