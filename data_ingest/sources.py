"""Turning the command line's SOURCE arguments into a list of sources to process.

A SOURCE is a video file, a folder (searched recursively for videos and for folders of numbered frame images),
a URL, ``@list.txt`` (one URL per line, ``#`` comments), ``atari:GAME`` or ``procgen:GAME``. Arguments that
cannot be used become problems (reported, never fatal); files in folders that are not video are listed as ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from data_ingest.decode import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, numbered_images

SIDECAR_SUFFIX = ".actions.json"


@dataclass(frozen=True)
class SourceSpec:
    """One video to process. kind: "video" (a file), "frames" (numbered images), "atari" or "procgen" (a game to
    play)."""

    name: str  # how the manifest, the summary and the dataset call it; unique in a run
    kind: str
    path: str = ""  # the file, or the folder of frames; the game for atari and procgen
    frames: tuple[str, ...] = ()  # frame image paths in order (kind "frames")
    sidecar: str = ""  # <stem>.actions.json if present
    provenance: dict = field(default_factory=dict)  # e.g. url, title, uploader, license of a download
    runner: str = ""  # procgen: the Python that plays the game (where it runs, not what it yields: not hashed)


@dataclass
class Discovery:
    specs: list[SourceSpec] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (argument or path, reason)
    ignored: list[str] = field(default_factory=list)


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def discover(arguments: list[str], out_dir: Path) -> Discovery:
    """Expands SOURCE arguments. Paths inside ``out_dir`` are skipped (never ingest our own output)."""
    found = Discovery()
    seen_paths: set[Path] = set()
    out_dir = out_dir.resolve()
    for arg in arguments:
        if arg.startswith(("atari:", "procgen:")):
            kind, game = arg.split(":", 1)
            found.specs.append(SourceSpec(name=arg, kind=kind, path=game))
        elif is_url(arg):
            found.urls.append(arg)
        elif arg.startswith("@"):
            _read_url_list(arg, found)
        else:
            _add_path(arg, out_dir, found, seen_paths)
    found.urls = list(dict.fromkeys(found.urls))  # each URL once, first order kept
    return found


def sidecar_for(path: Path) -> str:
    """``<stem>.actions.json`` beside a video file (or beside a frame folder), if it exists."""
    stem = path.name if path.is_dir() else path.stem
    candidate = path.with_name(stem + SIDECAR_SUFFIX)
    return str(candidate) if candidate.is_file() else ""


def _read_url_list(arg: str, found: Discovery) -> None:
    path = Path(arg[1:])
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        found.problems.append((arg, f"cannot read the URL list: {exc.strerror or exc}"))
        return
    for number, line in enumerate(lines, 1):
        line = line.split(" #", 1)[0].strip()  # inline comments need a space before '#' (URLs may hold '#')
        if not line or line.startswith("#"):
            continue
        if is_url(line):
            found.urls.append(line)
        else:
            found.problems.append((f"{arg}:{number}", f"not an http(s) URL: {line!r}"))


def _add_path(arg: str, out_dir: Path, found: Discovery, seen: set[Path]) -> None:
    path = Path(arg)
    if not path.exists():
        found.problems.append((arg, "no such file or directory"))
        return
    if _inside(path.resolve(), out_dir):
        found.problems.append((arg, "is inside --out; the output is never ingested"))
        return
    if path.is_file():
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            _add_video(path, found, seen)
        else:
            exts = ", ".join(sorted(VIDEO_EXTENSIONS))
            found.problems.append((arg, f"not a video file ({exts}); frame images must be in a folder"))
        return
    walked = {path.resolve()}  # folders entered, so that a symlink loop is walked once
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):  # a linked folder is searched too
        here = Path(dirpath)
        # Sorted and hidden-free, so discovery (hence the dataset) is the same on every filesystem.
        dirnames[:] = [d for d in sorted(dirnames) if not d.startswith(".") and _enter(here / d, out_dir, walked)]
        files = [here / f for f in sorted(filenames) if not f.startswith(".")]
        frames = numbered_images(files)
        if frames:
            folder = here.resolve()
            if folder not in seen:
                seen.add(folder)
                found.specs.append(SourceSpec(name=here.as_posix(), kind="frames", path=str(here),
                                              frames=tuple(str(f) for f in frames), sidecar=sidecar_for(here)))
        frame_set = set(frames)
        for f in files:
            if f.suffix.lower() in VIDEO_EXTENSIONS:
                _add_video(f, found, seen)
            elif f not in frame_set and not f.name.endswith(SIDECAR_SUFFIX):
                found.ignored.append(f.as_posix())


def _add_video(path: Path, found: Discovery, seen: set[Path]) -> None:
    resolved = path.resolve()
    if resolved in seen:
        return
    seen.add(resolved)
    found.specs.append(SourceSpec(name=path.as_posix(), kind="video", path=str(path), sidecar=sidecar_for(path)))


def _enter(folder: Path, out_dir: Path, walked: set[Path]) -> bool:
    """Whether to search ``folder``: not inside --out, and not a folder already searched (through a link)."""
    resolved = folder.resolve()
    if _inside(resolved, out_dir) or resolved in walked:
        return False
    walked.add(resolved)
    return True


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


__all__ = ["IMAGE_EXTENSIONS", "SIDECAR_SUFFIX", "Discovery", "SourceSpec", "discover", "is_url", "sidecar_for"]
