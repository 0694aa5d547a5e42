"""The embedded default generator: real H.264 files, official formats, exact boxes, determinism."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fgclip.cli import main
from pipeline import embedded, synth
from pipeline.decode import find_ffmpeg

WIDTH, HEIGHT = 320, 240
ANNOTATION_FILES = ("train.json", "Anomaly_Test.txt", "Temporal_Anomaly_Annotation.txt", "actors.json")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return synth.generate_dataset(tmp_path_factory.mktemp("synth") / "tiny", seed=3, size="tiny")


def _decode(path: Path) -> np.ndarray:
    raw = subprocess.run([find_ffmpeg(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, HEIGHT, WIDTH, 3)


def _videos(root: Path) -> list[Path]:
    return sorted((root / "videos").rglob("*.mp4"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_data(tiny, tmp_path):
    again = synth.generate_dataset(tmp_path / "again", seed=3, size="tiny", workers=1)  # no pool this time
    for name in ANNOTATION_FILES:
        assert (again / name).read_bytes() == (tiny / name).read_bytes(), name
    assert [p.relative_to(again) for p in _videos(again)] == [p.relative_to(tiny) for p in _videos(tiny)]
    for mine, theirs in zip(_videos(again), _videos(tiny)):
        assert _sha256(mine) == _sha256(theirs), mine.name

    other = synth.plan_dataset(seed=4, size="tiny")
    other_captions = [r["global_caption"] for r in synth.train_records(other)[0]]
    assert other_captions != [r["global_caption"] for r in json.loads((tiny / "train.json").read_text())]


def test_train_json_is_in_the_real_record_format_and_validates(tiny, shared_data):
    from pipeline.annotations import label_from_video_path, validate_annotations

    records = json.loads((tiny / "train.json").read_text())
    real_keys = set(json.loads((shared_data / "annotations" / "ucf_fgclip_train_with_timestamps_en.json").read_text())[0])
    for record in records:
        assert real_keys <= set(record) <= real_keys | {"hard_negatives"}
        assert len(record["box_infos"]) == len(record["region_captions"]) >= 1
        assert (tiny / record["video"]).is_file() and record["video"].startswith("videos/")
        for track in record["box_infos"]:
            assert len(track) >= 2 and [k["frame"] for k in track] == sorted({k["frame"] for k in track})
            for key in track:
                x1, y1, x2, y2 = key["bbox"]
                assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
    # two windows of one normal video, like the real normal records
    windowed = [r for r in records if r["timestamps"] is not None]
    assert len(windowed) == 2 and windowed[0]["video"] == windowed[1]["video"]
    assert windowed[0]["timestamps"][1] == windowed[1]["timestamps"][0]
    assert {label_from_video_path(r["video"])[0] for r in records} == {"Normal", *synth.CLASSES}

    report = validate_annotations(tiny / "train.json", test_split=tiny / "Anomaly_Test.txt")
    assert report.errors() == [], report.errors()[:3]
    assert len(report.records) == len(records)


def test_test_split_and_temporal_annotation_follow_the_official_formats(tiny, shared_data):
    official_line = re.compile(r"^(\S+_x264(?:\.mp4)?)  (\S+)  (-?\d+)  (-?\d+)  (-?\d+)  (-?\d+)\s*$")
    for line in (shared_data / "ucf" / "Temporal_Anomaly_Annotation.txt").read_text().splitlines()[:5]:
        assert official_line.match(line), line  # the pattern is the official file's
    videos = json.loads((tiny / "actors.json").read_text())["videos"]
    split = (tiny / "Anomaly_Test.txt").read_text().split()
    assert all(re.fullmatch(r"[A-Za-z_]+/[A-Za-z_]+_?\d+_x264\.mp4", line) for line in split), split
    assert all((tiny / "videos" / line).is_file() for line in split)
    assert embedded.TEST_VIDEO_ROOT.relative_to(embedded.SYNTH_DIR) == Path("videos")

    rows = [official_line.match(line) for line in (tiny / "Temporal_Anomaly_Annotation.txt").read_text().splitlines()]
    assert all(rows) and [m[1] for m in rows] == [Path(line).name for line in split]
    for row, line in zip(rows, split):
        name, label, start1, end1, start2, end2 = row[1], row[2], *map(int, row.groups()[2:])
        n_frames = videos[f"videos/{line}"]["frames"]
        assert label == line.split("/")[0].replace("Testing_Normal_Videos_Anomaly", "Normal")
        assert (start2, end2) == (-1, -1)
        if label == "Normal":
            assert (start1, end1) == (-1, -1)
        else:
            assert 0 < start1 < end1 < n_frames - 1  # normal activity before and after
            assert 0.15 <= (end1 - start1 + 1) / n_frames <= 0.5


def test_videos_are_h264_320x240_30fps_with_the_planned_frame_counts(tiny):
    videos = json.loads((tiny / "actors.json").read_text())["videos"]
    assert sorted(videos) == [str(p.relative_to(tiny)) for p in _videos(tiny)]
    for path in _videos(tiny):
        probe = subprocess.run([find_ffmpeg(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
        assert re.search(r"Video: h264 .*yuv420p.*, 320x240.*, 30 fps", probe), probe
        assert len(_decode(path)) == videos[str(path.relative_to(tiny))]["frames"]


def _actor_pixels(frame: np.ndarray, rgb) -> np.ndarray:
    """(y, x) of pixels of this colour, ignoring 1-2 px colour mixtures along other actors' borders."""
    match = np.abs(frame.astype(np.int16) - np.array(rgb, np.int16)).max(axis=-1) <= 40
    padded = np.pad(match, 1)
    core = np.ones_like(match)
    for dy in range(3):
        for dx in range(3):
            core &= padded[dy:dy + HEIGHT, dx:dx + WIDTH]
    return np.argwhere(core)


