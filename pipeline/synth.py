"""The embedded default dataset: synthetic surveillance videos in UCF-Crime's formats.

`generate_dataset()` writes, under `pipeline.embedded.SYNTH_DIR`:

* `videos/<Class>/<Class>9NN_x264.mp4` and `videos/Training_Normal_Videos_Anomaly/...`: training
  clips (H.264, 320x240, 30 fps, like UCF-Crime), described by `train.json` in the real record
  format (global caption, region captions, sparse box keyframes, optional `timestamps` window,
  optional `hard_negatives`); two records may share a video (different windows);
* `videos/<Class>/<Class>95N_x264.mp4` and `videos/Testing_Normal_Videos_Anomaly/...`: longer
  test videos with normal activity before and after one anomalous event, listed in
  `Anomaly_Test.txt` (official split-list lines `Class/Name_x264.mp4`, relative to
  `embedded.TEST_VIDEO_ROOT`) and `Temporal_Anomaly_Annotation.txt` (official columns
  `Name_x264.mp4  Class  start1  end1  start2  end2`, -1 = none; frames 0-based, inclusive);
* `test_event_boxes.json` (`pipeline.event_boxes` format): per test video and anomalous frame, the
  boxes of the event's actors (fighters and their burst, the flash and the people fleeing it, the
  crashing cars and their fire, the thief and the owner), for evaluation's spatial metric;
* `actors.json`: per training record and region, the RGB colour of the drawn actor, and the
  frame count of every video (for tests that look for actors in decoded frames).

What each class looks like, in any single frame (the demo scores frames one by one):
Normal: persons walking apart at moderate speed, now and then standing still; sometimes a car
  driving slowly by or a bag lying on the ground.
Fighting: two persons overlapping, punching and jittering, a big yellow-white burst between them.
Explosion: a big orange / yellow / white flickering blob with smoke, a person running away.
RoadAccidents: two cars tilted nose to nose after a fast head-on crash, burning where they
  touch, debris and smoke.
Stealing: a person running with a bag hanging behind them (taken from the ground beside its
  owner), the owner running after them.
Scenes (four textured, static backgrounds) are spread evenly over the classes.

Motion is piecewise linear and each region's keyframes sit at the breakpoints, so the box that
stage 1 interpolates from them encloses the actor on every frame. Everything is drawn from a
numpy Generator seeded by (seed, video name): the same seed gives the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from pipeline import embedded, synth_scenes
from pipeline.event_boxes import write_event_boxes
from pipeline.synth_scenes import (
    ACTOR_COLOURS,
    BAG_COLOURS,
    BAG_SIZE,
    FLASH_ORANGE,
    FPS,
    HEIGHT,
    PERSON_HEIGHT_RANGE,
    SCENE_LAYOUTS,
    SCENES,
    WIDTH,
    Actor,
    Bag,
    Burst,
    Car,
    Debris,
    Flash,
    Layout,
    Mode,
    Person,
    Smoke,
    Track,
    car_half_extent,
    even,
    make_background,
    carry_body_offset,
    person_half_extent,
    person_size,
)

CLASSES = ("Fighting", "Explosion", "RoadAccidents", "Stealing")
NORMAL = "Normal"
# The class phrase of every global caption ("A surveillance video of <phrase>: ..."): the words
# `fgclip-vad eval` puts in its prompts (class name split at capitals, "normal activity"), so a
# model trained from scratch on these captions has seen the prompts' words.
CLASS_WORDS = {NORMAL: "normal activity", "Fighting": "fighting", "Explosion": "explosion",
               "RoadAccidents": "road accidents", "Stealing": "stealing"}
# Classes whose training captions are written in Chinese, as the group's real file has for
# Burglary: CLIP reads them as byte fragments, the bilingual FG-CLIP 2 family natively, and the
# evaluation report names the class beside its AUC. Prompts stay English, so this class is
# learnt from Chinese captions and scored with English prompts.
CHINESE_CAPTIONED_CLASSES = ("Explosion",)
TRAIN_NORMAL_DIR = "Training_Normal_Videos_Anomaly"
TEST_NORMAL_DIR = "Testing_Normal_Videos_Anomaly"
FIRST_TRAIN_NUMBER, FIRST_TEST_NUMBER = 901, 950  # above UCF-Crime's numbers: names never collide

BOX_MARGIN_PX = 2  # 1 px for snapping sprites to even pixels, 1 px of slack
FIGHT_JITTER_PX = 4
COMPLETE_NAME = "synth_complete.json"  # written last: its presence means the output is whole


@dataclass(frozen=True)
class SizeProfile:
    normal_clips: int  # training normal videos with one record each
    normal_windowed: int  # training normal videos split into two `timestamps` windows
    clips_per_class: int  # training clips per anomaly class
    train_seconds: tuple[float, float]  # duration of a clip (of a window, for windowed videos)
    test_classes: tuple[str, ...]  # one anomalous test video per entry
    test_normals: int
    test_seconds: tuple[float, float]


SIZES = {
    "default": SizeProfile(normal_clips=20, normal_windowed=4, clips_per_class=8, train_seconds=(6.0, 9.0),
                           test_classes=CLASSES * 3, test_normals=4, test_seconds=(20.0, 32.0)),
    "tiny": SizeProfile(normal_clips=0, normal_windowed=1, clips_per_class=1, train_seconds=(2.0, 2.5),
                        test_classes=("Explosion",), test_normals=1, test_seconds=(6.0, 6.0)),
}


# --- plans: what one video shows and how it is annotated ---------------------------------------

@dataclass
class RegionPlan:
    actor: Actor
    kind: str  # "person", "car", "flash"
    rgb: tuple[int, int, int]
    caption: str
    negatives: list[str]


@dataclass
class RecordPlan:
    global_caption: str
    regions: list[RegionPlan]
    window: tuple[int, int] | None  # first, last frame (inclusive) of a `timestamps` window
    with_negatives: bool


@dataclass
class ClipPlan:
    video: str  # relative to the output directory
    label: str
    split: str  # "train" or "test"
    scene: str
    n_frames: int
    background_seed: int
    actors: list[Actor]  # in drawing order
    records: list[RecordPlan] = field(default_factory=list)
    event: tuple[int, int] | None = None  # first, last anomalous frame (test videos)
    event_actors: list[Actor] = field(default_factory=list)  # who makes the event (test videos)


def _video_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


# Where two colours touch, H.264's shared chroma (and later resizing) mixes them: green next to
# blue looks cyan, magenta next to yellow (bursts, bags) looks red. A video never holds all the
# colours of such a set, so a test looking for an actor's colour finds no impostor pixels.
_COLOUR_CONFLICTS = ({"green", "blue", "cyan"}, {"magenta", "red"})
MAX_ACTOR_COLOURS = 3  # per video; with the conflicts above, 3 is the most that is always possible


class _Colours:
    """Distinct, mutually safe actor colours for one video (each appears once per video)."""

    def __init__(self, rng: np.random.Generator):
        self.names = [str(c) for c in rng.permutation(list(ACTOR_COLOURS))]
        self.used: list[str] = []

    def take(self) -> str:
        for name in self.names:
            chosen = {*self.used, name}
            if name not in self.used and not any(conflict <= chosen for conflict in _COLOUR_CONFLICTS):
                self.used.append(name)
                return name
        raise AssertionError(f"no safe colour left after {self.used}: a script asks for too many actors")

    def unused(self) -> str:
        return next(c for c in self.names if c not in self.used)


def _side(direction: int) -> str:
    return "right" if direction > 0 else "left"


class _Path:
    """Builds a sprite's piecewise-linear track and its pose changes, breakpoint by breakpoint."""

    def __init__(self, frame: int, x: float, y: float, half_w: float, half_h: float, pose: str, facing: int):
        self.track = Track().add(frame, x, y, half_w, half_h)
        self.modes = [Mode(frame, pose, facing)]
        self.frame, self.x, self.y, self.half_w, self.half_h = frame, x, y, half_w, half_h

    def go(self, frame: int, x: float, y: float, pose: str | None = None, facing: int | None = None) -> "_Path":
        if pose is not None or facing is not None:
            last = self.modes[-1]
            self.modes.append(Mode(self.frame + 1, pose or last.pose, facing if facing is not None else last.facing))
        self.track.add(frame, x, y, self.half_w, self.half_h)
        self.frame, self.x, self.y = frame, x, y
        return self

    def jump(self, x: float, y: float, half_w: float, half_h: float, pose: str, facing: int) -> "_Path":
        """Change size or place on the very next frame (taking a bag, a collision)."""
        self.frame += 1
        self.half_w, self.half_h, self.x, self.y = half_w, half_h, x, y
        self.track.add(self.frame, x, y, half_w, half_h)
        self.modes.append(Mode(self.frame, pose, facing))
        return self

    def position_at(self, frame: int) -> tuple[float, float]:
        cx, cy, _, _ = self.track.at(frame)
        return float(cx), float(cy)


