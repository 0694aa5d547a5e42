"""Stage 1 end to end on the real clips: stored frames, sampling, tracks, manifests, bad input, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from click.testing import CliRunner
from ffmpeg_reference import reference_frames
from shard_checks import assert_same_shard_dirs

from fgclip.cli import main as cli
from pipeline.annotations import AnnotationRecord, Keyframe, Region
from pipeline.decode import find_ffmpeg, probe_video
from pipeline.frames import FramesError, build_shards, build_test_shards
from pipeline.shards import ShardReader, list_shards, read_manifest

REPO = Path(__file__).resolve().parent.parent
FGCLIP = str(Path(sys.executable).parent / "fgclip-vad")

# The real clips under UCF-Crime-like names (symlinks), so labels come from the folders.
CLIP_NAMES = {
    "Abuse/Abuse901_x264.mp4": "vtest_campus_cctv.mp4",  # 480x360, 10 fps, 795 frames
    "Training_Normal_Videos_Anomaly/Normal_Videos901_x264.mp4": "car_traffic.mp4",  # 640x360, 30.19 fps, 917
    "Arrest/Arrest901_x264.avi": "megamind_xvid.avi",  # 720x528 XVID, 23.98 fps, 270
}
VTEST, CAR, FILM = list(CLIP_NAMES)
BOX_A = (0.1, 0.2, 0.4, 0.6)
BOX_B = (0.5, 0.3, 0.9, 0.9)


@pytest.fixture(scope="module")
def video_root(link_real_clips, tmp_path_factory) -> Path:
    return link_real_clips(tmp_path_factory.mktemp("ucf"), CLIP_NAMES)


@pytest.fixture(scope="module")
def references(video_root):
    """Every frame of each clip at 32 px (plain ffmpeg), decoded once per test module."""
    cache: dict[tuple[str, int], np.ndarray] = {}

    def get(name: str, size: int = 32, crop=None) -> np.ndarray:
        key = (name, size, crop)
        if key not in cache:
            cache[key] = reference_frames(video_root / name, size, crop)
        return cache[key]

    return get


def record(index: int, video: str, window_s=None, regions=(), caption: str | None = None) -> AnnotationRecord:
    label = video.split("/")[0].replace("Training_Normal_Videos_Anomaly", "Normal")
    return AnnotationRecord(index, video, caption or f"caption {index}", tuple(regions), window_s, label, label != "Normal")


def read_all(shard_dir: Path) -> dict[int, object]:
    out = {}
    for path in list_shards(shard_dir):
        with ShardReader(path) as reader:
            for i in range(reader.num_records):
                rec = reader.read_record(i)
                out[rec.record_index] = rec
    return out


# --- sampling and stored frames ---------------------------------------------------------------


def test_uniform_shards_hold_the_frames_ffmpeg_decodes(video_root, references, tmp_path):
    regions = (Region("a person walks", (Keyframe(300, BOX_A), Keyframe(500, BOX_B)), ("a person runs",)),
               Region("the whole scene", ()))
    records = [
        record(0, VTEST, None, regions),
        record(1, CAR),
        record(2, FILM),
        record(3, VTEST, (20.0, 45.5)),
        record(4, CAR, (3.3, 7.0)),
        record(5, FILM, (1.0, 2.0)),  # 25 source frames for T = 32: frames repeat
    ]
    out = {8: tmp_path / "t8", 32: tmp_path / "t32"}
    summary = build_shards(records, video_root=video_root, out_dirs=out, size=32, records_per_shard=4, workers=2,
                           source_json="x.json", source_sha256="abc", progress=False)
    assert summary["videos_decoded"] == 3 and summary["decode_passes"] == 3  # one decode per video for both T
    assert not (out[8] / ".spool").exists()  # the frames' way from the workers is cleaned up
    assert summary["skipped"] == []

    for t, shard_dir in out.items():
        manifest = read_manifest(shard_dir)
        assert manifest["sampling"] == "uniform" and manifest["num_frames"] == t and manifest["size"] == 32
        assert [e["records"] for e in manifest["shards"]] == [[0, 1, 2, 3], [4, 5]]
        assert [e["num_frames"] for e in manifest["shards"]] == [4 * t, 2 * t]
        assert manifest["source_sha256"] == "abc" and manifest["summary"]["complete"]
        stored = read_all(shard_dir)
        for index, rec in stored.items():
            assert rec.num_frames == t
            # the frame stored for sample k is the frame ffmpeg decodes at frame_index[k]
            np.testing.assert_array_equal(rec.frames_uint8, references(records[index].video)[rec.frame_index])
            assert rec.num_source_frames == len(references(records[index].video))
        # whole video: start + floor((k + 0.5) * n / T) over all n frames
        k = np.arange(t)
        np.testing.assert_array_equal(stored[0].frame_index, np.floor((k + 0.5) * 795 / t).astype(int))
        np.testing.assert_array_equal(stored[1].frame_index, np.floor((k + 0.5) * 917 / t).astype(int))
        # window [20, 45.5] s at 10 fps = frames [200, 455)
        np.testing.assert_array_equal(stored[3].frame_index, 200 + np.floor((k + 0.5) * 255 / t).astype(int))
        assert stored[3].window_s == pytest.approx((20.0, 45.5))
        assert stored[0].window_s == pytest.approx((0.0, 79.5))
        fi = stored[5].frame_index
        # window [1, 2] s at 23.98 fps touches frames 23 (23.98 s*fps = 23.98) .. 47 (47.96)
        assert fi.min() >= 23 and fi.max() <= 47 and np.all(np.diff(fi) >= 0)
        if t == 32:
            assert len(np.unique(fi)) == 25  # every window frame, some twice
        # metadata
        assert stored[0].label == "Abuse" and stored[0].is_anomaly and not stored[1].is_anomaly
        assert stored[0].region_captions == ["a person walks", "the whole scene"]
        assert stored[0].hard_negatives == [["a person runs"], []]
        assert stored[0].fps == pytest.approx(10.0)

    # box tracks on the stored samples of record 0 (T = 32: stride 795/32 ~ 24.8 frames)
    rec = read_all(out[32])[0]
    fi = rec.frame_index
    inside = (fi >= 300) & (fi <= 500)
    held = ((fi < 300) & (fi >= 300 - math.ceil(795 / 32) / 2)) | ((fi > 500) & (fi <= 500 + math.ceil(795 / 32) / 2))
    np.testing.assert_array_equal(rec.box_mask[0], inside | held)
    for s in np.flatnonzero(inside):
        w = (fi[s] - 300) / 200
        np.testing.assert_allclose(rec.boxes[0, s], [(1 - w) * a + w * b for a, b in zip(BOX_A, BOX_B)], atol=1e-5)
    assert (rec.boxes[0, ~rec.box_mask[0]] == 0).all()
    assert rec.box_mask[1].all() and (rec.boxes[1] == np.array([0, 0, 1, 1], dtype=np.float32)).all()


def test_stride_shards_for_test_videos(video_root, references, tmp_path):
    test_list = tmp_path / "Anomaly_Test.txt"
    test_list.write_text("".join(f"{name}\n" for name in CLIP_NAMES))
    out = tmp_path / "test_stride16"
    summary = build_test_shards(test_list, video_root=video_root, out_dir=out, stride=16, size=32,
                                records_per_shard=2, workers=1, progress=False)
    assert summary["skipped"] == []
    manifest = read_manifest(out)
    assert manifest["sampling"] == "stride" and manifest["stride"] == 16
    assert [e["records"] for e in manifest["shards"]] == [[0, 1], [2]]
    stored = read_all(out)
    for index, name in enumerate(CLIP_NAMES):
        rec, reference = stored[index], references(name)
        n = len(reference)
        k = np.arange(math.ceil(n / 16))
        np.testing.assert_array_equal(rec.frame_index, np.minimum(k * 16 + 8, n - 1))
        np.testing.assert_array_equal(rec.frames_uint8, reference[rec.frame_index])
        assert rec.num_source_frames == n and rec.region_captions == [] and rec.global_caption == ""
    assert (stored[0].label, stored[0].is_anomaly) == ("Abuse", True)
    assert (stored[1].label, stored[1].is_anomaly) == ("Normal", False)

    # the command line's test mode writes the same shards
    result = CliRunner().invoke(cli, ["frames", "--test-list", str(test_list), "--video-root", str(video_root),
                                      "--out", str(tmp_path / "cli"), "--size", "32", "--records-per-shard", "2",
                                      "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "3 records in 2 shards (stride=16), 0 skipped" in result.output
    assert_same_shard_dirs(out, tmp_path / "cli" / "test_stride16")


def test_center_crop_frames_and_boxes(video_root, references, tmp_path):
    info = probe_video(video_root / CAR)  # 640x360: crop x 140..500
    from pipeline.decode import center_crop

    crop = center_crop(info)
    box = (0.25, 0.2, 0.5, 0.8)  # x 160..320 px -> (20..180) / 360 of the crop
    edge = (0.05, 0.1, 0.3, 0.5)  # x 32..192 px: cut at the crop's left edge -> 0 .. 52/360
    outside = (0.0, 0.1, 0.2, 0.5)  # x 0..128 px: entirely left of the crop
    regions = (Region("car", (Keyframe(0, box), Keyframe(916, box))), Region("edge", (Keyframe(0, edge), Keyframe(916, edge))),
               Region("outside", (Keyframe(0, outside), Keyframe(916, outside))))
    out = tmp_path / "t8"
    summary = build_shards([record(0, CAR, None, regions)], video_root=video_root, out_dirs={8: out}, size=32,
                           resize_mode="center-crop", workers=1, progress=False)
    rec = read_all(out)[0]
    np.testing.assert_array_equal(rec.frames_uint8, references(CAR, 32, crop)[rec.frame_index])
    np.testing.assert_allclose(rec.boxes[0], np.tile([20 / 360, 0.2, 180 / 360, 0.8], (8, 1)), atol=1e-5)
    np.testing.assert_allclose(rec.boxes[1], np.tile([0.0, 0.1, 52 / 360, 0.5], (8, 1)), atol=1e-5)
    # the region that lies outside the crop on every sample is dropped and listed
    assert rec.region_captions == ["car", "edge"]
    dropped = read_manifest(out)["dropped_regions"]
    assert [(d["record_index"], d["region"], d["caption"]) for d in dropped] == [(0, 2, "outside")]
    assert summary["per_output"]["T=8"]["dropped_regions"] == 1


# --- bad input --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_root(video_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    for name in CLIP_NAMES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(video_root / name)
    (root / "Abuse" / "Abuse902_x264.mp4").write_bytes(b"")
    (root / "Abuse" / "Abuse903_x264.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    # a cut-off file: the container lists one packet more than the decoder can deliver
    remuxed = root / "remuxed.mp4"
    subprocess.run([find_ffmpeg(), "-v", "error", "-nostdin", "-i", str(video_root / VTEST), "-c", "copy",
                    "-movflags", "+faststart", str(remuxed)], check=True)
    (root / "Abuse" / "Abuse904_x264.mp4").write_bytes(remuxed.read_bytes()[:1_000_000])
    remuxed.unlink()
    return root


def bad_records() -> list[AnnotationRecord]:
    return [
        record(0, VTEST),
        record(1, "Abuse/Abuse900_x264.mp4"),  # missing
        record(2, "Abuse/Abuse902_x264.mp4"),  # zero bytes
        record(3, "Abuse/Abuse903_x264.mp4"),  # random bytes
        record(4, FILM, (5.0, 30.0)),  # window ends 18.7 s past the end
        record(5, FILM, (2.0, 3.0)),
        record(6, "Abuse/Abuse904_x264.mp4"),  # truncated: usable, shorter
    ]


def test_bad_records_are_skipped_with_reasons(bad_root, tmp_path):
    out = tmp_path / "t8"
    summary = build_shards(bad_records(), video_root=bad_root, out_dirs={8: out}, size=24, records_per_shard=3,
                           workers=2, progress=False)
    kinds = {s["record_index"]: s["kind"] for s in summary["skipped"]}
    assert kinds == {1: "video-missing", 2: "video-empty", 3: "video-unreadable", 4: "window-past-end"}
    manifest = read_manifest(out)
    assert {s["record_index"]: s["kind"] for s in manifest["skipped"]} == kinds
    reasons = {s["record_index"]: s["reason"] for s in manifest["skipped"]}
    assert "Abuse900_x264.mp4: video file not found" in reasons[1]
    assert "ends 18.74 s past the end of the video (11.26 s" in reasons[4]
    # shard k = group k minus the skipped records; group 1 (records 3, 4, 5) keeps record 5 only
    assert [e["records"] for e in manifest["shards"]] == [[0], [5], [6]]
    assert manifest["summary"]["skipped_by_kind"] == {"video-empty": 1, "video-missing": 1, "video-unreadable": 1,
                                                      "window-past-end": 1}
    truncated = read_all(out)[6]
    reference = reference_frames(bad_root / "Abuse" / "Abuse904_x264.mp4", 24)
    assert truncated.num_source_frames == len(reference) == probe_video(bad_root / "Abuse" / "Abuse904_x264.mp4").num_frames - 1
    np.testing.assert_array_equal(truncated.frames_uint8, reference[truncated.frame_index])


def test_strict_fails_and_nothing_usable_fails(bad_root, tmp_path):
    with pytest.raises(FramesError, match=r"--strict: record 1 \(Abuse/Abuse900_x264.mp4\) skipped: .*not found"):
        build_shards(bad_records(), video_root=bad_root, out_dirs={8: tmp_path / "a"}, size=24, workers=1,
                     strict=True, progress=False)
    with pytest.raises(FramesError, match="no usable records: all 2 were skipped"):
        build_shards(bad_records()[1:3], video_root=bad_root, out_dirs={8: tmp_path / "b"}, size=24, workers=1,
                     progress=False)


def write_annotations(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records))
    return path


def raw_record(video: str, timestamps=None, boxes=()) -> dict:
    return {"video": video, "global_caption": "people walk by", "region_captions": ["a person"],
            "box_infos": [[{"frame": f, "bbox": list(b)} for f, b in boxes]], "timestamps": timestamps}


def test_cli_skips_bad_videos_and_strict_exits_non_zero(bad_root, shared_data, tmp_path):
    usable_and_bad = [raw_record(VTEST, boxes=[(100, BOX_A)]), raw_record("Abuse/Abuse902_x264.mp4"),
                      raw_record(FILM, [5.0, 30.0])]
    invalid_box = raw_record(FILM, boxes=[(10, (0.5, 0.1, 0.4, 0.2))])  # x1 > x2: dropped by validation
    options = ["--video-root", str(bad_root), "--size", "16", "-t", "4", "--workers", "1",
               "--test-split", str(shared_data / "ucf" / "Anomaly_Test.txt")]
    runner = CliRunner()

    annotations = write_annotations(tmp_path / "train.json", usable_and_bad + [invalid_box])
    result = runner.invoke(cli, ["frames", str(annotations), *options, "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    assert ("1 records in 1 shards (T=4), 3 skipped (1 validation-box-degenerate, 1 video-empty, 1 window-past-end)"
            in result.output)
    skipped = read_manifest(tmp_path / "ok" / "train_t4")["skipped"]
    assert [(s["record_index"], s["kind"]) for s in skipped] == [
        (1, "video-empty"), (2, "window-past-end"), (3, "validation-box-degenerate")]
    assert "box_infos[0][0].bbox" in skipped[2]["reason"]

    # --strict: the invalid record is a validation error and nothing is built ...
    result = runner.invoke(cli, ["frames", str(annotations), *options, "--out", str(tmp_path / "strict"), "--strict"])
    assert result.exit_code == 1
    assert "box-degenerate" in result.output and "nothing was built" in result.output
    assert not (tmp_path / "strict").exists()
    # ... and the first unusable video stops the run with a one-line message
    annotations = write_annotations(tmp_path / "train2.json", usable_and_bad)
    result = runner.invoke(cli, ["frames", str(annotations), *options, "--out", str(tmp_path / "strict"), "--strict"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: --strict: record 1 (Abuse/Abuse902_x264.mp4)")
    assert "Traceback" not in result.output


def test_cli_refuses_test_split_overlap(video_root, shared_data, tmp_path):
    annotations = write_annotations(tmp_path / "train.json", [raw_record("Abuse/Abuse028_x264.mp4")])
    result = CliRunner().invoke(cli, ["frames", str(annotations), "--video-root", str(video_root), "--out",
                                      str(tmp_path / "out"), "--test-split", str(shared_data / "ucf" / "Anomaly_Test.txt")])
    assert result.exit_code == 1
    assert "test-split-overlap" in result.output and "nothing was built" in result.output
    assert not (tmp_path / "out").exists()


# --- resume -----------------------------------------------------------------------------------


def resume_annotations(tmp_path: Path) -> Path:
    # records of one video share a decode; the first shard appears after the first video
    return write_annotations(tmp_path / "train.json", [
        raw_record(FILM, [0.0, 5.0], boxes=[(30, BOX_A), (90, BOX_B)]),
        raw_record(VTEST, [10.0, 40.0]),
        raw_record(CAR, [1.0, 12.0], boxes=[(60, BOX_B)]),
        raw_record(FILM, [5.0, 11.0]),
        raw_record(VTEST, None, boxes=[(700, BOX_A)]),
        raw_record(CAR, [12.0, 30.0]),
    ])


def frames_command(annotations: Path, video_root: Path, out: Path, shared_data: Path, workers: int) -> list[str]:
    return [FGCLIP, "frames", str(annotations), "--video-root", str(video_root), "--out", str(out), "-t", "8", "-t", "16",
            "--size", "32", "--records-per-shard", "1", "--workers", str(workers),
            "--test-split", str(shared_data / "ucf" / "Anomaly_Test.txt")]


def processes_using(path: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(path) in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


def test_resume_after_sigkill_gives_identical_shards(video_root, shared_data, tmp_path):
    annotations = resume_annotations(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference_out, resumed_out = tmp_path / "uninterrupted", tmp_path / "resumed"
    subprocess.run(frames_command(annotations, video_root, reference_out, shared_data, 1), check=True, env=env,
                   capture_output=True)

    # killed (SIGKILL: no cleanup at all) once a first shard is finished, with worker processes running
    process = subprocess.Popen(frames_command(annotations, video_root, resumed_out, shared_data, 2), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def shards_listed() -> int:
        try:
            return len(json.loads((resumed_out / "train_t8" / "manifest.json").read_text())["shards"])
        except (OSError, ValueError):
            return 0

    deadline = time.monotonic() + 60
    while shards_listed() == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    manifest = read_manifest(resumed_out / "train_t8")
    assert not manifest["summary"]["complete"]
    assert len(list((resumed_out / "train_t16").glob("*.h5"))) < 6  # really cut off mid-way
    # its workers notice and exit (they poll every 0.5 s; ffmpeg ends when its pipe closes)
    deadline = time.monotonic() + 10
    while processes_using(resumed_out) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_using(resumed_out) == []

    # stale temp and spool files from the kill must not matter
    (resumed_out / "train_t16" / "shard-00005.h5.tmp").write_bytes(b"half a shard")
    (resumed_out / "train_t8" / ".spool" / "run-1").mkdir(parents=True, exist_ok=True)
    (resumed_out / "train_t8" / ".spool" / "run-1" / "video-000000.u8").write_bytes(b"old frames")
    result = subprocess.run(frames_command(annotations, video_root, resumed_out, shared_data, 2), env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "kept from an earlier run" in result.stdout and " 0 kept" not in result.stdout
    for t in (8, 16):
        assert_same_shard_dirs(reference_out / f"train_t{t}", resumed_out / f"train_t{t}")
        assert not list((resumed_out / f"train_t{t}").glob("*.tmp"))
    assert not (resumed_out / "train_t8" / ".spool").exists()

    # a third run finds everything complete and decodes nothing
    result = subprocess.run(frames_command(annotations, video_root, resumed_out, shared_data, 2), env=env,
                            capture_output=True, text=True, check=True)
    assert "decoded 0 videos" in result.stdout


def test_output_dir_with_other_settings_is_refused(video_root, tmp_path):
    out = {8: tmp_path / "t8"}
    build_shards([record(0, FILM)], video_root=video_root, out_dirs=out, size=16, workers=1, progress=False)
    with pytest.raises(FramesError, match="size: 16 there, 24 now"):
        build_shards([record(0, FILM)], video_root=video_root, out_dirs=out, size=24, workers=1, progress=False)


# --- the synthetic dataset: boxes enclose the drawn actors --------------------------------------


@pytest.fixture(scope="module")
def synth_data_root(tmp_path_factory) -> Path:
    """A data root holding the tiny synthetic dataset where the embedded default's would be."""
    from pipeline.synth import generate_dataset

    data_root = tmp_path_factory.mktemp("data")
    generate_dataset(data_root / "synth", size="tiny")
    return data_root