def test_boxes_interpolated_from_keyframes_enclose_the_actor_on_every_frame(tiny):
    records = json.loads((tiny / "train.json").read_text())
    actors = json.loads((tiny / "actors.json").read_text())["records"]
    frames_by_video = {video: _decode(tiny / video) for video in {r["video"] for r in records}}
    checked = seen = 0
    for record, entry in zip(records, actors):
        assert entry["video"] == record["video"]
        frames = frames_by_video[record["video"]]
        for track, region in zip(record["box_infos"], entry["regions"]):
            keys = [k["frame"] for k in track]
            slack_px = []  # box size minus the actor's visible extent, per keyframe
            for frame in range(keys[0], keys[-1] + 1):
                box = [np.interp(frame, keys, [k["bbox"][c] for k in track]) for c in range(4)]
                x1, y1, x2, y2 = box[0] * WIDTH, box[1] * HEIGHT, box[2] * WIDTH, box[3] * HEIGHT
                pixels = _actor_pixels(frames[frame], region["rgb"])
                checked += 1
                if len(pixels) == 0:
                    continue  # hidden behind another actor on this frame
                seen += 1
                ys, xs = pixels[:, 0] + 0.5, pixels[:, 1] + 0.5
                assert xs.min() >= x1 and xs.max() <= x2 and ys.min() >= y1 and ys.max() <= y2, (
                    f"{record['video']} {region['caption']!r} frame {frame}: pixels x {xs.min()}..{xs.max()} "
                    f"y {ys.min()}..{ys.max()} outside box {x1:.1f},{y1:.1f},{x2:.1f},{y2:.1f}")
                if frame in keys:
                    slack_px.append(((x2 - x1) - (xs.max() - xs.min()), (y2 - y1) - (ys.max() - ys.min())))
            # tight boxes: the actor spans its box's height up to the margins and the fighting jitter
            # (widths are looser: thin swinging arms vanish in the 3x3 core, neighbours occlude)
            assert slack_px and min(y for _, y in slack_px) < 20, (record["video"], region["caption"], slack_px)
    assert checked > 200 and seen > 0.9 * checked


def test_default_size_plan_matches_the_demo_budget():
    plans = synth.plan_dataset(seed=embedded.SYNTH_SEED, size="default")
    records, actor_entries = synth.train_records(plans)
    train = [p for p in plans if p.split == "train"]
    test = [p for p in plans if p.split == "test"]
    assert 48 <= len(records) <= 64 and 12 <= len(test) <= 16
    assert all(6 * 30 <= p.n_frames <= 10 * 30 for p in train if not any(r.window for r in p.records))
    assert all(20 * 30 <= p.n_frames <= 40 * 30 for p in test)
    assert Counter(p.label for p in test if p.event) == {c: 3 for c in synth.CLASSES}
    assert sum(p.n_frames for p in plans) < 30_000  # generation stays under a minute on 2 cores
    # every class sees every scene equally often: the background says nothing about the class
    for label in synth.CLASSES:
        assert set(Counter(p.scene for p in train if p.label == label).values()) == {2}
    # persons and cars at least 15 % of the frame height (a flash grows from a spark)
    for record, entry in zip(records, actor_entries):
        for track, region in zip(record["box_infos"], entry["regions"]):
            assert region["kind"] == "flash" or all(k["bbox"][3] - k["bbox"][1] >= 0.15 for k in track)
    # captions: small vocabulary, the class word in every anomalous caption; the Chinese-captioned
    # classes wholly in Chinese (as the real file's Burglary), every other caption English
    from pipeline.captions import foreign_scripts, record_texts

    for record, plan_label in zip(records, [p.label for p in train for _ in p.records]):
        if plan_label in synth.CHINESE_CAPTIONED_CLASSES:
            assert all(foreign_scripts(text) == ["Chinese (Han)"] for text in record_texts(record)), record
        else:
            assert synth.CLASS_WORDS[plan_label] in record["global_caption"]
            assert not any(foreign_scripts(text) for text in record_texts(record)), record
    assert synth.CHINESE_CAPTIONED_CLASSES and set(synth.CHINESE_CAPTIONED_CLASSES) <= set(synth.CLASSES)


def test_cli_generates_skips_when_complete_and_redoes_a_partial_output(tmp_path):
    runner = CliRunner()
    out = tmp_path / "synth"
    first = runner.invoke(main, ["synth", "--out", str(out), "--size", "tiny", "--seed", "5"])
    assert first.exit_code == 0, first.output
    assert "training records" in first.output and synth.is_complete(out, 5, "tiny")
    stamp = (out / synth.COMPLETE_NAME).read_text()

    again = runner.invoke(main, ["synth", "--out", str(out), "--size", "tiny", "--seed", "5"])
    assert again.exit_code == 0 and "already complete" in again.output
    assert (out / synth.COMPLETE_NAME).read_text() == stamp

    # an interrupted run leaves no stamp: the next run regenerates instead of using it
    (out / synth.COMPLETE_NAME).unlink()
    victim = _videos(out)[0]
    victim.write_bytes(victim.read_bytes()[:1000])
    redo = runner.invoke(main, ["synth", "--out", str(out), "--size", "tiny", "--seed", "5"])
    assert redo.exit_code == 0 and "training records" in redo.output
    assert len(_decode(victim)) > 0 and not list(tmp_path.glob("synth.partial-*"))

    bad = runner.invoke(main, ["synth", "--out", str(tmp_path / "x"), "--size", "huge"])
    assert bad.exit_code != 0 and "huge" in bad.output
