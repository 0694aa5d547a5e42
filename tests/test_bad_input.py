"""Bad input is rejected clearly (docs/RELIABILITY.md lists each case and its test):

* annotation JSON: arbitrary records (hypothesis) never make `validate` raise, and every
  problem names its record and field; the command line exits 1 with the message and `frames`
  writes nothing;
* videos: empty, random bytes, audio only, one frame, variable frame rate, rotation metadata,
  1x1, 4096x2160, ten minutes long, a non-ASCII path: processed correctly or skipped with the reason;
* model directories: missing or truncated files, not CLIP, a tokenizer of another model,
  extras of another width: one-line errors from `train` and `eval`;
* shards of an older schema: the message says which command rebuilds them, from the loader,
  the trainer and evaluation.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from ffmpeg_reference import reference_frames
from fgclip.cli import main as cli
from pipeline.annotations import MAX_FRAME, AnnotationRecord, format_report, validate_annotations
from pipeline.decode import find_ffmpeg
from pipeline.frames import build_shards
from pipeline.shards import ShardReader, list_shards, read_manifest
from test_faults import one_line_error
from train_data import write_square_shards

# --- annotation JSON --------------------------------------------------------------------------------

# Records whose problem is their own as a whole, not one field's.
WHOLE_RECORD_KINDS = ("not-an-object", "duplicate-record")

_texts = st.one_of(st.text(max_size=12), st.sampled_from(
    ["", "  ", "a\x00b", "\ud800x", "Abuse/Abuse001_x264.mp4", "人が走る", "Normal_Videos_003_x264.mp4", "\n"]))
_numbers = st.one_of(st.integers(min_value=-10**30, max_value=10**30), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([10**400, -0.0, 1e308, 0.5, 0.99, 1.0, 3, 120]))
_json = st.recursive(st.one_of(st.none(), st.booleans(), _numbers, _texts),
                     lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_texts, inner, max_size=3)),
                     max_leaves=10)
_keyframe = st.one_of(st.fixed_dictionaries({"frame": st.one_of(_numbers, _json),
                                             "bbox": st.one_of(st.lists(_numbers, min_size=4, max_size=4), _json)}), _json)
_record = st.fixed_dictionaries({}, optional={
    "video": st.one_of(_texts, _json),
    "global_caption": st.one_of(_texts, _json),
    "region_captions": st.one_of(st.lists(st.one_of(_texts, _json), max_size=3), _json),
    "box_infos": st.one_of(st.lists(st.one_of(st.lists(_keyframe, max_size=3), _json), max_size=3), _json),
    "timestamps": st.one_of(st.none(), st.lists(_numbers, min_size=2, max_size=2), _json),
    "hard_negatives": st.one_of(st.lists(st.lists(_texts, max_size=2), max_size=3), _json),
    "comment": _json,
})
_files = st.one_of(st.lists(st.one_of(_record, _json), max_size=5), _json)


@pytest.fixture(scope="module")
def json_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("json")
    (folder / "Anomaly_Test.txt").write_text("Abuse/Abuse028_x264.mp4\n")
    return folder


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=_files)
def test_validate_never_raises_and_names_every_problem(json_dir, data):
    path = json_dir / "train.json"
    path.write_text(json.dumps(data, allow_nan=True))  # NaN and Infinity as Python writes them
    report = validate_annotations(path, test_split=json_dir / "Anomaly_Test.txt")
    printable = format_report(report) + json.dumps(report.to_dict(), ensure_ascii=False)
    printable.encode("utf-8")  # the report prints and saves, whatever the input held
    for problem in report.problems:
        assert problem.message and "\n" not in problem.message, problem
        if problem.record_index is not None:  # a record's problem names the record and its field
            assert 0 <= problem.record_index < len(data), problem
            assert problem.field or problem.kind in WHOLE_RECORD_KINDS or problem.kind == "unknown-field", problem
    if isinstance(data, list) and data:  # each record is usable or dropped with a reason
        assert sorted([r.index for r in report.records] + report.dropped) == list(range(len(data)))
        assert set(report.dropped) <= {p.record_index for p in report.problems}
    for record in report.records:  # what is kept is clean
        for text in (record.video, record.global_caption, *(r.caption for r in record.regions)):
            assert text.strip() and "\x00" not in text
            text.encode("utf-8")
        for region in record.regions:
            frames = [kf.frame for kf in region.keyframes]
            assert frames == sorted(set(frames)) and all(0 <= f <= MAX_FRAME for f in frames)
            for kf in region.keyframes:
                x1, y1, x2, y2 = kf.box
                assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        if record.window_s is not None:
            assert all(math.isfinite(v) for v in record.window_s) and 0 <= record.window_s[0] < record.window_s[1]


GOOD = {"video": "Abuse/Abuse901_x264.mp4", "global_caption": "A man pushes another man.",
        "region_captions": ["a man in white"], "box_infos": [[{"frame": 10, "bbox": [0.1, 0.2, 0.5, 0.9]}]],
        "timestamps": None}


def _with(**changes) -> dict:
    return {**GOOD, **changes}


def _keyframe(frame=10, bbox=(0.1, 0.2, 0.5, 0.9)) -> dict:
    return _with(box_infos=[[{"frame": frame, "bbox": list(bbox)}]])


# (case, file text, text the error names: its kind or field)
FILE_ERRORS = [
    ("not JSON", '[{"video": "a.mp4", ', "not valid JSON"),
    ("wrong top-level type", json.dumps({"records": [GOOD]}), "top level must be a list"),
    ("nested too deeply", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
]
# (case, the bad record (record 1, after a good one), the field named, text naming what is wrong)
RECORD_ERRORS = [
    ("NaN coordinate", _keyframe(bbox=(0.1, float("nan"), 0.5, 0.9)), "box_infos[0][0].bbox", "NaN"),
    ("infinite timestamp", _with(timestamps=[0.0, float("inf")]), "timestamps", "not finite"),
    ("negative frame", _keyframe(frame=-1), "box_infos[0][0].frame", "-1"),
    ("huge frame", _keyframe(frame=10**15), "box_infos[0][0].frame", "no video has that many frames"),
    ("huge coordinate", _keyframe(bbox=(0.1, 0.2, 10**400, 0.9)), "box_infos[0][0].bbox", "infinite"),
    ("boolean frame", _keyframe(frame=True), "box_infos[0][0].frame", "got boolean true"),
    ("empty caption", _with(global_caption=""), "global_caption", "empty"),
    ("empty video", _with(video=" "), "video", "non-empty path"),
    ("NUL in the path", _with(video="Abuse/Ab\x00use.mp4"), "video", "NUL character"),
    ("unpaired surrogate", _with(region_captions=["a man \ud800"]), "region_captions[0]", "unpaired surrogate"),
    ("wrong field type", _with(box_infos={"0": []}), "box_infos", "list of keyframe lists"),
]


@pytest.mark.parametrize("case, text, named", FILE_ERRORS, ids=[c[0] for c in FILE_ERRORS])
def test_unreadable_annotation_file_is_one_line(case, text, named, tmp_path, shared_data):
    path = tmp_path / "train.json"
    path.write_text(text)
    for command in (["validate", str(path)], ["frames", str(path), "--out", str(tmp_path / "out")]):
        result = CliRunner().invoke(cli, [*command, "--test-split", str(shared_data / "ucf" / "Anomaly_Test.txt")])
        assert result.exit_code == 1 and named in one_line_error(result.output) and str(path) in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # `frames` wrote nothing


@pytest.mark.parametrize("case, record, field, what", RECORD_ERRORS, ids=[c[0] for c in RECORD_ERRORS])
def test_bad_record_names_record_and_field_and_frames_writes_nothing(case, record, field, what, tmp_path, shared_data):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([GOOD, record]))
    split = ["--test-split", str(shared_data / "ucf" / "Anomaly_Test.txt")]
    checked = CliRunner().invoke(cli, ["validate", str(path), *split])
    assert checked.exit_code == 1 and isinstance(checked.exception, SystemExit), checked.output
    assert "Traceback" not in checked.output
    lines = [line for line in checked.output.splitlines() if line.strip().startswith("record 1 ")]
    assert any(field in line and what in line for line in lines), checked.output
    built = CliRunner().invoke(cli, ["frames", str(path), *split, "--strict", "--out", str(tmp_path / "out")])
    assert built.exit_code == 1 and "nothing was built" in one_line_error(built.output)
    assert not (tmp_path / "out").exists()


def test_duplicates_and_unicode_are_named_or_kept(tmp_path, shared_data):
    unicode_video = "Abuse/Abuse902_カメラ été.mp4"
    path = tmp_path / "train.json"
    path.write_text(json.dumps([GOOD, GOOD, _with(video=unicode_video, global_caption="Deux hommes se battent.")]))
    report = validate_annotations(path, test_split=shared_data / "ucf" / "Anomaly_Test.txt")
    (duplicate,) = [p for p in report.problems if p.kind == "duplicate-record"]
    assert duplicate.record_index == 1 and "identical to record 0" in duplicate.message
    assert [r.video for r in report.records] == [GOOD["video"], unicode_video] and not report.errors()


# --- videos ---------------------------------------------------------------------------------------


def _ffmpeg(out: Path, *args: str) -> Path:
    import subprocess

    subprocess.run([find_ffmpeg(), "-v", "error", "-nostdin", "-y", *args, str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def odd_videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("odd_videos")
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    (root / "zero.mp4").write_bytes(b"")
    (root / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    _ffmpeg(root / "audio.mp4", "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac")
    _ffmpeg(root / "single.mp4", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "1", *x264)
    # variable frame rate: 25 frames at 12.5 fps, then 25 at 25 fps
    _ffmpeg(root / "vfr.mp4", "-f", "lavfi", "-t", "2", "-i", "testsrc=size=64x48:rate=25",
            "-vf", "setpts='if(lt(N,25),2*N,N+25)/25/TB'", "-fps_mode", "vfr", *x264)
    plain = _ffmpeg(root / "plain.mp4", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-t", "1", *x264)
    _ffmpeg(root / "rotated.mp4", "-display_rotation", "90", "-i", str(plain), "-c", "copy")
    _ffmpeg(root / "one_pixel.mkv", "-f", "lavfi", "-i", "testsrc=size=1x1:rate=25", "-t", "1", "-c:v", "ffv1",
            "-pix_fmt", "yuv444p")
    _ffmpeg(root / "4k.mp4", "-f", "lavfi", "-i", "testsrc=size=4096x2160:rate=25", "-frames:v", "3", *x264)
    _ffmpeg(root / "ten_minutes.mp4", "-f", "lavfi", "-i", "testsrc=size=32x24:rate=10", "-t", "600", "-g", "600", *x264)
    shutil.copy(plain, root / "caméra été 東京.mp4")
    return root


# name -> how it must end: a skip kind, or the number of source frames it is read with
VIDEO_OUTCOMES = {
    "zero.mp4": "video-empty",
    "noise.mp4": "video-unreadable",
    "audio.mp4": "no-video-stream",
    "single.mp4": 1,
    "vfr.mp4": 50,
    "rotated.mp4": 25,
    "one_pixel.mkv": 25,
    "4k.mp4": 3,
    "ten_minutes.mp4": 6000,
    "caméra été 東京.mp4": 25,
}


def test_odd_videos_are_processed_or_skipped_with_the_reason(odd_videos, tmp_path):
    names = list(VIDEO_OUTCOMES)
    records = [AnnotationRecord(i, name, f"video {i}", (), None, "Normal", False) for i, name in enumerate(names)]
    summary = build_shards(records, video_root=odd_videos, out_dirs={8: tmp_path / "t8"}, size=16, records_per_shard=4,
                           workers=2, progress=False)
    skipped = {s["video"]: s for s in summary["skipped"]}
    stored = {}
    for path in list_shards(tmp_path / "t8"):
        with ShardReader(path) as reader:
            for i in range(reader.num_records):
                record = reader.read_record(i)
                stored[record.video] = record
    for name, outcome in VIDEO_OUTCOMES.items():
        if isinstance(outcome, str):
            assert skipped[name]["kind"] == outcome and name in skipped[name]["reason"], skipped.get(name)
            continue
        record = stored[name]
        assert record.num_source_frames == outcome, name
        assert record.frame_index.min() >= 0 and record.frame_index.max() < outcome
        # the stored frames are the frames ffmpeg shows (rotation applied), in decode order
        np.testing.assert_array_equal(record.frames_uint8, reference_frames(odd_videos / name, 16)[record.frame_index],
                                      err_msg=name)
    assert stored["single.mp4"].frame_index.tolist() == [0] * 8
    assert read_manifest(tmp_path / "t8")["summary"]["skipped_by_kind"] == {
        "no-video-stream": 1, "video-empty": 1, "video-unreadable": 1}


# --- model directories ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_dir(model_dir, tmp_path_factory) -> Path:
    from fgclip.models.clip_video import FGCLIPVideo

    path = tmp_path_factory.mktemp("checkpoint") / "model"
    FGCLIPVideo.from_pretrained(model_dir).save_pretrained(path)
    return path


def _no_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _truncated_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4000])


def _not_clip(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))


def _no_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink(missing_ok=True)


def _larger_vocabulary(folder: Path) -> None:
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab.update({f"extra{i}": len(vocab) + i for i in range(400)})
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))


def _other_end_token(folder: Path) -> None:
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": config["bos_token"]}))


def _wider_extras(folder: Path) -> None:
    extras = load_file(str(folder / "fgclip_video.safetensors"))
    save_file({k: torch.cat([v, v], dim=-1) if v.ndim else v for k, v in extras.items()},
              str(folder / "fgclip_video.safetensors"))


# (case, change to a copy of the checkpoint, text the error names)
BAD_MODELS = [
    ("missing weights", _no_weights, "no file named model.safetensors"),
    ("truncated weights", _truncated_weights, "could not read the weights"),
    ("not a CLIP model", _not_clip, "model_type 'bert' is not a family this tool trains"),
    ("no tokenizer", _no_tokenizer, "no tokenizer files"),
    ("tokenizer of another model", _larger_vocabulary, "token table only"),
    ("tokenizer with another end token", _other_end_token, "the tokenizer's end token has id 0"),
    ("extras of another width", _wider_extras, "fgclip_video.safetensors: does not fit the CLIP weights"),
]


@pytest.fixture(scope="module")
def square_shards(tmp_path_factory):
    return write_square_shards(tmp_path_factory.mktemp("square_shards"), num_records=4, num_frames=4)


@pytest.mark.parametrize("case, change, named", BAD_MODELS, ids=[c[0] for c in BAD_MODELS])
def test_bad_model_directory_is_one_clear_error(case, change, named, checkpoint_dir, square_shards, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(checkpoint_dir, model)
    change(model)
    result = CliRunner().invoke(cli, ["train", "--preset", "demo", "--shards", str(square_shards), "--model", str(model),
                                      "--output-dir", str(tmp_path / "run"), "--num-frames", "4", "--batch-size", "2",
                                      "--workers", "0", "--no-progress"])
    assert result.exit_code == 1
    message = one_line_error(result.output)
    assert named in message and str(model) in message, message
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_evaluation_refuses_a_tokenizer_of_another_model(checkpoint_dir, tmp_path):
    from test_evaluate import ANNOTATIONS, write_test_shards

    model = tmp_path / "model"
    shutil.copytree(checkpoint_dir, model)
    _larger_vocabulary(model)
    (tmp_path / "test_shards").mkdir()
    write_test_shards(tmp_path / "test_shards")
    (tmp_path / "gt.txt").write_text(ANNOTATIONS)
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(model), "--no-baseline", "--test-shards",
                                      str(tmp_path / "test_shards"), "--annotations", str(tmp_path / "gt.txt"),
                                      "--out", str(tmp_path / "report"), "--quiet", "--device", "cpu"])
    assert result.exit_code == 1 and "token table only" in one_line_error(result.output)


# --- shards of an older schema ------------------------------------------------------------------------


def _make_old(shard_dir: Path, *, manifest: bool) -> None:
    """What a shard directory of schema version 0 looks like to this version."""
    if manifest:
        manifest_file = shard_dir / "manifest.json"
        manifest_file.write_text(json.dumps({**json.loads(manifest_file.read_text()), "schema_version": 0}))
    else:
        with h5py.File(list_shards(shard_dir)[0], "r+") as f:
            f.attrs["schema_version"] = 0


@pytest.mark.parametrize("where", ["manifest", "shard"])
def test_old_schema_shards_name_the_command_that_rebuilds_them(where, model_dir, tmp_path):
    from test_evaluate import ANNOTATIONS, write_test_shards

    train = write_square_shards(tmp_path / "train", num_records=4, num_frames=4)
    _make_old(train, manifest=where == "manifest")
    result = CliRunner().invoke(cli, ["train", "--preset", "demo", "--shards", str(train), "--model", str(model_dir),
                                      "--output-dir", str(tmp_path / "run"), "--num-frames", "4", "--batch-size", "2",
                                      "--workers", "0", "--skip-damaged", "--no-progress"])
    assert result.exit_code == 1  # not skipped as damaged: old shards are rebuilt, not trained around
    message = one_line_error(result.output)
    assert "schema version 0" in message and "fgclip-vad frames" in message

    (tmp_path / "test").mkdir()
    write_test_shards(tmp_path / "test")
    _make_old(tmp_path / "test", manifest=where == "manifest")
    (tmp_path / "gt.txt").write_text(ANNOTATIONS)
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(model_dir), "--no-baseline", "--test-shards",
                                      str(tmp_path / "test"), "--annotations", str(tmp_path / "gt.txt"),
                                      "--out", str(tmp_path / "report"), "--quiet", "--device", "cpu"])
    assert result.exit_code == 1
    message = one_line_error(result.output)
    assert "schema version 0" in message and "fgclip-vad frames" in message
