"""ffmpeg probing and selective decoding, checked against independent ffmpeg decodes.

The references (`ffmpeg_reference`) run ffmpeg directly, not through `pipeline.decode`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from ffmpeg_reference import reference_frames, single_frame
from pipeline.decode import (
    VideoError,
    center_crop,
    crop_for,
    decode_selected,
    find_ffmpeg,
    probe_video,
    probe_videos,
    select_expression,
)

REAL_CLIPS = {  # name: (width, height, fps)
    "megamind_xvid.avi": (720, 528, 23.98),
    "vtest_campus_cctv.mp4": (480, 360, 10.0),
    "car_traffic.mp4": (640, 360, 30.19),
}


def make_video(path: Path, *args: str) -> Path:
    subprocess.run([find_ffmpeg(), "-v", "error", "-nostdin", "-y", *args, str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def made_videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    plain = make_video(folder / "plain.mp4", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=25", "-t", "1.6",
                       "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "7")
    rotated = make_video(folder / "rotated.mp4", "-display_rotation", "90", "-i", str(plain), "-c", "copy")
    odd = make_video(folder / "odd.mp4", "-f", "lavfi", "-i", "testsrc=size=81x47:rate=25", "-t", "0.8",
                     "-c:v", "libx264", "-pix_fmt", "yuv444p")
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    noise = folder / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    return {"plain": plain, "rotated": rotated, "odd": odd, "empty": empty, "noise": noise}


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_real_clip_probe_and_selected_frames_match_reference(shared_data, name):
    path = shared_data / "videos" / name
    info = probe_video(path)
    width, height, fps = REAL_CLIPS[name]
    assert (info.width, info.height) == (width, height)
    assert info.fps == pytest.approx(fps, abs=0.01)

    reference = reference_frames(path, 32)
    assert info.num_frames == len(reference)  # packet count == frames the decoder delivers

    rng = np.random.default_rng(len(name))
    wanted = np.unique(np.concatenate([[0, info.num_frames - 1], rng.choice(info.num_frames, 40, replace=False)]))
    decoded = decode_selected(path, wanted, size=32)
    assert decoded.decoded_count == info.num_frames
    np.testing.assert_array_equal(decoded.frame_numbers, wanted)
    np.testing.assert_array_equal(decoded.frames_uint8, reference[wanted])
    for k in (int(wanted[1]), int(wanted[-2])):  # spot checks by a one-frame select
        np.testing.assert_array_equal(decoded.frames_uint8[np.searchsorted(wanted, k)], single_frame(path, k, 32))


def test_center_crop_matches_reference(shared_data):
    path = shared_data / "videos" / "car_traffic.mp4"
    info = probe_video(path)
    crop = crop_for(info, "center-crop")
    assert (crop.x, crop.y, crop.width, crop.height) == (140, 0, 360, 360)
    assert crop.normalised == pytest.approx((140 / 640, 0.0, 360 / 640, 1.0))
    assert crop_for(info, "squash") is None
    wanted = np.array([3, 250, 251, 900])
    decoded = decode_selected(path, wanted, size=24, crop=crop)
    np.testing.assert_array_equal(decoded.frames_uint8, reference_frames(path, 24, crop)[wanted])


def test_frames_past_the_end_come_back_missing(shared_data):
    path = shared_data / "videos" / "megamind_xvid.avi"
    decoded = decode_selected(path, [5, 269, 270, 400], size=16)
    assert decoded.frame_numbers.tolist() == [5, 269]
    assert decoded.frames_uint8.shape == (2, 16, 16, 3)
    assert decoded.decoded_count == 270


def test_rotation_metadata_swaps_the_displayed_size(made_videos):
    plain, rotated = probe_video(made_videos["plain"]), probe_video(made_videos["rotated"])
    assert (plain.width, plain.height) == (96, 64)
    assert (rotated.width, rotated.height) == (64, 96) and abs(rotated.rotation_deg) == 90
    assert rotated.num_frames == plain.num_frames == 40
    crop = center_crop(rotated)  # portrait: the crop cuts top and bottom
    assert (crop.x, crop.y, crop.width, crop.height) == (0, 16, 64, 64)
    # the stored frames are the rotated picture, as ffmpeg (and players) show it
    wanted = np.array([0, 17, 39])
    decoded = decode_selected(made_videos["rotated"], wanted, size=20, crop=crop)
    np.testing.assert_array_equal(decoded.frames_uint8, reference_frames(made_videos["rotated"], 20, crop)[wanted])
    upright = decode_selected(made_videos["plain"], wanted, size=20)
    assert not np.array_equal(decoded.frames_uint8, upright.frames_uint8)


def test_odd_frame_size(made_videos):
    info = probe_video(made_videos["odd"])
    assert (info.width, info.height, info.num_frames) == (81, 47, 20)
    crop = center_crop(info)
    assert (crop.x, crop.width, crop.height) == (17, 47, 47)
    decoded = decode_selected(made_videos["odd"], [0, 1, 19], size=15, crop=crop)
    np.testing.assert_array_equal(decoded.frames_uint8, reference_frames(made_videos["odd"], 15, crop)[[0, 1, 19]])


def test_irregular_frame_sets_on_a_generated_video(made_videos):
    path = made_videos["plain"]
    reference = reference_frames(path, 16)
    for wanted in ([0], [39], [1, 2, 3, 4], [0, 3, 6, 9, 10, 20, 21, 22, 39], list(range(0, 40, 5)), list(range(40))):
        decoded = decode_selected(path, wanted, size=16)
        np.testing.assert_array_equal(decoded.frames_uint8, reference[wanted])


def test_select_expression_shape():
    assert select_expression([7]) == "eq(n,7)"
    assert select_expression([3, 4, 5]) == "between(n,3,5)"
    assert select_expression([8, 24, 40, 56]) == "between(n,8,56)*not(mod(n-8,16))"
    nested = select_expression([1, 5, 6, 7, 20])
    assert nested.startswith("if(lt(n,") and nested.count("(") == nested.count(")")
    with pytest.raises(ValueError):
        select_expression([3, 3])
    with pytest.raises(ValueError):
        select_expression([])


@pytest.mark.parametrize("name, message", [("missing", "not found"), ("empty", "empty"), ("noise", "cannot read")])
def test_bad_files_raise_video_error_naming_the_file(made_videos, tmp_path, name, message):
    path = made_videos.get(name, tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match=message) as excinfo:
        probe_video(path)
    assert str(path) in str(excinfo.value)


def test_batch_probe_matches_single_probes(shared_data, made_videos, tmp_path):
    good = [shared_data / "videos" / name for name in sorted(REAL_CLIPS)] + [made_videos["rotated"], made_videos["odd"]]
    # one ffmpeg run for readable files
    assert probe_videos(good) == [probe_video(path) for path in good]
    # a file that breaks the run: every file is probed alone, each bad one gets its own error
    mixed = [good[0], tmp_path / "missing.mp4", made_videos["noise"], good[3], made_videos["empty"]]
    results = probe_videos(mixed)
    assert results[0] == probe_video(good[0]) and results[3] == probe_video(good[3])
    assert [type(r).__name__ for r in results] == ["VideoInfo", "VideoError", "VideoError", "VideoInfo", "VideoError"]
    assert "not found" in str(results[1]) and "cannot read" in str(results[2]) and "empty" in str(results[4])
