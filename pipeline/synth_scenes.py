"""What the embedded default dataset draws: scenes, sprites and their piecewise-linear tracks.

Every frame is a static textured background with actors painted on top, opaque and without
anti-aliasing, so that an actor's pixels keep one saturated colour that appears nowhere else
in its video (backgrounds, debris, smoke and flashes are unsaturated or use colours no actor
has). `pipeline.synth` scripts what happens (who moves where, when the anomaly starts) and
writes the files; this module only knows how things look.

Geometry: pixel (x, y) covers the square [x, x+1) x [y, y+1); an actor's `Track` gives, per
frame, the centre and half sizes of the box its sprite fills, in pixels. Tracks are piecewise
linear, so a box interpolated linearly between two breakpoints is the true box on every frame
in between: that is what makes sparse box keyframes exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

WIDTH, HEIGHT, FPS = 320, 240, 30  # UCF-Crime's geometry

# Actor colours: saturated and far apart (H.264 and yuv420p blur edges; tests find an actor by
# its colour). Backgrounds stay unsaturated, effects use white, yellow, orange and greys only.
ACTOR_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (25, 200, 40),
    "blue": (30, 60, 235),
    "magenta": (225, 30, 225),
    "cyan": (20, 215, 225),
}
BAG_COLOURS: dict[str, tuple[int, int, int]] = {"yellow": (245, 225, 0), "white": (245, 245, 245)}
WHITE = (255, 255, 255)
FLASH_YELLOW = (255, 235, 90)
FLASH_ORANGE = (250, 150, 30)
BURST_YELLOW = (255, 235, 0)
WINDOW_GREY = (55, 60, 66)
TYRE_BLACK = (18, 18, 18)
DEBRIS_GREYS = ((205, 205, 205), (120, 120, 120), (45, 45, 45))
SMOKE_GREYS = ((95, 95, 95), (135, 135, 135))

SCENES = ("street", "crossing", "parking lot", "plaza")


# --- tracks -----------------------------------------------------------------------------------

@dataclass
class Track:
    """Piecewise-linear box of a sprite: per breakpoint frame, (cx, cy, half_w, half_h) in px.

    Two breakpoints on consecutive frames make a jump (a pose change, a collision). Outside
    the breakpoints the value is held constant.
    """

    frames: list[int] = field(default_factory=list)
    values: list[tuple[float, float, float, float]] = field(default_factory=list)

    def add(self, frame: int, cx: float, cy: float, half_w: float, half_h: float) -> "Track":
        if self.frames and frame <= self.frames[-1]:
            raise ValueError(f"track breakpoints must increase: frame {frame} after {self.frames[-1]}")
        self.frames.append(int(frame))
        self.values.append((float(cx), float(cy), float(half_w), float(half_h)))
        return self

    def at(self, frame: float) -> np.ndarray:
        values = np.asarray(self.values)
        return np.array([np.interp(frame, self.frames, values[:, k]) for k in range(4)])

    def breakpoints_within(self, first: int, last: int) -> list[int]:
        """Frames in [first, last] where the motion may change: the breakpoints plus both ends."""
        inner = [f for f in self.frames if first < f < last]
        return sorted({first, last, *inner})


# --- drawing primitives (opaque, no anti-aliasing) --------------------------------------------

def fill_rect(img: np.ndarray, x1: int, y1: int, x2: int, y2: int, rgb) -> None:
    """Pixels x1 <= x < x2, y1 <= y < y2 (clipped to the image)."""
    h, w = img.shape[:2]
    x1, x2 = max(0, int(x1)), min(w, int(x2))
    y1, y2 = max(0, int(y1)), min(h, int(y2))
    if x1 < x2 and y1 < y2:
        img[y1:y2, x1:x2] = rgb


def _paste_mask(img: np.ndarray, x0: int, y0: int, mask: np.ndarray, rgb) -> None:
    h, w = img.shape[:2]
    mh, mw = mask.shape
    xa, ya = max(0, x0), max(0, y0)
    xb, yb = min(w, x0 + mw), min(h, y0 + mh)
    if xa >= xb or ya >= yb:
        return
    region = img[ya:yb, xa:xb]
    region[mask[ya - y0:yb - y0, xa - x0:xb - x0]] = rgb


def fill_disk(img: np.ndarray, cx: float, cy: float, radius: float, rgb) -> None:
    """Pixels whose centre lies within `radius` of (cx, cy)."""
    x0, y0 = int(np.floor(cx - radius)), int(np.floor(cy - radius))
    x1, y1 = int(np.ceil(cx + radius)), int(np.ceil(cy + radius))
    ys, xs = np.mgrid[y0:y1, x0:x1]
    mask = (xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= radius * radius
    _paste_mask(img, x0, y0, mask, rgb)


def fill_polygon(img: np.ndarray, points: np.ndarray, rgb) -> None:
    """Pixels whose centre lies inside the polygon (even-odd rule); points (N, 2) as x, y."""
    points = np.asarray(points, dtype=np.float64)
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    px, py = xs + 0.5, ys + 0.5
    inside = np.zeros(px.shape, dtype=bool)
    for (xa, ya), (xb, yb) in zip(points, np.roll(points, -1, axis=0)):
        if ya == yb:
            continue
        crosses = (ya > py) != (yb > py)
        x_at = xa + (py - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (px < x_at)
    _paste_mask(img, x0, y0, inside, rgb)


def fill_radial(img: np.ndarray, cx: float, cy: float, radius_of_angle, layers) -> None:
    """Star-like blobs: pixels with distance < scale * radius_of_angle(angle), per (scale, rgb) layer."""
    r_max = float(np.max(radius_of_angle(np.linspace(-np.pi, np.pi, 181))))
    x0, y0 = int(np.floor(cx - r_max)), int(np.floor(cy - r_max))
    x1, y1 = int(np.ceil(cx + r_max)), int(np.ceil(cy + r_max))
    ys, xs = np.mgrid[y0:y1, x0:x1]
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    distance = np.hypot(dx, dy)
    boundary = radius_of_angle(np.arctan2(dy, dx))
    for scale, rgb in layers:
        _paste_mask(img, x0, y0, distance < scale * boundary, rgb)


def even(value: float) -> int:
    """Nearest even integer: sprites sit on the 2x2 grid of yuv420p chroma, so colours stay crisp."""
    return 2 * int(round(value / 2.0))


# --- backgrounds ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """Where things may move in a scene: the road band (cars) and the band of persons' feet."""

    road_top: int
    road_bottom: int
    feet_top: int = 120
    feet_bottom: int = 234