def _pieces(rng: np.random.Generator, first: int, last: int, low: int = 40, high: int = 90) -> list[int]:
    """Breakpoint frames splitting first..last into pieces of low..high frames."""
    ends, frame = [], first
    while True:
        frame += int(rng.integers(low, high))
        if frame >= last - low // 2:
            return ends + [last]
        ends.append(frame)


def _walk_in_view(path: _Path, rng, last: int, direction: int, speed_px_s: float, y_range, pose="walk") -> None:
    """Walk in `direction` until `last`, with speed changes and drift, never leaving the frame."""
    lo, hi = path.half_w + 4, WIDTH - path.half_w - 4
    first = path.frame
    room = (hi - path.x) if direction > 0 else (path.x - lo)
    travel = min(speed_px_s * (last - first) / FPS, max(0.0, room))
    ends = _pieces(rng, first, last)
    weights = rng.uniform(0.6, 1.4, size=len(ends))
    pause = int(rng.integers(1, len(ends) - 1)) if pose == "walk" and len(ends) > 2 and rng.uniform() < 0.3 else -1
    if pause >= 0:  # people stop now and then: standing still is normal too
        weights[pause] = 0.0
    weights *= travel / weights.sum()
    x = path.x
    for k, (end, step) in enumerate(zip(ends, weights)):
        x += direction * step
        y = path.y if k == pause else float(np.clip(path.y + rng.uniform(-8, 8), *y_range))
        path.go(end, float(np.clip(x, lo, hi)), y, pose="stand" if k == pause else pose, facing=direction)


def _person_y_range(layout: Layout, half_h: float) -> tuple[float, float]:
    return layout.feet_top - half_h, layout.feet_bottom - half_h


def _person_height(rng) -> int:
    return even(rng.integers(PERSON_HEIGHT_RANGE[0], PERSON_HEIGHT_RANGE[1] + 1))


def _walker_in_view(rng, layout: Layout, colour: str, legs: list[tuple[int, int]], first: int = 0) -> Person:
    """A person visible from `first` to the last leg's end; legs = [(last_frame, direction), ...]."""
    height = _person_height(rng)
    half_w, half_h = person_half_extent(height, "walk")
    lo, hi = half_w + 4, WIDTH - half_w - 4
    y_range = _person_y_range(layout, half_h)
    start_fraction = rng.uniform(0.0, 0.3)
    x = lo + start_fraction * (hi - lo) if legs[0][1] > 0 else hi - start_fraction * (hi - lo)
    path = _Path(first, x, rng.uniform(*y_range), half_w, half_h, "walk", legs[0][1])
    for last, direction in legs:
        _walk_in_view(path, rng, last, direction, rng.uniform(16, 30), y_range)
    return Person(path.track, first, legs[-1][0], rgb=ACTOR_COLOURS[colour], height=height, modes=path.modes)


def _car_in_view(rng, layout: Layout, colour: str, last: int, direction: int) -> Car:
    """A car driving slowly along the road, visible all clip long."""
    half_w, half_h = car_half_extent(0.0, direction)
    lane_y = (layout.road_top + layout.road_bottom) / 2 + (8 if direction > 0 else -8)
    lo, hi = half_w + 2, WIDTH - half_w - 2
    x = rng.uniform(lo, lo + 0.2 * (hi - lo)) if direction > 0 else rng.uniform(hi - 0.2 * (hi - lo), hi)
    path = _Path(0, x, lane_y, half_w, half_h, "drive", direction)
    _walk_in_view(path, rng, last, direction, rng.uniform(15, 28), (lane_y - 1, lane_y + 1), pose="drive")
    return Car(path.track, 0, last, rgb=ACTOR_COLOURS[colour], facing=direction)


def _walker_region(person: Person, colour: str, direction: int, colours: _Colours) -> RegionPlan:
    return RegionPlan(person, "person", person.rgb, f"a {colour} person walking {_side(direction)}",
                      [f"a {colours.unused()} person walking {_side(direction)}",
                       f"a {colour} person walking {_side(-direction)}"])


def _car_region(car: Car, colour: str, direction: int, colours: _Colours) -> RegionPlan:
    return RegionPlan(car, "car", car.rgb, f"a {colour} car driving {_side(direction)}",
                      [f"a {colours.unused()} car driving {_side(direction)}",
                       f"a {colour} car driving {_side(-direction)}"])


# Global captions say what happens, in a few fixed sentences per class; colours, directions and
# places are in the region captions. A from-scratch model trained on captions that each name
# colours learns to match colours first (the easiest cue) and scores frames barely above chance;
# with class-level global captions (clips of a class share them, and the loss treats identical
# captions as positives) the demo's frame AUC went from 0.54 to 0.75 in the same 48 steps.
_EVENTS = {
    "Fighting": "two people hit each other",
    "Explosion": "a bright flash bursts and a person runs away",
    "RoadAccidents": "two cars crash into each other",
    "Stealing": "a person grabs a bag and runs away, chased by its owner",
}
_PEOPLE_WALK = {1: "a person walks", 2: "two people walk", 3: "three people walk"}


def _normal_caption(people: int, cars: int) -> str:
    return f"A surveillance video of {CLASS_WORDS[NORMAL]}: {_PEOPLE_WALK[people]}{' and a car drives by' if cars else ''}."


def _anomaly_caption(label: str, bystander: bool) -> str:
    return f"A surveillance video of {CLASS_WORDS[label]}: {_EVENTS[label]}{' while another person walks by' if bystander else ''}."


# --- training clips --------------------------------------------------------------------------

