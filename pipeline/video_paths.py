"""Where a record's `video` is on disk: plain relative paths, annotation-tool URLs, path maps.

A `video` value is one of

* a path relative to `--video-root` (`Abuse/Abuse001_x264.mp4`), or absolute;
* a Label Studio URL: `/data/local-files/?d=REL` (local storage; REL relative to the storage
  root, which is what `--video-root` names) or `/data/upload/N/FILE` (a file uploaded to
  project N; Label Studio keeps it as `media/upload/N/FILE`: `--video-root` names that
  `upload` folder, or a folder holding FILE itself). Both are URL-encoded (`%20` = space);
* anything else a `--path-map OLD=NEW` rewrites: the longest OLD that starts the path is
  replaced by NEW (tried before the rules above, so a map can also override them).

`resolve_video` returns the first candidate that is a file, and every path it tried, so an
unresolved video can be reported with them (stage 1's manifest lists them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LABEL_STUDIO_LOCAL = "/data/local-files/"
LABEL_STUDIO_UPLOAD = "/data/upload/"
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio's prefix of an uploaded file's name
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")  # tried for a name without extension


class PathMapError(ValueError):
    """A `--path-map` value that is not OLD=NEW."""


@dataclass(frozen=True)
class PathMap:
    """Prefix rewrites, longest prefix first (from `--path-map OLD=NEW`, repeatable)."""

    rules: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, values: list[str] | tuple[str, ...]) -> "PathMap":
        rules = []
        for value in values:
            old, sep, new = value.partition("=")
            if not sep or not old:
                raise PathMapError(f"--path-map {value!r}: expected OLD=NEW, e.g. "
                                   f"--path-map /mnt/nas/videos=/data/videos")
            rules.append((old, new))
        return cls(tuple(sorted(rules, key=lambda rule: -len(rule[0]))))

    def apply(self, video: str) -> str | None:
        for old, new in self.rules:
            if video.startswith(old):
                return new + video[len(old):]
        return None


def annotation_tool_path(video: str) -> list[str] | None:
    """The relative path(s) an annotation-tool URL stands for (first most likely), or None."""
    if video.startswith(LABEL_STUDIO_LOCAL):
        query = parse_qs(urlsplit(video).query)
        relative = query.get("d", [""])[0]  # parse_qs has decoded it already
        return [relative.lstrip("/")] if relative else None
    if video.startswith(LABEL_STUDIO_UPLOAD):
        rest = unquote(video[len(LABEL_STUDIO_UPLOAD):]).lstrip("/")
        project, _, name = rest.partition("/")
        return [rest, name] if name else [rest]
    return None


def logical_path(video: str) -> str:
    """The path a `video` value names, without annotation-tool URL wrapping: for names, classes and
    dataset markers (`/data/local-files/?d=MSAD/x/Assault_1.mp4` -> `MSAD/x/Assault_1.mp4`). An
    upload loses its project folder and the 8-hex-digit prefix Label Studio gives uploaded files
    (`/data/upload/12/4f1c2d3e-Fire_3.mp4` -> `Fire_3.mp4`)."""
    relative = annotation_tool_path(video)
    if relative is None:
        return video
    if video.startswith(LABEL_STUDIO_UPLOAD):
        return _UPLOAD_PREFIX.sub("", relative[-1].rsplit("/", 1)[-1])
    return relative[0]


_EXTENSION = re.compile(r"\.[A-Za-z0-9]{2,4}$")


def video_stem(video: str) -> str:
    """File name without folders and extension: `Abuse/Abuse028_x264.mp4` -> `Abuse028_x264`.

    Only a short alphanumeric extension is one: XD-Violence names hold dots
    (`Bad.Boys.1995__#01-11-55_01-12-40_label_B2-0-0`)."""
    name = logical_path(video).replace("\\", "/").rsplit("/", 1)[-1]
    return _EXTENSION.sub("", name)


@dataclass
class Resolution:
    video: str  # as written in the record
    path: Path | None  # the file found, None if none of `tried` exists
    tried: list[Path] = field(default_factory=list)

    def describe_tried(self) -> str:
        return ", ".join(str(p) for p in self.tried)


def candidate_paths(video: str, video_root: Path, path_map: PathMap = PathMap()) -> list[Path]:
    """Where `video` may be, in the order tried (see the module docstring)."""
    root = Path(video_root)
    mapped = path_map.apply(video)
    if mapped is not None:
        return [Path(mapped) if Path(mapped).is_absolute() else root / mapped]
    relative = annotation_tool_path(video)
    if relative is not None:
        return [root / r for r in relative]
    if not _EXTENSION.search(video):  # split lists of some datasets name videos without extension
        return [root / f"{video}{suffix}" for suffix in VIDEO_SUFFIXES]
    return [root / video]  # an absolute `video` stays absolute (Path joining)


def resolve_video(video: str, video_root: Path, path_map: PathMap = PathMap()) -> Resolution:
    tried = candidate_paths(video, video_root, path_map)
    for path in tried:
        if path.is_file():
            return Resolution(video, path, tried)
    return Resolution(video, None, tried)
