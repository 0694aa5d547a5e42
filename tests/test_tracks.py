"""Sampling indices and box tracks (pure numpy; no video needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.annotations import Keyframe, Region
from pipeline.sampling import (
    SamplingSpec,
    WindowError,
    stride_indices,
    uniform_half_stride,
    uniform_indices,
    window_frames,
)
from pipeline.tracks import TrackError, box_track, crop_boxes, region_tracks


# --- sampling ---------------------------------------------------------------------------------


def test_uniform_indices_formula_and_repeats():
    # start + floor((k + 0.5) * L / T)
    assert uniform_indices(100, 110, 5).tolist() == [101, 103, 105, 107, 109]
    assert uniform_indices(0, 1000, 4).tolist() == [125, 375, 625, 875]
    # fewer source frames than T: frames repeat, all in the window, in order
    few = uniform_indices(10, 13, 8)
    assert few.tolist() == [10, 10, 10, 11, 11, 12, 12, 12]


def test_stride_indices_cover_every_snippet_and_clamp_the_last():
    # n = 40, stride 16: snippets [0,16) [16,32) [32,40) -> centres 8, 24, and 39 (clamped from 40)
    assert stride_indices(40, 16).tolist() == [8, 24, 39]
    assert stride_indices(48, 16).tolist() == [8, 24, 40]
    assert stride_indices(5, 16).tolist() == [4]
    assert len(stride_indices(1_000_001, 16)) == math.ceil(1_000_001 / 16)


def test_window_frames():
    assert window_frames(None, 30.0, 900) == (0, 900)
    assert window_frames((2.0, 4.0), 30.0, 900) == (60, 120)
    assert window_frames((2.01, 3.99), 30.0, 900) == (60, 120)  # frames the window touches
    assert window_frames((25.0, 30.3), 30.0, 900) == (750, 900)  # ends 0.3 s late: clipped
    with pytest.raises(WindowError, match="past the end"):
        window_frames((25.0, 32.0), 30.0, 900)
    with pytest.raises(WindowError, match="starts after the video ends"):
        window_frames((30.0, 30.2), 30.0, 900)


def test_sampling_spec_validates():
    with pytest.raises(ValueError):
        SamplingSpec.uniform(0)
    with pytest.raises(ValueError):
        SamplingSpec("random", 4)
    frames, half = SamplingSpec.strided(16).sample(0, 100, 100)
    assert half == 8.0 and frames[0] == 8


# --- tracks -----------------------------------------------------------------------------------

A = (0.1, 0.2, 0.3, 0.4)
B = (0.5, 0.6, 0.9, 1.0)


def test_interpolation_between_keyframes():
    keyframes = [Keyframe(10, A), Keyframe(20, B)]
    boxes, mask = box_track(keyframes, np.array([10, 15, 20, 12]), half_stride=0.5)
    assert mask.all()
    np.testing.assert_allclose(boxes[0], A, atol=1e-6)
    np.testing.assert_allclose(boxes[1], [(a + b) / 2 for a, b in zip(A, B)], atol=1e-6)
    np.testing.assert_allclose(boxes[2], B, atol=1e-6)
    np.testing.assert_allclose(boxes[3], [a + 0.2 * (b - a) for a, b in zip(A, B)], atol=1e-6)


def test_end_holding_within_half_a_stride_only():
    keyframes = [Keyframe(100, A), Keyframe(200, B)]
    samples = np.array([80, 94, 95, 96, 204, 205, 206, 300])
    boxes, mask = box_track(keyframes, samples, half_stride=5.0)
    assert mask.tolist() == [False, False, True, True, True, True, False, False]
    np.testing.assert_allclose(boxes[2], A, atol=1e-6)  # held first box, exactly half a stride away
    np.testing.assert_allclose(boxes[5], B, atol=1e-6)  # held last box
    assert (boxes[[0, 1, 6, 7]] == 0).all()  # invisible frames carry no box


def test_region_without_keyframes_is_the_whole_frame():
    boxes, mask = box_track([], np.arange(5), half_stride=2.0)
    assert mask.all()
    np.testing.assert_array_equal(boxes, np.tile([0, 0, 1, 1], (5, 1)))


def test_bad_keyframes_raise():
    with pytest.raises(TrackError, match="not after"):
        box_track([Keyframe(5, A), Keyframe(5, B)], np.arange(3), 1.0)
    with pytest.raises(TrackError, match="x1 < x2"):
        box_track([Keyframe(5, (0.5, 0.1, 0.4, 0.2))], np.arange(3), 1.0)


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(1, 5000),
    num_samples=st.sampled_from([1, 3, 8, 16, 64, 256]),
    start=st.integers(0, 500),
    where=st.floats(0, 1, exclude_max=True),
)
def test_one_keyframe_track_covers_at_least_one_uniform_sample(length, num_samples, start, where):
    """The DESIGN guarantee: every annotated region covers at least one sampled frame."""
    frame = start + int(where * length)  # any frame of the window
    samples = uniform_indices(start, start + length, num_samples)
    _, mask = box_track([Keyframe(frame, A)], samples, uniform_half_stride(length, num_samples))
    assert mask.any()
    # and not the whole clip when samples are sparse: the hold reaches only neighbours
    if length >= 4 * num_samples and num_samples >= 8:
        assert mask.sum() <= 2


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 3000), stride=st.sampled_from([1, 4, 16, 30]), where=st.floats(0, 1, exclude_max=True))
def test_one_keyframe_track_covers_a_stride_sample(n, stride, where):
    frame = int(where * n)
    samples = stride_indices(n, stride)
    _, mask = box_track([Keyframe(frame, A)], samples, stride / 2.0)
    assert mask.any()


def test_center_crop_box_transform():
    # crop: x from 0.25 to 0.75 of a wide frame, full height
    crop = (0.25, 0.0, 0.5, 1.0)
    boxes = np.array([[0.3, 0.2, 0.5, 0.6],   # inside: x -> (x - 0.25) / 0.5
                      [0.1, 0.1, 0.4, 0.5],   # straddles the left edge: clipped
                      [0.0, 0.1, 0.2, 0.5],   # entirely left of the crop: invisible
                      [0.0, 0.0, 1.0, 1.0]],  # whole frame -> whole crop
                     dtype=np.float32)
    mask = np.array([True, True, True, True])
    out, visible = crop_boxes(boxes, mask, crop)
    np.testing.assert_allclose(out[0], [0.1, 0.2, 0.5, 0.6], atol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, 0.1, 0.3, 0.5], atol=1e-6)
    assert visible.tolist() == [True, True, False, True]
    np.testing.assert_array_equal(out[2], 0)
    np.testing.assert_allclose(out[3], [0, 0, 1, 1])
    # invisible stays invisible
    _, visible = crop_boxes(boxes, np.array([False, True, True, True]), crop)
    assert not visible[0]


def test_region_tracks_stack_regions():
    regions = (Region("a", (Keyframe(4, A), Keyframe(8, B))), Region("whole", ()))
    boxes, mask = region_tracks(regions, np.array([0, 4, 6, 8, 20]), half_stride=1.0)
    assert boxes.shape == (2, 5, 4) and mask.shape == (2, 5)
    assert mask[0].tolist() == [False, True, True, True, False]
    assert mask[1].all()
    boxes_c, mask_c = region_tracks(regions, np.array([0, 4, 6, 8, 20]), 1.0, crop=(0.25, 0.0, 0.5, 1.0))
    np.testing.assert_allclose(boxes_c[1], np.tile([0, 0, 1, 1], (5, 1)))
    np.testing.assert_allclose(boxes_c[0, 1], [0.0, 0.2, 0.1, 0.4], atol=1e-6)  # A cropped: x 0.1..0.3 -> 0..0.1