@pytest.mark.parametrize("resize_mode, size", [("squash", 112), ("center-crop", 64)])
def test_stored_boxes_enclose_the_actors_pixels(synth_data_root, tmp_path, resize_mode, size):
    from pipeline.annotations import validate_annotations

    synth = synth_data_root / "synth"
    report = validate_annotations(synth / "train.json", test_split=synth / "Anomaly_Test.txt")
    assert not report.errors()
    out = tmp_path / "t32"
    build_shards(report.records, video_root=synth, out_dirs={32: out}, size=size, resize_mode=resize_mode,
                 workers=2, progress=False)
    actors = {entry["record_index"]: entry for entry in json.loads((synth / "actors.json").read_text())["records"]}
    tolerance_px = 1.5  # resize and chroma blur
    checked = found = 0
    for rec in read_all(out).values():
        colours = {region["caption"]: np.array(region["rgb"]) for region in actors[rec.record_index]["regions"]}
        for r, caption in enumerate(rec.region_captions):
            for s in np.flatnonzero(rec.box_mask[r]):
                checked += 1
                near = np.abs(rec.frames_uint8[s].astype(int) - colours[caption]).max(axis=-1) < 40
                ys, xs = np.nonzero(near)
                if len(xs) < 2:
                    continue  # hidden behind another actor, or cropped away
                found += 1
                x1, y1, x2, y2 = rec.boxes[r, s] * size
                centres_x, centres_y = xs + 0.5, ys + 0.5
                assert centres_x.min() >= x1 - tolerance_px and centres_x.max() <= x2 + tolerance_px, (
                    f"record {rec.record_index} {caption!r} frame {rec.frame_index[s]}: x {xs.min()}..{xs.max()} "
                    f"outside box {x1:.1f}..{x2:.1f}")
                assert centres_y.min() >= y1 - tolerance_px and centres_y.max() <= y2 + tolerance_px, (
                    f"record {rec.record_index} {caption!r} frame {rec.frame_index[s]}: y {ys.min()}..{ys.max()} "
                    f"outside box {y1:.1f}..{y2:.1f}")
    assert checked > 100 and found > 0.8 * checked  # the check saw the actors, not empty frames