SCENE_LAYOUTS = {
    "street": Layout(road_top=150, road_bottom=206),
    "crossing": Layout(road_top=140, road_bottom=196),
    "parking lot": Layout(road_top=160, road_bottom=216),
    "plaza": Layout(road_top=172, road_bottom=228),
}


def _grey_texture(rng: np.random.Generator, shape: tuple[int, int], level: float, spread: float) -> np.ndarray:
    coarse = rng.normal(0.0, spread, size=(shape[0] // 4 + 1, shape[1] // 4 + 1))
    coarse = np.kron(coarse, np.ones((4, 4)))[: shape[0], : shape[1]]
    fine = rng.normal(0.0, spread * 0.5, size=shape)
    return level + coarse + fine


def make_background(scene: str, rng: np.random.Generator) -> np.ndarray:
    """A static (240, 320, 3) uint8 scene: buildings at the top, ground, a road band.

    Everything is nearly grey (channel differences below ~25) and darker than the white of
    effects, so no background pixel can be taken for an actor.
    """
    layout = SCENE_LAYOUTS[scene]
    tint = {"street": (4, 2, 0), "crossing": (0, 2, 4), "parking lot": (2, 2, 2), "plaza": (8, 4, -2)}[scene]
    ground_level = {"street": 140, "crossing": 128, "parking lot": 105, "plaza": 150}[scene]
    grey = _grey_texture(rng, (HEIGHT, WIDTH), ground_level, 6.0)

    if scene == "plaza":  # tiles
        ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
        grey[(xs % 24 == 0) | (ys % 16 == 0)] -= 28
    road_noise = _grey_texture(rng, (layout.road_bottom - layout.road_top, WIDTH), 82, 5.0)
    grey[layout.road_top:layout.road_bottom] = road_noise
    grey[layout.road_top - 3:layout.road_top] = 175  # curbs
    grey[layout.road_bottom:layout.road_bottom + 3] = 175

    lane_y = (layout.road_top + layout.road_bottom) // 2
    if scene == "crossing":
        zebra_x = int(rng.integers(60, 220))
        for k in range(6):
            y = layout.road_top + 4 + k * 9
            grey[y:y + 5, zebra_x:zebra_x + 40] = 185
    elif scene == "parking lot":
        for x in range(int(rng.integers(0, 20)), WIDTH, 40):
            grey[118:layout.road_top - 6, x:x + 2] = 180
            grey[layout.road_bottom + 6:HEIGHT, x:x + 2] = 180
    if scene != "crossing":
        for x in range(int(rng.integers(0, 30)), WIDTH, 36):
            grey[lane_y - 1:lane_y + 1, x:x + 18] = 180

    # buildings along the top: facades with rows of dark windows, doors
    horizon = int(rng.integers(96, 112))
    grey[:horizon] = _grey_texture(rng, (horizon, WIDTH), 112, 4.0)
    x = 0
    while x < WIDTH:
        facade_w = int(rng.integers(50, 110))
        level = float(rng.uniform(95, 140))
        grey[: horizon, x:x + facade_w] = _grey_texture(rng, (horizon, min(facade_w, WIDTH - x)), level, 3.0)
        for wy in range(int(rng.integers(6, 14)), horizon - 30, 22):
            for wx in range(x + 6, x + facade_w - 14, 18):
                grey[wy:wy + 12, wx:wx + 10] = 62
        door_x = x + int(rng.integers(4, max(5, facade_w - 20)))
        grey[horizon - 26:horizon, door_x:door_x + 14] = 70
        x += facade_w + 2
    grey[horizon:horizon + 2] = 90

    # a few lamp posts and benches: static clutter that belongs to no class
    for _ in range(int(rng.integers(1, 4))):
        post_x = int(rng.integers(10, WIDTH - 10))
        grey[horizon - 20:horizon + 20, post_x:post_x + 3] = 60
        grey[horizon - 24:horizon - 18, post_x - 4:post_x + 7] = 185

    rgb = np.stack([grey + t for t in tint], axis=-1)
    return np.clip(rgb, 20, 190).astype(np.uint8)


# --- actors -----------------------------------------------------------------------------------

@dataclass
class Actor:
    """Something drawn on the frames. `track` gives its box; it is drawn on frames first..last.

    `jitter` (frames, 2) holds even pixel offsets added to the centre on each frame (fighting);
    `jitter_px` bounds them, so an annotated box is the track's box grown by `jitter_px`.
    """

    track: Track
    first: int
    last: int
    jitter: np.ndarray | None = None

    @property
    def jitter_px(self) -> int:
        return 0 if self.jitter is None else int(np.abs(self.jitter).max())

    def visible(self, frame: int) -> bool:
        return self.first <= frame <= self.last

    def draw(self, img: np.ndarray, frame: int) -> None:
        cx, cy, half_w, half_h = self.track.at(frame)
        if self.jitter is not None:
            cx += self.jitter[frame, 0]
            cy += self.jitter[frame, 1]
        self._draw(img, frame, even(cx), even(cy), half_w, half_h)

    def _draw(self, img, frame, cx, cy, half_w, half_h) -> None:
        raise NotImplementedError


@dataclass
class Mode:
    """From `start` on, a person has this pose ("walk", "run", "punch", "carry", "stand") and facing (+1 right)."""

    start: int
    pose: str
    facing: int


PERSON_HEIGHT_RANGE = (56, 66)  # 23-28 % of the frame height: visible at 112 px


def person_size(height: int) -> tuple[int, int]:
    """(body width, height) in px, both even."""
    return even(height * 0.44), even(height)


BAG_SIZE = (26, 18)


def _torso_half(body_w: int) -> int:
    return max(2, even(body_w * 0.42) // 2)


def _carry_reach(height: int) -> int:
    """From the body's centre to the outer edge of the bag held behind it (px, even offset)."""
    body_w, _ = person_size(height)
    reach = _torso_half(body_w) + 2 + BAG_SIZE[0]
    return reach + (body_w // 2 - reach) % 4  # the body's offset in the box stays even (chroma grid)


def person_half_extent(height: int, pose: str) -> tuple[float, float]:
    """Half width and height of the box a person's sprite fills in this pose."""
    body_w, h = person_size(height)
    if pose == "carry":  # body ahead, bag behind
        return (body_w / 2.0 + _carry_reach(height)) / 2.0, h / 2.0
    return body_w / 2.0, h / 2.0


def carry_body_offset(height: int) -> float:
    """How far ahead (along the facing) of the carry box's centre the body's centre is."""
    body_w, _ = person_size(height)
    return (_carry_reach(height) - body_w / 2.0) / 2.0


@dataclass
class Person(Actor):
    rgb: tuple[int, int, int] = (0, 0, 0)
    height: int = 60
    modes: list[Mode] = field(default_factory=list)
    bag_rgb: tuple[int, int, int] = BAG_COLOURS["yellow"]

    def mode_at(self, frame: int) -> Mode:
        current = self.modes[0]
        for mode in self.modes:
            if mode.start <= frame:
                current = mode
        return current

    def _draw(self, img, frame, cx, cy, half_w, half_h) -> None:
        mode = self.mode_at(frame)
        body_w, h = person_size(self.height)
        if mode.pose == "carry":  # the bag hangs from a hand behind the runner, inside the sprite's box
            bag_w, bag_h = BAG_SIZE
            cx = cx + mode.facing * int(round(carry_body_offset(self.height)))
            inner = cx - mode.facing * (_torso_half(body_w) + 2)
            outer = inner - mode.facing * bag_w
            bag_y = cy - h // 2 + int(h * 0.3)
            fill_rect(img, min(inner, outer), bag_y, max(inner, outer), bag_y + bag_h, self.bag_rgb)
            fill_rect(img, min(inner, cx), bag_y - 3, max(inner, cx), bag_y, self.rgb)  # the arm
        draw_person(img, cx, cy, body_w, h, self.rgb, mode.pose, mode.facing, frame)


def draw_person(img, cx: int, cy: int, body_w: int, h: int, rgb, pose: str, facing: int, frame: int) -> None:
    """A stick-figure person filling [cx -+ body_w/2] x [cy -+ h/2] at most."""
    top, bottom = cy - h // 2, cy + h // 2
    left, right = cx - body_w // 2, cx + body_w // 2
    head_r = h * 0.1
    fill_disk(img, cx, top + head_r, head_r, rgb)
    torso_half = _torso_half(body_w)
    shoulder_y = top + int(2 * head_r) + 1
    hip_y = top + int(h * 0.58)
    fill_rect(img, cx - torso_half, shoulder_y, cx + torso_half, hip_y, rgb)

    leg_w = max(3, int(body_w * 0.2))
    swing_max = body_w / 2.0 - leg_w  # feet stay inside the box
    rate, amplitude = {"walk": (0.35, 0.5), "run": (0.7, 1.0), "carry": (0.7, 1.0),
                       "punch": (0.9, 0.6), "stand": (0.0, 0.0)}[pose]
    swing = swing_max * amplitude * np.sin(frame * rate)
    for sign in (-1, 1):
        hip_x = cx + sign * (torso_half - leg_w / 2.0)
        foot_x = cx + sign * swing
        foot_x = min(max(foot_x, left + leg_w / 2.0), right - leg_w / 2.0)
        fill_polygon(img, [(hip_x - leg_w / 2, hip_y), (hip_x + leg_w / 2, hip_y),
                           (foot_x + leg_w / 2, bottom), (foot_x - leg_w / 2, bottom)], rgb)

    arm_w = 3
    if pose == "punch":  # alternate fists thrown to the edge of the box, toward the opponent
        front_y = shoulder_y + (2 if (frame // 4) % 2 == 0 else 8)
        fist_x = right if facing > 0 else left
        fill_rect(img, min(cx, fist_x), front_y, max(cx, fist_x), front_y + arm_w + 1, rgb)
        fill_rect(img, cx - facing * torso_half - (arm_w if facing > 0 else 0), shoulder_y - 6,
                  cx - facing * torso_half + (0 if facing > 0 else arm_w), shoulder_y + 6, rgb)
        return
    arm_swing = {"walk": 3.0, "run": 5.0, "carry": 4.0, "stand": 0.0}[pose] * np.sin(frame * rate)
    for sign in (-1, 1):
        shoulder_x = cx + sign * (torso_half + arm_w / 2.0)
        hand_x = shoulder_x + sign * arm_swing  # arms swing in opposition
        hand_x = min(max(hand_x, left + arm_w / 2.0), right - arm_w / 2.0)
        fill_polygon(img, [(shoulder_x - arm_w / 2, shoulder_y), (shoulder_x + arm_w / 2, shoulder_y),
                           (hand_x + arm_w / 2, hip_y + 2), (hand_x - arm_w / 2, hip_y + 2)], rgb)


CAR_SIZE = (84, 38)  # length, height (side view): 16 % of the frame height


def _car_outline(length: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Body and cabin polygons, wheel centres (car frame, centred, facing +x) and wheel radius."""
    half_l, half_h = length / 2.0, height / 2.0
    wheel_r = height * 0.2
    body_bottom = half_h - wheel_r * 0.8
    body = np.array([(-half_l, 0.0), (half_l, 0.0), (half_l, body_bottom), (-half_l, body_bottom)])
    cabin = np.array([(-half_l * 0.55, 0.0), (half_l * 0.45, 0.0), (half_l * 0.25, -half_h),
                      (-half_l * 0.45, -half_h)])
    wheels = np.array([(-half_l * 0.6, half_h - wheel_r), (half_l * 0.6, half_h - wheel_r)])
    return body, cabin, wheels, wheel_r


def _rotate(points: np.ndarray, angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return points @ rotation.T


def car_half_extent(angle_deg: float, facing: int = 1) -> tuple[float, float]:
    """Half width and height of the box a car fills at this tilt (centre = car centre)."""
    body, cabin, wheels, wheel_r = _car_outline(*CAR_SIZE)
    flip = np.array([facing, 1.0])
    points = np.vstack([_rotate(p * flip, angle_deg) for p in (body, cabin)])
    centres = _rotate(wheels * flip, angle_deg)
    half_w = max(np.abs(points[:, 0]).max(), np.abs(centres[:, 0]).max() + wheel_r)
    half_h = max(np.abs(points[:, 1]).max(), np.abs(centres[:, 1]).max() + wheel_r)
    return float(np.ceil(half_w)) + 1.0, float(np.ceil(half_h)) + 1.0


@dataclass
class Car(Actor):
    """A side-view car; `tilts` lists (start_frame, angle_deg): crashed cars are tilted."""

    rgb: tuple[int, int, int] = (0, 0, 0)
    facing: int = 1
    tilts: list[tuple[int, float]] = field(default_factory=lambda: [(0, 0.0)])

    def tilt_at(self, frame: int) -> float:
        angle = self.tilts[0][1]
        for start, value in self.tilts:
            if start <= frame:
                angle = value
        return angle

    def _draw(self, img, frame, cx, cy, half_w, half_h) -> None:
        body, cabin, wheels, wheel_r = _car_outline(*CAR_SIZE)
        flip = np.array([self.facing, 1.0])
        angle = self.tilt_at(frame)
        centre = np.array([cx, cy], dtype=np.float64)
        fill_polygon(img, _rotate(cabin * flip, angle) + centre, self.rgb)
        window = cabin * np.array([0.8, 0.7]) + np.array([0.0, -1.0])
        fill_polygon(img, _rotate(window * flip, angle) + centre, WINDOW_GREY)
        fill_polygon(img, _rotate(body * flip, angle) + centre, self.rgb)
        for wx, wy in _rotate(wheels * flip, angle) + centre:
            fill_disk(img, wx, wy, wheel_r, TYRE_BLACK)


FLASH_SPIKE = 0.35  # spikes reach (1 + FLASH_SPIKE) x the base radius


@dataclass
class Flash(Actor):
    """An explosion: layered orange / yellow / white blob with flickering spikes."""

    seed: int = 0

    def _draw(self, img, frame, cx, cy, half_w, half_h) -> None:
        base = half_w / (1.0 + FLASH_SPIKE)
        if base < 1.0:
            return
        rng = np.random.default_rng([self.seed, frame])
        phases = rng.uniform(0, 2 * np.pi, size=3)
        weights = rng.uniform(0.3, 1.0, size=3)

        def radius(theta):
            spikes = sum(w * np.abs(np.sin(k * theta + p)) for k, w, p in zip((3, 5, 7), weights, phases))
            return base * (1.0 + FLASH_SPIKE * spikes / weights.sum())

        fill_radial(img, cx, cy, radius, [(1.0, FLASH_ORANGE), (0.72, FLASH_YELLOW), (0.42, WHITE)])


@dataclass
class Burst(Actor):
    """The contact burst between two fighters: a flickering yellow and white star."""

    seed: int = 0

    def _draw(self, img, frame, cx, cy, half_w, half_h) -> None:
        rng = np.random.default_rng([self.seed, frame])
        outer = half_w * rng.uniform(0.75, 1.0)
        points = int(rng.integers(7, 10))
        angles = np.arange(2 * points) * np.pi / points + rng.uniform(0, np.pi)
        radii = np.where(np.arange(2 * points) % 2 == 0, outer, outer * 0.45)
        star = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
        fill_polygon(img, star, BURST_YELLOW)
        fill_disk(img, cx, cy, outer * 0.35, WHITE)


@dataclass
class Bag(Actor):
    """A bag standing on the ground (until someone takes it)."""

    rgb: tuple[int, int, int] = BAG_COLOURS["yellow"]

    def _draw(self, img, frame, cx, cy, half_w, half_h) -> None:
        w, h = BAG_SIZE
        fill_rect(img, cx - w // 2, cy - h // 2, cx + w // 2, cy + h // 2, self.rgb)
        fill_rect(img, cx - 3, cy - h // 2 - 4, cx + 3, cy - h // 2 - 2, self.rgb)


@dataclass
class Debris(Actor):
    """Fragments thrown from an impact point at frame `first`, landing within `spread` px."""

    seed: int = 0
    spread: float = 40.0
    pieces: int = 30

    def _draw(self, img, frame, cx, cy, half_w, half_h) -> None:
        rng = np.random.default_rng(self.seed)
        angles = rng.uniform(0, 2 * np.pi, self.pieces)
        distances = rng.uniform(0.3, 1.0, self.pieces) * self.spread
        sizes = rng.integers(4, 10, size=(self.pieces, 2))
        greys = rng.integers(0, len(DEBRIS_GREYS), self.pieces)
        progress = min(1.0, (frame - self.first) / 8.0)  # thrown out within 8 frames, then lying still
        for a, d, (w, h), g in zip(angles, distances, sizes, greys):
            x = cx + np.cos(a) * d * progress
            y = cy + abs(np.sin(a)) * d * 0.5 * progress + (1 - progress) * -6
            fill_rect(img, int(x), int(y), int(x) + int(w), int(y) + int(h), DEBRIS_GREYS[g])


@dataclass
class Smoke(Actor):
    """Grey puffs rising from a point (a wreck, a fire), cycling so the smoke never stops."""

    seed: int = 0

    def _draw(self, img, frame, cx, cy, half_w, half_h) -> None:
        rng = np.random.default_rng(self.seed)
        for k in range(8):
            period = int(rng.integers(40, 70))
            age = ((frame - self.first) + k * period // 8) % period / period
            x = cx + rng.uniform(-14, 14) + age * rng.uniform(-12, 12)
            y = cy - age * half_h * 2
            fill_disk(img, x, y, 5 + age * 13, SMOKE_GREYS[k % 2])
