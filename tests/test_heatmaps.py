"""Patch maps, the spatial metric, the event boxes side file, and the HTML report in a real browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from fgclip.eval.patch_map import frame_maps, patch_anomaly_maps, upsample_maps
from fgclip.eval.spatial import box_mask, spatial_metrics
from pipeline.event_boxes import EventBoxesError, boxes_near, read_event_boxes, write_event_boxes
from tiny_fgclip import tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3, dtype=torch.float32).eval()


def test_dense_features_are_the_region_path_per_patch(model):
    """dense_features[:, :, i, j] is the region embedding of a box covering exactly patch (i, j)."""
    g = model.patch_grid
    pixels = torch.randn(2, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dense = model.dense_features(pixels)
        assert dense.shape == (2, model.embed_dim, g, g)
        torch.testing.assert_close(dense.norm(dim=1), torch.ones(2, g, g))
        i, j = 2, 1
        box = torch.tensor([j / g, i / g, (j + 1) / g, (i + 1) / g])
        boxes = box.expand(1, 1, 2, 4).clone()  # (B=1, R=1, T=2 frames, 4)
        out = model.encode_video(pixels[None], boxes, torch.tensor([[[False, True]]]))
    torch.testing.assert_close(out.region_embeds[0, 0], dense[1, :, i, j], rtol=1e-4, atol=1e-5)


def test_patch_map_shape_range_and_upsampling(model):
    frames = torch.randint(0, 256, (3, 20, 30, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    prompts = torch.nn.functional.normalize(torch.randn(4, model.embed_dim, generator=torch.Generator().manual_seed(2)), dim=-1)
    maps = frame_maps(model, frames, prompts, device=torch.device("cpu"), batch_frames=2)
    g = model.patch_grid
    assert maps.shape == (3, g, g) and maps.dtype == np.float32
    assert ((maps > 0) & (maps < 1)).all()

    # Upsampling: k = 5 pixels per patch (odd), so each patch centre is a pixel holding the patch's value.
    k = 5
    big = upsample_maps(maps, g * k, g * k)
    assert big.shape == (3, g * k, g * k)
    np.testing.assert_allclose(big[:, k // 2::k, k // 2::k], maps, rtol=1e-6)
    assert big.min() >= maps.min() - 1e-6 and big.max() <= maps.max() + 1e-6  # bilinear never overshoots
    # Any aspect: a constant map stays constant.
    np.testing.assert_allclose(upsample_maps(np.full((1, g, g), 0.3, np.float32), 33, 71), 0.3, rtol=1e-6)
    with pytest.raises(ValueError, match="N, g, g"):
        upsample_maps(maps[0], 10, 10)


def test_planted_anomaly_patch_is_the_peak(model):
    """Through the real model: prompts planted so that one patch's dense feature IS the anomaly
    prompt (and normal its opposite) must put that patch at the map's peak, and the pointing game
    must hit a box around it and miss one elsewhere."""
    frame = torch.randint(0, 256, (1, model.image_size, model.image_size, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        dense = model.dense_features(model.preprocess(frame))[0]  # (D, g, g)
    g = model.patch_grid
    i, j = 1, 3
    # With prompts {normal = -a, class = a}, a patch's map is sigmoid(2 t cos(patch, a)): largest where cos = 1.
    anomaly = dense[:, i, j]
    maps = frame_maps(model, frame, torch.stack([-anomaly, anomaly]), device=torch.device("cpu"))
    assert np.unravel_index(np.argmax(maps[0]), (g, g)) == (i, j)
    # The map definition alone, on planted dense features: 5 x 5 patches, one of them the anomaly prompt.
    planted = torch.nn.functional.normalize(torch.randn(1, 8, 5, 5, generator=torch.Generator().manual_seed(6)), dim=1)
    direction = torch.nn.functional.normalize(torch.randn(8, generator=torch.Generator().manual_seed(7)), dim=0)
    planted[0, :, 4, 2] = direction
    planted_map = patch_anomaly_maps(planted, torch.stack([-direction, direction]), torch.tensor(10.0))
    assert np.unravel_index(int(planted_map.argmax()), (5, 5)) == (4, 2)

    size = 8 * g
    upsampled = upsample_maps(maps, size, size)
    around = np.array([[j / g, i / g, (j + 1) / g, (i + 1) / g]])
    elsewhere = np.array([[((j + 2) % g) / g, ((i + 2) % g) / g, ((j + 2) % g + 1) / g, ((i + 2) % g + 1) / g]])
    hit = spatial_metrics(upsampled, [around], ["Planted"])
    miss = spatial_metrics(upsampled, [elsewhere], ["Planted"])
    assert hit["pointing_game"] == 1.0 and miss["pointing_game"] == 0.0
    assert hit["chance"] == pytest.approx(1 / g**2)
    assert hit["mean_map_inside"] > hit["mean_map_outside"]
    assert hit["per_class"]["Planted"]["frames"] == 1


def test_box_mask_counts_pixel_centres():
    mask = box_mask(np.array([[0.0, 0.0, 0.5, 0.25], [0.25, 0.0, 0.75, 0.25]]), 8, 8)
    assert mask.sum() == 2 * 6  # rows 0-1, columns 0-5 (union of the two boxes)
    assert mask[:2, :6].all() and not mask[2:].any()


def test_event_boxes_round_trip_and_errors(tmp_path):
    path = tmp_path / "boxes.json"
    write_event_boxes(path, {"Fighting950_x264.mp4": {12: [[0.1, 0.2, 0.3, 0.4]], 28: [[0.5, 0.5, 0.9, 0.9], [0, 0, 0.2, 0.2]],
                                                      40: []}})
    boxes = read_event_boxes(path)
    assert sorted(boxes["Fighting950_x264.mp4"]) == [12, 28]  # frames without boxes are not written
    assert boxes["Fighting950_x264.mp4"][28].shape == (2, 4)
    assert boxes_near(boxes["Fighting950_x264.mp4"], 20, 8) is boxes["Fighting950_x264.mp4"][12]
    assert boxes_near(boxes["Fighting950_x264.mp4"], 35, 4) is None
    document = json.loads(path.read_text())
    document["videos"]["Fighting950_x264.mp4"][0]["bboxes"] = [[0.3, 0.2, 0.1, 0.4]]
    path.write_text(json.dumps(document))
    with pytest.raises(EventBoxesError, match=r"Fighting950_x264.mp4, entry 0 \(frame 12\).*x1 < x2"):
        read_event_boxes(path)
    path.write_text("{}")
    with pytest.raises(EventBoxesError, match="not an event boxes file"):
        read_event_boxes(path)


def test_synthetic_event_boxes_enclose_what_is_drawn():
    """The generator's test boxes: only event frames, inside the frame, and the event's
    explosion drawn inside them (its orange / yellow pixels appear nowhere else)."""
    from pipeline import synth
    from pipeline.synth_scenes import FLASH_ORANGE, FLASH_YELLOW, HEIGHT, WIDTH

    plans = synth.plan_dataset(size="tiny")
    boxes = synth.test_event_boxes(plans)
    plan = next(p for p in plans if p.split == "test" and p.event)
    frames = boxes[plan.video.split("/")[-1]]
    first, last = plan.event
    assert set(frames) == set(range(first, last + 1))
    assert all(0 <= v <= 1 for listed in frames.values() for box in listed for v in box)
    probe = first + (last - first) // 2
    for number, image in enumerate(synth.render_frames(plan)):
        if number == probe:
            break
    flash = np.zeros(image.shape[:2], dtype=bool)
    for colour in (FLASH_ORANGE, FLASH_YELLOW):
        flash |= (image == np.array(colour, dtype=np.uint8)).all(axis=-1)
    assert flash.sum() > 50
    inside = box_mask(np.array(frames[probe]), HEIGHT, WIDTH)
    assert flash[inside].sum() == flash.sum()


# --- the HTML report, in a real browser ---------------------------------------------------------------


class _PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images, self.tables, self.text = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "table":
            self.tables += 1
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith("data:") or value.startswith("#"), f"external {name}: {value}"

    def handle_data(self, data):
        self.text.append(data)


def check_self_contained(page: str) -> _PageParser:
    """Parse the page: images are inlined, decodable PNGs; returns the parser for more checks."""
    parser = _PageParser()
    parser.feed(page)
    parser.close()
    assert parser.images
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    return parser


BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                 "--enable-logging=stderr", "--v=0"]
# Added to a copy of the page: once loaded, it logs what the browser made of it (console messages go to stderr).
PROBE = ("<script>window.addEventListener('load', () => { const images = [...document.images]; "
         "const broken = images.filter(i => !i.complete || i.naturalWidth === 0).length; "
         "console.log(`report-probe images=${images.length} broken=${broken} "
         "tables=${document.querySelectorAll('table').length} h1=${document.querySelector('h1').textContent}`); });"
         "</script>")


def check_report_in_browser(out_dir, tmp_path) -> None:
    """report.html renders in headless chromium, in one run: every inlined image decodes and every
    table is there (a probe script in a copy of the page reports it), no script error, and the
    screenshot is not blank."""
    from PIL import Image

    page = (out_dir / "report.html").read_text(encoding="utf-8")
    parser = check_self_contained(page)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine (.ci/run installs it): report.html was parsed, not rendered")
    probed = out_dir / "report-probed.html"  # beside the report: the same folder, nothing else may be needed
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    screenshot = tmp_path / "report.png"
    result = subprocess.run([browser, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}",
                             "--window-size=1280,2000", f"--screenshot={screenshot}", probed.as_uri()],
                            capture_output=True, timeout=180)
    log = result.stderr.decode("utf-8", errors="replace")
    assert result.returncode == 0, log[-3000:]
    probe = re.search(r"report-probe images=(\d+) broken=(\d+) tables=(\d+) h1=([^\"]*)", log)
    assert probe, log[-3000:]
    assert (int(probe[1]), int(probe[2]), int(probe[3])) == (len(parser.images), 0, parser.tables)
    assert probe[4] == "UCF-Crime evaluation"
    assert "Uncaught" not in log
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float32)
    assert pixels.shape[1] == 1280 and pixels.std() > 10  # text, tables and plots, not an empty page