def test_no_argument_run_builds_the_embedded_default_and_then_skips_it(synth_data_root):
    env = {**os.environ, "FGCLIP_DATA_ROOT": str(synth_data_root)}
    first = subprocess.run([FGCLIP, "frames", "--workers", "2"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    shard_root = synth_data_root / "shards"
    for name, sampling in (("train_t64", "uniform"), ("train_t256", "uniform"), ("test_stride16", "stride")):
        manifest = read_manifest(shard_root / name)
        assert manifest["sampling"] == sampling and manifest["size"] == 112 and manifest["summary"]["complete"]
        assert manifest["skipped"] == [] and manifest["summary"]["records"] > 0
    test = read_all(shard_root / "test_stride16")
    assert {rec.label for rec in test.values()} == {"Explosion", "Normal"}
    again = subprocess.run([FGCLIP, "frames"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("decoded 0 videos") == 2  # train and test: nothing left to do

    # shards of an earlier generated dataset (another train.json) are rebuilt, not refused
    manifest_file = shard_root / "train_t64" / "manifest.json"
    old_sha = read_manifest(shard_root / "train_t64")["source_sha256"]
    manifest_file.write_text(manifest_file.read_text().replace(old_sha, "0" * 64))
    rebuilt = subprocess.run([FGCLIP, "frames"], env=env, capture_output=True, text=True)
    assert rebuilt.returncode == 0, rebuilt.stderr
    # train: T=64 rebuilt, T=256 kept; test: kept
    assert "1 shards written, 1 kept from an earlier run" in rebuilt.stdout
    assert "0 shards written, 1 kept from an earlier run" in rebuilt.stdout
    assert read_manifest(shard_root / "train_t64")["summary"]["complete"]


def test_fixed_video_is_picked_up_after_deleting_its_shard(video_root, tmp_path):
    root = tmp_path / "videos"
    for name in (FILM, VTEST):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(video_root / name)
    records = [record(0, FILM), record(1, CAR), record(2, VTEST), record(3, FILM, (1.0, 3.0))]
    out = tmp_path / "t4"
    build_shards(records, video_root=root, out_dirs={4: out}, size=16, records_per_shard=2, workers=1, progress=False)
    manifest = read_manifest(out)
    assert [e["records"] for e in manifest["shards"]] == [[0], [2, 3]]
    (skip,) = manifest["skipped"]
    assert (skip["record_index"], skip["kind"], skip["shard"]) == (1, "video-missing", "shard-00000.h5")

    (root / CAR).parent.mkdir(parents=True, exist_ok=True)
    (root / CAR).symlink_to(video_root / CAR)  # the missing video turns up
    kept_before = (out / "shard-00001.h5").stat().st_mtime_ns
    (out / skip["shard"]).unlink()
    summary = build_shards(records, video_root=root, out_dirs={4: out}, size=16, records_per_shard=2, workers=1,
                           progress=False)
    assert summary["shards_written"] == 1 and summary["shards_kept"] == 1 and summary["skipped"] == []
    assert [e["records"] for e in read_manifest(out)["shards"]] == [[0, 1], [2, 3]]
    assert (out / "shard-00001.h5").stat().st_mtime_ns == kept_before
