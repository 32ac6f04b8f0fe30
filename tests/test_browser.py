"""The whole studio in a real browser (Playwright driving the system's headless Chromium).

One user's path through the app: pick a sample scene, generate, inspect, click a word and see
the panels follow it, click a patch and see its trajectory, run VCD in Mitigate, export a
notebook and receive the file; then the Concepts and Steer tabs. Assertions read what the
page shows (text, figure titles), never timings. Screenshots of each tab go to the test's
folder, and to ``$VLM_STUDIO_SCREENSHOTS`` when set (how ``docs/`` is refreshed).

Chromium comes from the machine's packages (Playwright cannot download its own here). Without
a browser these tests skip, unless ``VLM_STUDIO_REQUIRE_BROWSER=1`` (set by ``.ci/run``, which
installs it) makes that a failure.
"""
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from studio.ui.app import build_app
from studio.world.samples import load_samples

CHROMIUM = os.environ.get("VLM_STUDIO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
TIMEOUT = 60_000  # ms: how long to wait for the page to show something (a bound, not a target)


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if CHROMIUM and sync_playwright:
        return sync_playwright
    reason = "no Chromium found (apt-get install chromium) or playwright missing"
    if os.environ.get("VLM_STUDIO_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def page(embedded, launch):
    sync_playwright = _browser_or_skip()
    from playwright.sync_api import expect
    expect.set_options(timeout=TIMEOUT)
    url = launch(build_app(embedded), concurrency=2)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        tab.set_default_timeout(TIMEOUT)
        tab.goto(url)
        yield tab
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folders = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("VLM_STUDIO_SCREENSHOTS"):
        folders.append(Path(os.environ["VLM_STUDIO_SCREENSHOTS"]))

    def save(page, name: str) -> None:
        for folder in folders:
            page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    return save


def _title(page, elem_id: str):
    return page.locator(f"#{elem_id} .gtitle")


def _click_pixel(image, x: float, y: float) -> None:
    """Click pixel (x, y) of the picture shown (scaled down to fit and centred, as Gradio draws it)."""
    natural_w, natural_h, shown_w, shown_h = image.evaluate(
        "e => [e.naturalWidth, e.naturalHeight, e.clientWidth, e.clientHeight]")
    scale = min(1.0, shown_w / natural_w, shown_h / natural_h)
    left, top = (shown_w - natural_w * scale) / 2, (shown_h - natural_h * scale) / 2
    image.click(position={"x": left + (x + 0.5) * scale, "y": top + (y + 0.5) * scale})


def test_pick_a_sample_and_generate(page, shots):
    from playwright.sync_api import expect
    index, sample = next((i, s) for i, s in enumerate(load_samples()) if s.scene.split == "cooccur")
    page.locator("#samples .thumbnail-item").nth(index).click()
    expect(page.locator("#ground-truth")).to_contain_text("Ground truth:")
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.locator("#generate-status")).to_contain_text("wrong against ground truth")
    words = page.locator("#generate-answer").get_by_role("button").all_text_contents()
    assert len(words) > 3 and any("wrong" in w for w in words), words
    shots(page, "generate")


def test_inspect_click_a_word_then_a_patch(page, shots):
    from playwright.sync_api import expect
    page.get_by_role("tab", name="Inspect").click()
    page.get_by_role("button", name="Inspect", exact=True).click()
    chips = page.locator("#inspect-chips").get_by_role("button")
    expect(chips.first).to_be_visible()
    first = chips.first.text_content().strip()
    expect(_title(page, "inspect-trajectory")).to_have_text(f"emergence of '{first}' across layers")
    word = chips.nth(2).text_content().replace("wrong", "").strip()
    chips.nth(2).click()
    expect(_title(page, "inspect-trajectory")).to_have_text(f"emergence of '{word}' across layers")
    _click_pixel(page.locator("#inspect-patch-image img"), 20, 30)
    expect(page.locator("#inspect-patch-label")).to_contain_text("patch row 3, col 2")
    expect(_title(page, "inspect-patch-trajectory")).to_contain_text(f"p('{word}') at")
    expect(_title(page, "inspect-patch-layers")).to_contain_text("means, layer by layer")
    shots(page, "inspect")


def test_mitigate_with_vcd_and_download_the_notebook(page, shots, tmp_path):
    from playwright.sync_api import expect
    page.get_by_role("tab", name="Mitigate").click()
    page.locator("#mitigate-methods").get_by_label("sid").uncheck()
    page.get_by_role("button", name="Decode", exact=True).click()
    vcd = page.locator("#mitigate-vcd").get_by_role("button")
    expect(vcd.first).to_be_visible()
    expect(page.locator("#mitigate-sid")).to_be_hidden()
    shown = "".join(vcd.all_text_contents()).replace("wrong", "").replace("diverges", "").replace("+", "")
    page.locator("#export-mitigate").click()
    link = page.locator("#export-mitigate-file a").first
    expect(link).to_be_visible()
    with page.expect_download() as download:
        link.click()
    path = tmp_path / "bundle.zip"
    download.value.save_as(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        request = json.loads(archive.read(next(n for n in names if n.endswith("request.json"))))
        assert any(n.endswith("notebook.ipynb") for n in names) and any(n.endswith("figures.html") for n in names)
    assert [r["params"]["method"] for r in request["runs"]] == ["greedy", "vcd"]
    vcd_meta = json.loads(zipfile.ZipFile(path).read(next(n for n in names if n.endswith("01-decode.json"))))
    assert vcd_meta["values"]["text"].split() == shown.split()
    shots(page, "mitigate")


def test_concepts_and_steer_tabs(page, shots):
    from playwright.sync_api import expect
    page.get_by_role("tab", name="Concepts").click()
    page.get_by_role("button", name="Features on this image").click()
    expect(page.get_by_role("grid").filter(has_text="max on image").get_by_role("row").nth(1)).to_be_visible()
    page.get_by_role("button", name="Show feature", exact=True).click()
    expect(page.locator(".gtitle").filter(has_text="feature 0: words it promotes")).to_be_visible()
    points = page.locator("#concepts-map .scatterlayer .point")
    expect(points.first).to_be_visible()
    points.nth(points.count() // 2).click(force=True)  # a point on the map, not feature 0
    chosen = page.locator("#concepts-feature input")
    expect(chosen).not_to_have_value("0")
    feature = chosen.input_value()
    expect(page.locator(".gtitle").filter(has_text=f"feature {feature}: words it promotes")).to_be_visible()
    expect(page.locator("#concepts-map .legendtext").filter(has_text=f"feature {feature}")).to_be_visible()
    shots(page, "concepts")
    page.get_by_role("tab", name="Steer").click()
    page.get_by_label("Prompt").fill("the circle is blue . what color is the circle ?")
    page.get_by_role("button", name="Steer", exact=True).click()
    expect(page.get_by_label("steered answer")).not_to_have_value("")
    shots(page, "steer")