def _train_normal(rng, n_frames: int, layout: Layout, windows: int) -> tuple[list[Actor], list[RecordPlan]]:
    """Persons (and maybe a car) walking; with two windows, each person turns back at the split."""
    colours = _Colours(rng)
    bounds = [(k + 1) * n_frames // windows - 1 for k in range(windows)]
    actors, tracks = [], []  # tracks: (actor, kind, colour, directions per window)
    walkers = int(rng.integers(1, MAX_ACTOR_COLOURS + 1))
    for _ in range(walkers):
        colour = colours.take()
        first_direction = int(rng.choice([-1, 1]))
        directions = [first_direction * (-1) ** k for k in range(windows)]
        person = _walker_in_view(rng, layout, colour, list(zip(bounds, directions)))
        actors.append(person)
        tracks.append((person, "person", colour, directions))
    if walkers < MAX_ACTOR_COLOURS and rng.uniform() < 0.4:
        colour, direction = colours.take(), int(rng.choice([-1, 1]))
        car = _car_in_view(rng, layout, colour, n_frames - 1, direction)
        actors.insert(0, car)
        tracks.append((car, "car", colour, [direction] * windows))
    if rng.uniform() < 0.4:
        actors.insert(0, _bag_on_ground(rng, layout, 0, n_frames - 1))

    records = []
    for k in range(windows):
        first = 0 if k == 0 else bounds[k - 1] + 1
        regions = [(_walker_region if kind == "person" else _car_region)(actor, colour, directions[k], colours)
                   for actor, kind, colour, directions in tracks]
        cars = sum(kind == "car" for _, kind, _, _ in tracks)
        window = (first, bounds[k]) if windows > 1 else None
        records.append(RecordPlan(_normal_caption(len(tracks) - cars, cars), regions, window, rng.uniform() < 0.67))
    return actors, records


def _add_bystander(rng, layout, colours: _Colours, n_frames: int, actors: list, regions: list, chance: float) -> bool:
    """Maybe add a person walking past (drawn first, behind the event): an annotated normal region."""
    if rng.uniform() >= chance:
        return False
    colour, direction = colours.take(), int(rng.choice([-1, 1]))
    person = _walker_in_view(rng, layout, colour, [(n_frames - 1, direction)])
    actors.insert(0, person)
    regions.append(_walker_region(person, colour, direction, colours))
    return True


def _fight(rng, layout: Layout, first: int, last: int, n_frames: int, *,
           mx: float, cy: float, height_a: int, height_b: int, path_a: _Path | None = None,
           path_b: _Path | None = None):
    """Two persons punching each other around x = mx from `first` to `last`, with a burst between.

    Returns the two fighters' paths (continued from the given ones) and the burst actor.
    """
    body_w = max(person_size(height_a)[0], person_size(height_b)[0])
    gap = even(body_w * 0.55)
    half_a, half_b = person_half_extent(height_a, "punch"), person_half_extent(height_b, "punch")
    if path_a is None:
        path_a = _Path(first, mx - gap / 2, cy, *half_a, "punch", 1)
        path_b = _Path(first, mx + gap / 2, cy + half_a[1] - half_b[1], *half_b, "punch", -1)
    else:
        path_a.go(first, mx - gap / 2, cy, pose="punch", facing=1)
        path_b.go(first, mx + gap / 2, cy + half_a[1] - half_b[1], pose="punch", facing=-1)
    margin = FIGHT_JITTER_PX + 4
    lo = max(half_a[0], half_b[0]) + gap / 2 + margin
    y_lo, y_hi = _person_y_range(layout, half_a[1])
    burst_track = Track().add(first, mx, cy - half_a[1] * 0.45, 30, 30)
    for end in _pieces(rng, first, last, 30, 60):
        mx = float(np.clip(mx + rng.uniform(-12, 12), lo, WIDTH - lo))
        cy = float(np.clip(cy + rng.uniform(-4, 4), y_lo, y_hi))
        path_a.go(end, mx - gap / 2, cy)
        path_b.go(end, mx + gap / 2, cy + half_a[1] - half_b[1])
        burst_track.add(end, mx, cy - half_a[1] * 0.45, 30, 30)
    steps = np.array([-4, -2, 0, 2, 4])
    jitters = []
    for _ in range(2):  # a new shove every other frame, none outside the fight
        jitter = np.zeros((n_frames, 2), dtype=np.int64)
        shoves = rng.choice(steps, size=((last - first) // 2 + 1, 2))
        jitter[first:last + 1] = np.repeat(shoves, 2, axis=0)[: last - first + 1]
        jitters.append(jitter)
    burst = Burst(burst_track, first, last, seed=int(rng.integers(1 << 30)))
    return path_a, path_b, jitters, burst


def _train_fighting(rng, n_frames, layout):
    colours = _Colours(rng)
    colour_a, colour_b = colours.take(), colours.take()
    height_a, height_b = _person_height(rng), _person_height(rng)
    half_h = person_half_extent(height_a, "punch")[1]
    mx = rng.uniform(90, WIDTH - 90)
    cy = rng.uniform(*_person_y_range(layout, half_h))
    path_a, path_b, jitters, burst = _fight(rng, layout, 0, n_frames - 1, n_frames, mx=mx, cy=cy,
                                            height_a=height_a, height_b=height_b)
    fighter_a = Person(path_a.track, 0, n_frames - 1, jitters[0], rgb=ACTOR_COLOURS[colour_a], height=height_a,
                       modes=path_a.modes)
    fighter_b = Person(path_b.track, 0, n_frames - 1, jitters[1], rgb=ACTOR_COLOURS[colour_b], height=height_b,
                       modes=path_b.modes)
    actors = [fighter_a, fighter_b, burst]
    regions = [RegionPlan(f, "person", f.rgb, f"a {c} person fighting",
                          [f"a {colours.unused()} person fighting", f"a {c} person walking {_side(d)}"])
               for f, c, d in ((fighter_a, colour_a, 1), (fighter_b, colour_b, -1))]
    bystander = _add_bystander(rng, layout, colours, n_frames, actors, regions, 0.4)
    return actors, [RecordPlan(_anomaly_caption("Fighting", bystander), regions, None, rng.uniform() < 0.67)]


def _flash_track(rng, first: int, last: int, cx: float, cy: float, r_max: float, fade_out: bool) -> Track:
    """Flash box: grows over 18 frames, pulses between 80 and 100 % of r_max, maybe shrinks at the end."""
    track = Track().add(first, cx, cy, 4, 4)
    grown = min(first + 18, last)
    track.add(grown, cx, cy, r_max, r_max)
    stop = last - 12 if fade_out else last
    frame = grown
    while True:
        frame += int(rng.integers(15, 30))
        if frame >= stop:
            break
        r = r_max * rng.uniform(0.8, 1.0)
        track.add(frame, cx, cy, r, r)
    if stop > track.frames[-1]:
        track.add(stop, cx, cy, r_max * 0.9, r_max * 0.9)
    if fade_out and last > track.frames[-1]:
        track.add(last, cx, cy, 4, 4)
    return track


def _train_explosion(rng, n_frames, layout):
    colours = _Colours(rng)
    r_max = rng.uniform(52, 70)
    fx = rng.uniform(r_max + 4, WIDTH - r_max - 4)
    fy = rng.uniform(r_max + 4, min(HEIGHT - r_max - 4, 190))
    start = int(rng.integers(0, 7))
    flash = Flash(_flash_track(rng, start, n_frames - 1, fx, fy, r_max, fade_out=False), start, n_frames - 1,
                  seed=int(rng.integers(1 << 30)))
    smoke = Smoke(Track().add(0, fx, fy - r_max * 0.5, 12, 40), start + 20, n_frames - 1, seed=int(rng.integers(1 << 30)))

    colour = colours.take()
    height = _person_height(rng)
    half_w, half_h = person_half_extent(height, "run")
    away = 1 if fx < WIDTH / 2 else -1
    y_range = _person_y_range(layout, half_h)
    x0 = float(np.clip(fx + away * rng.uniform(10, 30), half_w + 4, WIDTH - half_w - 4))
    path = _Path(0, x0, rng.uniform(*y_range), half_w, half_h, "run", away)
    edge = WIDTH - half_w - 6 if away > 0 else half_w + 6
    run_frames = max(2, int(abs(edge - x0) / rng.uniform(2.0, 2.6)))
    if run_frames < n_frames - 1:
        path.go(run_frames, edge, path.y + rng.uniform(-6, 6), pose="run")
        path.go(n_frames - 1, edge, path.y, pose="stand", facing=-away)
    else:  # a short clip ends while the runner is still on the way
        t = (n_frames - 1) / run_frames
        path.go(n_frames - 1, x0 + t * (edge - x0), path.y, pose="run")
    runner = Person(path.track, 0, n_frames - 1, rgb=ACTOR_COLOURS[colour], height=height, modes=path.modes)

    actors = [smoke, flash, runner]
    regions = [RegionPlan(flash, "flash", FLASH_ORANGE, "a big orange explosion flash",
                          ["a small orange explosion flash", "a big blue explosion flash"]),
               RegionPlan(runner, "person", runner.rgb, f"a {colour} person running away",
                          [f"a {colours.unused()} person running away", f"a {colour} person standing still"])]
    bystander = _add_bystander(rng, layout, colours, n_frames, actors, regions, 0.4)
    return actors, [RecordPlan(_anomaly_caption("Explosion", bystander), regions, None, rng.uniform() < 0.67)]


def _crash(rng, layout: Layout, start: int, last: int, *, contact_x: float,
           from_edges: bool, speed_px_frame: float):
    """Two cars driving at each other from `start`, hitting at contact_x, wrecked until `last`.

    Returns the two car paths (for the caller to extend), per car its facing and tilts, the
    contact frame, and the effects: debris, sparks at the impact, a fire at the crumpled fronts
    and smoke (a wreck must read as an accident in one small frame, not as two parked cars).
    """
    lane_y = (layout.road_top + layout.road_bottom) / 2
    half_w, half_h = car_half_extent(0.0)
    x_hit_a, x_hit_b = contact_x - half_w + 4, contact_x + half_w - 4
    if from_edges:
        x0_a, x0_b = -half_w - 2, WIDTH + half_w + 2
    else:
        x0_a = max(half_w + 2, x_hit_a - speed_px_frame * 20)
        x0_b = min(WIDTH - half_w - 2, x_hit_b + speed_px_frame * 20)
    contact = start + int(np.ceil(max(x_hit_a - x0_a, x0_b - x_hit_b) / speed_px_frame))
    tilt_a, tilt_b = -rng.uniform(18, 30), rng.uniform(18, 30)  # noses thrown up: wrecked at a glance
    paths, cars = [], []
    for x0, x_hit, facing, tilt, dy in ((x0_a, x_hit_a, 1, tilt_a, 3), (x0_b, x_hit_b, -1, tilt_b, -3)):
        path = _Path(start, x0, lane_y + dy, half_w, half_h, "drive", facing)
        path.go(contact - 1, x_hit, lane_y + dy)
        tilted_w, tilted_h = car_half_extent(tilt, facing)
        path.jump(x_hit, lane_y + dy, tilted_w, tilted_h, "crashed", facing)
        path.go(min(contact + 6, last), x_hit + facing * rng.uniform(2, 6), lane_y + dy)  # crumpling in
        if last > path.frame:
            path.go(last, path.x, path.y)
        paths.append(path)
        cars.append((facing, [(start, 0.0), (contact, tilt)]))
    debris = Debris(Track().add(contact, contact_x, lane_y + 4, 50, 12), contact, last,
                    seed=int(rng.integers(1 << 30)), spread=rng.uniform(35, 55))
    smoke = Smoke(Track().add(contact, contact_x, lane_y - half_h, 12, 30), min(contact + 4, last), last,
                  seed=int(rng.integers(1 << 30)))
    impact = Burst(Track().add(contact, contact_x, lane_y - 4, 20, 20), contact, min(contact + 20, last),
                   seed=int(rng.integers(1 << 30)))
    fire = Flash(_flash_track(rng, contact, last, contact_x, lane_y - 8, rng.uniform(18, 24), fade_out=False),
                 contact, last, seed=int(rng.integers(1 << 30)))
    return paths, cars, contact, [debris, fire, impact, smoke]


def _train_road_accident(rng, n_frames, layout):
    colours = _Colours(rng)
    colour_a, colour_b = colours.take(), colours.take()
    contact_x = rng.uniform(110, WIDTH - 110)
    start = 0
    paths, cars, contact, effects = _crash(rng, layout, start, n_frames - 1, contact_x=contact_x, from_edges=False,
                                           speed_px_frame=rng.uniform(5.0, 7.0))
    car_actors = [Car(path.track, 0, n_frames - 1, rgb=ACTOR_COLOURS[c], facing=facing, tilts=tilts)
                  for path, c, (facing, tilts) in zip(paths, (colour_a, colour_b), cars)]
    actors = [*car_actors, *effects]
    regions = [RegionPlan(car, "car", car.rgb, f"a {c} car crashing",
                          [f"a {colours.unused()} car crashing", f"a {c} car parked"])
               for car, c in zip(car_actors, (colour_a, colour_b))]
    bystander = _add_bystander(rng, layout, colours, n_frames, actors, regions, 0.4)
    return actors, [RecordPlan(_anomaly_caption("RoadAccidents", bystander), regions, None, rng.uniform() < 0.67)]


def _run_zigzag(path: _Path, rng, last: int, y_range, speed_px_frame: float, pose: str, *, leave: bool = False) -> int:
    """Run back and forth across the frame until `last`; with `leave`, run out of it at about `last`.

    Returns the last frame on which the runner is visible.
    """
    lo, hi = path.half_w + 4, WIDTH - path.half_w - 4
    facing = path.modes[-1].facing
    while True:
        edge_x = hi if facing > 0 else lo
        if leave:
            exit_x = WIDTH + path.half_w + 2 if facing > 0 else -path.half_w - 2
            remaining = last - path.frame
            time_after_leg = remaining - abs(edge_x - path.x) / speed_px_frame
            if time_after_leg < WIDTH / (1.5 * speed_px_frame):  # no time for another leg: leave ahead
                distance = abs(exit_x - path.x)
                speed = float(np.clip(distance / max(remaining, 1), 0.8 * speed_px_frame, 1.5 * speed_px_frame))
                frames = int(np.ceil(distance / speed))
                visible_frames = int(np.floor((distance - 2) / speed))  # until the box is out of the frame
                path.go(path.frame + frames, exit_x, path.y, pose=pose, facing=facing)
                return path.frame - frames + visible_frames
        target_y = rng.uniform(*y_range)
        frames = max(4, int(np.hypot(edge_x - path.x, target_y - path.y) / speed_px_frame))
        end = path.frame + frames
        if not leave and end >= last:  # stop mid-leg at the clip's end
            t = (last - path.frame) / frames
            path.go(last, path.x + t * (edge_x - path.x), path.y + t * (target_y - path.y), pose=pose, facing=facing)
            return last
        path.go(end, edge_x, target_y, pose=pose, facing=facing)
        facing = -facing


def _take_bag(path: _Path, grab: int, facing: int, height: int) -> None:
    """At frame `grab` the person picks the bag up: the sprite grows to hold it behind them."""
    carry_w, carry_h = person_half_extent(height, "carry")
    body_x = path.x
    if path.frame < grab - 1:
        path.go(grab - 1, body_x, path.y)
    path.jump(body_x - facing * carry_body_offset(height), path.y, carry_w, carry_h, "carry", facing)


def _chaser(thief: _Path, grab: int, lag: int, height: int, x: float, feet_y: float, facing: int, first: int) -> _Path:
    """The bag's owner: stands beside the bag, then runs after the thief along the same path, `lag` frames behind."""
    half_w, half_h = person_half_extent(height, "run")
    path = _Path(first, x, feet_y - half_h, half_w, half_h, "stand", facing)
    path.go(grab, x, path.y)
    for frame, (cx, cy, _, thief_half_h) in zip(thief.track.frames, thief.track.values):
        if frame >= grab:
            target_x, target_y = cx, cy + thief_half_h - half_h  # feet on the thief's footprints
            path.go(frame + lag, target_x, target_y, pose="run", facing=1 if target_x >= path.x else -1)
    return path


def _stealing(rng, layout: Layout, colours: _Colours, grab: int, *, walk_in_from: float | None, last: int,
              leave: bool, n_frames: int) -> tuple[list[Actor], Person, Person, str, tuple[int, int]]:
    """A bag on the ground with its owner beside it; a person walks up, takes it at `grab` and runs off,
    the owner giving chase. Returns the actors, thief, owner, bag colour and their visible spans."""
    bag_colour = str(rng.choice(list(BAG_COLOURS)))
    height, owner_height = _person_height(rng), _person_height(rng)
    half_w, half_h = person_half_extent(height, "walk")
    feet_y = rng.uniform(layout.feet_top + 10, layout.feet_bottom)
    approach = int(rng.choice([-1, 1]))  # the thief's walking direction toward the bag
    bag_x = rng.uniform(100, WIDTH - 100)
    body_at_bag = bag_x - approach * (half_w + BAG_SIZE[0] / 2 + 2)
    owner_x = bag_x + approach * (person_half_extent(owner_height, "stand")[0] + BAG_SIZE[0] / 2 + 4)
    if walk_in_from is None:  # already in view at the clip's start
        x0, first = body_at_bag - approach * 0.8 * grab, 0
    else:
        x0 = walk_in_from
        first = grab - 1 - int(abs(body_at_bag - x0) / 0.9)
    path = _Path(first, x0, feet_y - half_h, half_w, half_h, "walk", approach)
    path.go(grab - 1, body_at_bag, path.y)
    _take_bag(path, grab, -approach, height)  # runs back the way it came, away from the owner
    speed = rng.uniform(2.0, 2.5)
    last_visible = _run_zigzag(path, rng, last, _person_y_range(layout, path.half_h), speed, "carry", leave=leave)
    lag = int(rng.integers(14, 22))
    owner = _chaser(path, grab, lag, owner_height, owner_x, feet_y, -approach, min(0, first))
    thief = Person(path.track, max(0, first), min(n_frames - 1, last_visible), rgb=ACTOR_COLOURS[colours.take()],
                   height=height, modes=path.modes, bag_rgb=BAG_COLOURS[bag_colour])
    chaser = Person(owner.track, 0, min(n_frames - 1, last_visible + lag), rgb=ACTOR_COLOURS[colours.take()],
                    height=owner_height, modes=owner.modes)
    bag = Bag(Track().add(0, bag_x, feet_y - BAG_SIZE[1] / 2, BAG_SIZE[0] / 2, BAG_SIZE[1] / 2), 0, grab - 1,
              rgb=BAG_COLOURS[bag_colour])
    return [bag, chaser, thief], thief, chaser, bag_colour, (grab, min(n_frames - 1, last_visible + lag))


def _train_stealing(rng, n_frames, layout):
    colours = _Colours(rng)
    actors, thief, owner, bag_colour, _ = _stealing(rng, layout, colours, int(rng.integers(10, 21)), walk_in_from=None,
                                                    last=n_frames - 1, leave=False, n_frames=n_frames)
    thief_colour, owner_colour = (colours.used[0], colours.used[1])
    other_bag = next(c for c in BAG_COLOURS if c != bag_colour)
    regions = [RegionPlan(thief, "person", thief.rgb, f"a {thief_colour} person stealing a {bag_colour} bag",
                          [f"a {thief_colour} person stealing a {other_bag} bag",
                           f"a {colours.unused()} person stealing a {bag_colour} bag"]),
               RegionPlan(owner, "person", owner.rgb, f"a {owner_colour} person chasing a thief",
                          [f"a {colours.unused()} person chasing a thief", f"a {owner_colour} person standing still"])]
    bystander = _add_bystander(rng, layout, colours, n_frames, actors, regions, 0.3)
    return actors, [RecordPlan(_anomaly_caption("Stealing", bystander), regions, None, rng.uniform() < 0.67)]


TRAIN_SCRIPTS = {"Fighting": _train_fighting, "Explosion": _train_explosion,
                 "RoadAccidents": _train_road_accident, "Stealing": _train_stealing}


# --- test videos: normal activity, one event at known frames -----------------------------------

def _passers_by(rng, layout: Layout, n_frames: int, every_frames: tuple[int, int] = (150, 300)) -> list[Person]:
    """Persons crossing the whole frame at walking speed, one every few seconds."""
    people, start = [], -int(rng.integers(60, 200))
    while start < n_frames:
        height = _person_height(rng)
        half_w, half_h = person_half_extent(height, "walk")
        direction = int(rng.choice([-1, 1]))
        x0, x1 = -half_w - 2, WIDTH + half_w + 2
        if direction < 0:
            x0, x1 = x1, x0
        y_range = _person_y_range(layout, half_h)
        path = _Path(start, x0, rng.uniform(*y_range), half_w, half_h, "walk", direction)
        speed = rng.uniform(0.7, 1.2)  # px per frame
        walk_end = start + int(abs(x1 - x0) / speed)
        ends = _pieces(rng, start, walk_end)
        pause_after = int(rng.integers(0, len(ends) - 1)) if len(ends) > 1 and rng.uniform() < 0.3 else None
        shift = 0  # frames spent standing so far
        for k, piece_end in enumerate(ends):
            t = (piece_end - start) / (walk_end - start)
            path.go(piece_end + shift, x0 + t * (x1 - x0), float(np.clip(path.y + rng.uniform(-6, 6), *y_range)),
                    pose="walk")
            if k == pause_after:  # people stop now and then: standing still is normal too
                shift = int(rng.integers(30, 90))
                path.go(piece_end + shift, path.x, path.y, pose="stand")
        end = walk_end + shift
        colour = str(rng.choice(list(ACTOR_COLOURS)))
        people.append(Person(path.track, max(0, start), min(end, n_frames - 1), rgb=ACTOR_COLOURS[colour],
                             height=height, modes=path.modes))
        start += int(rng.integers(*every_frames))
    return [p for p in people if p.first <= p.last]


def _event_span(rng, n_frames: int) -> tuple[int, int]:
    length = int(n_frames * rng.uniform(0.2, 0.4))
    first = int(n_frames * rng.uniform(0.2, 0.8 - length / n_frames))
    return first, first + length - 1


def _walk_to(path: _Path, frame: int, x: float, y: float, pose: str = "walk", facing: int | None = None) -> None:
    path.go(frame, x, y, pose=pose, facing=facing if facing is not None else (1 if x >= path.x else -1))


def _test_fighting(rng, n_frames, layout):
    first, last = _event_span(rng, n_frames)
    colours = _Colours(rng)
    height_a, height_b = _person_height(rng), _person_height(rng)
    half_a = person_half_extent(height_a, "walk")
    half_b = person_half_extent(height_b, "walk")
    mx = rng.uniform(100, WIDTH - 100)
    cy = rng.uniform(*_person_y_range(layout, half_a[1]))
    speed = rng.uniform(0.7, 1.0)
    x_a0, x_b0 = -half_a[0] - 2, WIDTH + half_b[0] + 2
    path_a = _Path(first - int((mx - x_a0) / speed), x_a0, cy, *half_a, "walk", 1)
    path_b = _Path(first - int((x_b0 - mx) / speed), x_b0, cy + half_a[1] - half_b[1], *half_b, "walk", -1)
    path_a, path_b, jitters, burst = _fight(rng, layout, first, last, n_frames, mx=mx, cy=cy,
                                            height_a=height_a, height_b=height_b, path_a=path_a, path_b=path_b)
    for path, exit_x in ((path_a, -half_a[0] - 2), (path_b, WIDTH + half_b[0] + 2)):
        _walk_to(path, last + 1, path.x, path.y, facing=1 if exit_x > 0 else -1)
        _walk_to(path, last + 1 + int(abs(exit_x - path.x) / speed), exit_x, path.y)
    fighters = [Person(path.track, max(0, path.track.frames[0]), min(n_frames - 1, path.track.frames[-1]), jitter,
                       rgb=ACTOR_COLOURS[colours.take()], height=h, modes=path.modes)
                for path, jitter, h in ((path_a, jitters[0], height_a), (path_b, jitters[1], height_b))]
    return [*fighters, burst], (first, last)


def _test_explosion(rng, n_frames, layout):
    first, last = _event_span(rng, n_frames)
    r_max = rng.uniform(55, 72)
    fx = rng.uniform(r_max, WIDTH - r_max)
    fy = rng.uniform(110, 190)
    flash = Flash(_flash_track(rng, first, last, fx, fy, r_max, fade_out=True), first, last,
                  seed=int(rng.integers(1 << 30)))
    smoke = Smoke(Track().add(first, fx, fy - r_max * 0.5, 12, 40), first + 20, last, seed=int(rng.integers(1 << 30)))
    victims = []
    for _ in range(int(rng.integers(1, 3))):
        height = _person_height(rng)
        half_w, half_h = person_half_extent(height, "walk")
        y = rng.uniform(*_person_y_range(layout, half_h))
        walk_dir = int(rng.choice([-1, 1]))
        x_at = float(np.clip(fx + rng.uniform(-50, 50), 0, WIDTH))
        x0 = -half_w - 2 if walk_dir > 0 else WIDTH + half_w + 2
        path = _Path(first - int(abs(x_at - x0) / 0.9), x0, y, half_w, half_h, "walk", walk_dir)
        _walk_to(path, first, x_at, y)
        away = 1 if x_at >= fx else -1
        exit_x = WIDTH + half_w + 2 if away > 0 else -half_w - 2
        _walk_to(path, first + int(abs(exit_x - x_at) / 2.4) + 1, exit_x, y, pose="run", facing=away)
        victims.append(Person(path.track, max(0, path.track.frames[0]), min(n_frames - 1, path.frame),
                              rgb=ACTOR_COLOURS[str(rng.choice(list(ACTOR_COLOURS)))], height=height, modes=path.modes))
    return [smoke, flash, *victims], (first, last)


def _test_road_accident(rng, n_frames, layout):
    first, last = _event_span(rng, n_frames)
    colours = _Colours(rng)
    contact_x = rng.uniform(110, WIDTH - 110)
    paths, cars, contact, effects = _crash(rng, layout, first, last, contact_x=contact_x, from_edges=True,
                                           speed_px_frame=rng.uniform(6.0, 8.0))
    actors = []
    for path, (facing, tilts) in zip(paths, cars):
        # after the event the wrecks are straightened and driven back out at normal speed
        half_w, half_h = car_half_extent(0.0)
        path.jump(path.x, path.y, half_w, half_h, "drive", -facing)
        exit_x = -half_w - 2 if facing > 0 else WIDTH + half_w + 2
        path.go(path.frame + int(abs(exit_x - path.x) / 1.2), exit_x, path.y)
        actors.append(Car(path.track, first, min(n_frames - 1, path.frame), rgb=ACTOR_COLOURS[colours.take()],
                          facing=facing, tilts=[*tilts, (last + 1, 0.0)]))
    return [*actors, *effects], (first, last)


def _test_stealing(rng, n_frames, layout):
    first, last = _event_span(rng, n_frames)
    colours = _Colours(rng)
    edge = -30.0 if rng.uniform() < 0.5 else WIDTH + 30.0
    actors, _, _, _, event = _stealing(rng, layout, colours, first, walk_in_from=edge, last=last, leave=True,
                                       n_frames=n_frames)
    return actors, event


TEST_SCRIPTS = {"Fighting": _test_fighting, "Explosion": _test_explosion,
                "RoadAccidents": _test_road_accident, "Stealing": _test_stealing}


def _bag_on_ground(rng, layout: Layout, first: int, last: int) -> Bag:
    """A bag lying still: normal scenery too, so that only a bag carried off means stealing."""
    x = rng.uniform(40, WIDTH - 40)
    y = rng.uniform(layout.feet_top, layout.feet_bottom) - BAG_SIZE[1] / 2
    colour = str(rng.choice(list(BAG_COLOURS)))
    return Bag(Track().add(first, x, y, BAG_SIZE[0] / 2, BAG_SIZE[1] / 2), first, last, rgb=BAG_COLOURS[colour])


def _test_normal(rng, n_frames, layout):
    actors: list[Actor] = []
    if rng.uniform() < 0.5:
        actors.append(_bag_on_ground(rng, layout, 0, n_frames - 1))
    if rng.uniform() < 0.5:  # a car driving through
        direction = int(rng.choice([-1, 1]))
        half_w, half_h = car_half_extent(0.0, direction)
        lane_y = (layout.road_top + layout.road_bottom) / 2 + (8 if direction > 0 else -8)
        x0, x1 = -half_w - 2, WIDTH + half_w + 2
        if direction < 0:
            x0, x1 = x1, x0
        start = int(rng.integers(0, max(1, n_frames - 200)))
        path = _Path(start, x0, lane_y, half_w, half_h, "drive", direction)
        path.go(start + int(abs(x1 - x0) / rng.uniform(1.3, 2.0)), x1, lane_y)
        actors.append(Car(path.track, start, min(n_frames - 1, path.frame),
                          rgb=ACTOR_COLOURS[str(rng.choice(list(ACTOR_COLOURS)))], facing=direction))
    return actors, None


# --- planning the whole dataset ---------------------------------------------------------------

def _frames(rng, seconds: tuple[float, float]) -> int:
    return int(round(rng.uniform(*seconds) * FPS))


def _scene_cycle(rng, count: int) -> list[str]:
    """Scenes for `count` videos of one class: every scene equally often, in shuffled order."""
    scenes = [SCENES[k % len(SCENES)] for k in range(count)]
    return [str(s) for s in rng.permutation(scenes)]


def plan_dataset(seed: int = embedded.SYNTH_SEED, size: str = "default") -> list[ClipPlan]:
    """Every video of the dataset, with its actors and annotations (nothing rendered yet)."""
    if size not in SIZES:
        raise ValueError(f"unknown dataset size {size!r}: use one of {sorted(SIZES)}")
    profile = SIZES[size]
    order_rng = np.random.default_rng([seed, 1])
    plans: list[ClipPlan] = []

    # scenes cycle separately over single and windowed videos: every scene holds as many records
    normal_scenes = _scene_cycle(order_rng, profile.normal_clips) + _scene_cycle(order_rng, profile.normal_windowed)
    for k in range(profile.normal_clips + profile.normal_windowed):
        name = f"Normal_Videos{FIRST_TRAIN_NUMBER + k}_x264.mp4"
        rng = _video_rng(seed, name)
        windows = 1 if k < profile.normal_clips else 2
        n_frames = sum(_frames(rng, profile.train_seconds) for _ in range(windows))
        n_frames -= n_frames % windows  # windows split on a whole frame
        scene = normal_scenes[k]
        actors, records = _train_normal(rng, n_frames, SCENE_LAYOUTS[scene], windows)
        plans.append(ClipPlan(f"videos/{TRAIN_NORMAL_DIR}/{name}", NORMAL, "train", scene, n_frames,
                              int(rng.integers(1 << 30)), actors, records))

    for label in CLASSES:
        scenes = _scene_cycle(order_rng, profile.clips_per_class)
        for k in range(profile.clips_per_class):
            name = f"{label}{FIRST_TRAIN_NUMBER + k}_x264.mp4"
            rng = _video_rng(seed, name)
            n_frames = _frames(rng, profile.train_seconds)
            actors, records = TRAIN_SCRIPTS[label](rng, n_frames, SCENE_LAYOUTS[scenes[k]])
            plans.append(ClipPlan(f"videos/{label}/{name}", label, "train", scenes[k], n_frames,
                                  int(rng.integers(1 << 30)), actors, records))

    test_labels = list(profile.test_classes) + [NORMAL] * profile.test_normals
    test_scenes = _scene_cycle(order_rng, len(test_labels))
    counters: dict[str, int] = {}
    for label, scene in zip(test_labels, test_scenes):
        number = FIRST_TEST_NUMBER + counters.setdefault(label, 0)
        counters[label] += 1
        if label == NORMAL:
            name, folder = f"Normal_Videos_{number}_x264.mp4", TEST_NORMAL_DIR
        else:
            name, folder = f"{label}{number}_x264.mp4", label
        rng = _video_rng(seed, name)
        n_frames = _frames(rng, profile.test_seconds)
        layout = SCENE_LAYOUTS[scene]
        script = _test_normal if label == NORMAL else TEST_SCRIPTS[label]
        actors, event = script(rng, n_frames, layout)
        event_actors = [a for a in actors if isinstance(a, EVENT_ACTOR_KINDS)] if event else []
        actors = _passers_by(rng, layout, n_frames) + actors
        plans.append(ClipPlan(f"videos/{folder}/{name}", label, "test", scene, n_frames,
                              int(rng.integers(1 << 30)), actors, event=event, event_actors=event_actors))
    return plans


# --- annotations --------------------------------------------------------------------------------

# Actors whose track box encloses what they draw (smoke rises above its track and debris
# scatters around it, so their boxes would not say where they are).
EVENT_ACTOR_KINDS = (Person, Car, Flash, Burst, Bag)


def _box(region: RegionPlan, frame: int) -> list[float]:
    """The region's box on `frame` in 0..1: the sprite's box grown by its jitter and the margin."""
    return _actor_box(region.actor, frame)


def _actor_box(actor: Actor, frame: int) -> list[float]:
    cx, cy, half_w, half_h = actor.track.at(frame)
    grow = actor.jitter_px + BOX_MARGIN_PX
    x1, x2 = (cx - half_w - grow) / WIDTH, (cx + half_w + grow) / WIDTH
    y1, y2 = (cy - half_h - grow) / HEIGHT, (cy + half_h + grow) / HEIGHT
    return [round(float(np.clip(v, 0.0, 1.0)), 6) for v in (x1, y1, x2, y2)]


def _check_in_frame(plan: ClipPlan, region: RegionPlan, first: int, last: int) -> None:
    """Annotated actors stay inside the frame, so clipping never bends an interpolated box."""
    for frame in region.actor.track.breakpoints_within(first, last):
        cx, cy, half_w, half_h = region.actor.track.at(frame)
        grow = region.actor.jitter_px
        if cx - half_w - grow < 0 or cx + half_w + grow > WIDTH or cy - half_h - grow < 0 or cy + half_h + grow > HEIGHT:
            raise AssertionError(f"{plan.video}: region {region.caption!r} leaves the frame at frame {frame} "
                                 f"(centre {cx:.1f},{cy:.1f} half size {half_w:.1f},{half_h:.1f}): a generator bug")


_CHINESE_COLOURS = {"red": "红色", "green": "绿色", "blue": "蓝色", "magenta": "洋红色", "cyan": "青色", "orange": "橙色"}
_CHINESE_SIDES = {"left": "左", "right": "右"}
_CHINESE_PATTERNS = (
    (re.compile(r"A surveillance video of explosion: a bright flash bursts and a person runs away( while another person walks by)?\."),
     lambda m: "一段爆炸的监控视频：一道强光炸开，一个人跑开" + ("，另一个人从旁边走过" if m.group(1) else "") + "。"),
    (re.compile(r"a (big|small) (\w+) explosion flash"),
     lambda m: f"一团{'巨大' if m.group(1) == 'big' else '小小'}的{_CHINESE_COLOURS[m.group(2)]}爆炸火光"),
    (re.compile(r"a (\w+) person running away"), lambda m: f"一个{_CHINESE_COLOURS[m.group(1)]}的人在跑开"),
    (re.compile(r"a (\w+) person standing still"), lambda m: f"一个{_CHINESE_COLOURS[m.group(1)]}的人站着不动"),
    (re.compile(r"a (\w+) person walking (left|right)"),
     lambda m: f"一个{_CHINESE_COLOURS[m.group(1)]}的人向{_CHINESE_SIDES[m.group(2)]}走"),
)


def chinese_caption(english: str) -> str:
    """The Chinese version of one of the generator's captions of a Chinese-captioned class."""
    for pattern, chinese in _CHINESE_PATTERNS:
        match = pattern.fullmatch(english)
        if match:
            return chinese(match)
    raise AssertionError(f"no Chinese version of the caption {english!r}: add its pattern to _CHINESE_PATTERNS")


def train_records(plans: list[ClipPlan]) -> tuple[list[dict], list[dict]]:
    """The records of train.json and, in step, the actors.json entries (colour per region)."""
    records, actor_entries = [], []
    for plan in plans:
        if plan.split != "train":
            continue
        for record in plan.records:
            first, last = record.window if record.window else (0, plan.n_frames - 1)
            box_infos = []
            for region in record.regions:
                lo, hi = max(first, region.actor.first), min(last, region.actor.last)
                _check_in_frame(plan, region, lo, hi)
                box_infos.append([{"frame": f, "bbox": _box(region, f)}
                                  for f in region.actor.track.breakpoints_within(lo, hi)])
            language = chinese_caption if plan.label in CHINESE_CAPTIONED_CLASSES else str
            entry = {
                "video": plan.video,
                "global_caption": language(record.global_caption),
                "region_captions": [language(r.caption) for r in record.regions],
                "box_infos": box_infos,
                "timestamps": ([round(first / FPS, 4), round((last + 1) / FPS, 4)] if record.window else None),
            }
            if record.with_negatives:
                entry["hard_negatives"] = [[language(n) for n in r.negatives] for r in record.regions]
            actor_entries.append({
                "record_index": len(records),
                "video": plan.video,
                "regions": [{"caption": language(r.caption), "kind": r.kind, "rgb": list(r.rgb)} for r in record.regions],
            })
            records.append(entry)
    return records, actor_entries


def test_split_lines(plans: list[ClipPlan]) -> list[str]:
    """Anomaly_Test.txt lines (`Class/Name_x264.mp4`, relative to embedded.TEST_VIDEO_ROOT)."""
    return [plan.video.removeprefix("videos/") for plan in plans if plan.split == "test"]


def temporal_annotation_lines(plans: list[ClipPlan]) -> list[str]:
    """Official UCF-Crime ground truth: name, class, start1, end1, start2, end2 (-1 = none).

    Frames are 0-based and inclusive: the event covers frames start1..end1.
    """
    lines = []
    for plan in plans:
        if plan.split != "test":
            continue
        start, end = plan.event if plan.event else (-1, -1)
        lines.append(f"{Path(plan.video).name}  {plan.label}  {start}  {end}  -1  -1  ")
    return lines


# --- rendering ------------------------------------------------------------------------------------

def test_event_boxes(plans: list[ClipPlan]) -> dict[str, dict[int, list[list[float]]]]:
    """Per anomalous test video (file name), per frame of its event: the boxes of the event's
    actors visible on that frame, in 0..1 (clipped to the frame; none for an actor wholly outside it)."""
    min_side = (1.0 / WIDTH, 1.0 / HEIGHT)  # at least a pixel of the actor inside the frame
    videos = {}
    for plan in plans:
        if plan.split != "test" or plan.event is None:
            continue
        first, last = plan.event
        frames = {}
        for frame in range(first, last + 1):
            boxes = [_actor_box(actor, frame) for actor in plan.event_actors if actor.visible(frame)]
            frames[frame] = [b for b in boxes if b[2] - b[0] >= min_side[0] and b[3] - b[1] >= min_side[1]]
        videos[Path(plan.video).name] = frames
    return videos


def ffmpeg_executable() -> str:
    """The ffmpeg binary, found the way stage 1 finds it (PATH, else the imageio-ffmpeg wheel)."""
    from pipeline.decode import find_ffmpeg

    return find_ffmpeg()


def render_frames(plan: ClipPlan):
    """Yield the clip's frames, (240, 320, 3) uint8 RGB, one at a time."""
    background = make_background(plan.scene, np.random.default_rng(plan.background_seed))
    for frame in range(plan.n_frames):
        img = background.copy()
        for actor in plan.actors:
            if actor.visible(frame):
                actor.draw(img, frame)
        yield img


def encode_video(plan: ClipPlan, path: Path, ffmpeg: str) -> None:
    """Pipe the clip's raw RGB frames into ffmpeg: H.264, yuv420p, 30 fps, reproducible bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "-",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
               "-threads", "1", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
               "-movflags", "+faststart", "-f", "mp4", str(path)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for img in render_frames(plan):
            process.stdin.write(img.tobytes())
        process.stdin.close()
    except BrokenPipeError:
        pass
    stderr = process.stderr.read().decode(errors="replace")
    if process.wait() != 0:
        raise RuntimeError(f"ffmpeg failed writing {path} (exit {process.returncode}): {stderr.strip()[-500:]}")


def _encode_one(args: tuple[ClipPlan, str, str]) -> str:
    plan, path, ffmpeg = args
    encode_video(plan, Path(path), ffmpeg)
    return path


# --- the whole dataset ----------------------------------------------------------------------------

def generator_digest() -> str:
    """A digest of the generator's source: a dataset written by other code is not reused."""
    digest = hashlib.sha256()
    for module in (__file__, synth_scenes.__file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()[:16]


def is_complete(out_dir: Path, seed: int, size: str) -> bool:
    """True when `out_dir` holds a whole dataset generated with this seed, size and generator code."""
    stamp = Path(out_dir) / COMPLETE_NAME
    try:
        info = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return info.get("seed") == seed and info.get("size") == size and info.get("generator") == generator_digest()


def summary(out_dir: Path) -> dict:
    """The completion stamp of a generated dataset: seed, size, counts, generation time."""
    return json.loads((Path(out_dir) / COMPLETE_NAME).read_text())


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def generate_dataset(out_dir: Path = embedded.SYNTH_DIR, seed: int = embedded.SYNTH_SEED, *,
                     size: str = "default", force: bool = False, workers: int | None = None) -> Path:
    """Write the embedded default dataset into `out_dir` (skipped when already complete).

    The files are written into a sibling `<out_dir>.partial-<pid>` directory that replaces
    `out_dir` only when whole, so an interrupted run leaves nothing half-written in place.
    Returns `out_dir`.
    """
    out_dir = Path(out_dir)
    if not force and is_complete(out_dir, seed, size):
        return out_dir
    started = time.perf_counter()
    plans = plan_dataset(seed, size)
    records, actor_entries = train_records(plans)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        ffmpeg = ffmpeg_executable()
        jobs = [(plan, str(partial / plan.video), ffmpeg) for plan in plans]
        workers = workers or min(2, os.cpu_count() or 1)
        if workers > 1 and len(jobs) > 1:
            # longest first, so the pool does not end waiting on one long test video
            jobs.sort(key=lambda job: -job[0].n_frames)
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                list(pool.map(_encode_one, jobs))
        else:
            for job in jobs:
                _encode_one(job)

        _write_text(partial / embedded.TRAIN_JSON.name, json.dumps(records, indent=2) + "\n")
        _write_text(partial / embedded.TEST_LIST.name, "\n".join(test_split_lines(plans)) + "\n")
        _write_text(partial / embedded.TEMPORAL_ANNOTATIONS.name, "\n".join(temporal_annotation_lines(plans)) + "\n")
        write_event_boxes(partial / embedded.TEST_EVENT_BOXES.name, test_event_boxes(plans))
        actors = {
            "width": WIDTH, "height": HEIGHT, "fps": FPS, "classes": list(CLASSES),
            "records": actor_entries,
            "videos": {plan.video: {"frames": plan.n_frames, "split": plan.split, "label": plan.label,
                                    "scene": plan.scene, "event": list(plan.event) if plan.event else None}
                       for plan in plans},
        }
        _write_text(partial / embedded.ACTORS_JSON.name, json.dumps(actors, indent=1) + "\n")
        stamp = {"seed": seed, "size": size, "generator": generator_digest(),
                 "train_records": len(records), "videos": len(plans),
                 "test_videos": sum(plan.split == "test" for plan in plans),
                 "frames": int(sum(p.n_frames for p in plans)),
                 "seconds_to_generate": round(time.perf_counter() - started, 1)}
        _write_text(partial / COMPLETE_NAME, json.dumps(stamp, indent=1) + "\n")

        old = out_dir.with_name(f"{out_dir.name}.old-{os.getpid()}")
        if out_dir.exists():
            out_dir.rename(old)
        partial.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out_dir
