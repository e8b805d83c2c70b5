"""Downloading video URLs with yt-dlp's Python API into the ingest work area (``<out>/.ingest/downloads``).

Each finished video gets a record (file, URL, title, uploader, licence) written atomically after its download,
and each finished URL (a video or a whole playlist) a record listing its videos: a rerun skips both without
touching the network. yt-dlp's own download archive additionally skips finished playlist entries when a URL was
interrupted halfway; there is one per URL (``archives/<url hash>.txt``), because yt-dlp knows a plain file by
its name alone, and two sites' "video.mp4" must not pass for one video. Failures are retried with exponential
backoff, then reported, never raised.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_ingest.atomic import write_json_atomic
from data_ingest.sources import SourceSpec

PROVENANCE_FIELDS = ("webpage_url", "title", "uploader", "license", "extractor", "id", "duration", "upload_date")
_PERMANENT = ("HTTP Error 4", "Unsupported URL", "is not a valid URL", "Video unavailable", "Private video")


@dataclass(frozen=True)
class DownloadSettings:
    """max_height: largest picture height worth downloading (the format closest to it from below is chosen)."""

    max_height: int = 144
    rate_limit: str = ""  # bytes per second, yt-dlp syntax ("500K", "4M"); "" = unlimited
    retries: int = 3  # attempts after the first, per URL, with backoff retry_wait * 2**attempt seconds
    retry_wait: float = 2.0
    socket_timeout: float = 20.0

    def __post_init__(self) -> None:
        """ValueError naming the option: checked when the run starts, not when the first URL is fetched."""
        if self.rate_limit and rate_bytes(self.rate_limit) is None:
            raise ValueError(f"--rate-limit {self.rate_limit!r} is not a byte rate such as 500K or 4M")
        if self.retries < 0 or not 0 <= self.retry_wait < math.inf:
            raise ValueError(f"--download-retries must be >= 0 and --retry-wait >= 0 and finite, got "
                             f"{self.retries} and {self.retry_wait}")
        if not 0 < self.socket_timeout < math.inf:
            raise ValueError(f"socket_timeout must be > 0 and finite, got {self.socket_timeout}")


def rate_bytes(text: str) -> int | None:
    """A byte rate in yt-dlp's syntax (a number and an optional binary K, M, G... unit) in bytes, or None."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGTPEZY]?)", text.strip().upper())
    try:
        return None if match is None else round(float(match[1]) * 1024 ** " KMGTPEZY".index(match[2] or " "))
    except OverflowError:  # more digits than a float holds
        return None


def download_all(urls: list[str], cache: Path, settings: DownloadSettings,
                 log: Callable[[str], None] = lambda _: None) -> Iterator[tuple[str, list[SourceSpec], str]]:
    """For each URL yields (url, video sources, error); error is "" on success. Never raises for a bad URL."""
    import yt_dlp  # deferred: only a run with URLs pays for the import

    for folder in ("videos", "urls", "archives"):
        (cache / folder).mkdir(parents=True, exist_ok=True)
    for url in urls:
        done = _url_record(cache, url)
        if done is not None:
            yield url, done, ""
            continue
        # One downloader per URL, its files and archive named by the URL's hash: two sites' "video.mp4" never collide.
        with yt_dlp.YoutubeDL(_options(cache, settings, prefix=_short_hash(url))) as ydl:
            specs, error = _with_retries(functools.partial(_download_url, ydl, url, cache), url, settings, log)
        if not error:
            write_json_atomic(cache / "urls" / f"{_short_hash(url)}.json",
                              {"url": url, "records": [s.provenance["record"] for s in specs]})
        yield url, specs, error


def _with_retries(fetch: Callable[[], list[SourceSpec]], url: str, settings: DownloadSettings,
                  log: Callable[[str], None]) -> tuple[list[SourceSpec], str]:
    """Runs ``fetch`` up to 1 + retries times, waiting retry_wait * 2**attempt between; permanent errors
    (404, unsupported URL...) are not retried. Returns (sources, "") or ([], the last error)."""
    for attempt in range(settings.retries + 1):
        try:
            return fetch(), ""
        except Exception as exc:  # noqa: BLE001 (yt-dlp raises DownloadError, ExtractorError, OSError...)
            error = _clean(str(exc))
            if attempt == settings.retries or any(p in error for p in _PERMANENT):
                return [], error
            wait = settings.retry_wait * 2 ** attempt
            log(f"download failed ({error}); retry {attempt + 1}/{settings.retries} in {wait:g} s: {url}")
            time.sleep(wait)
    return [], "no attempt made"


def format_selector(max_height: int) -> dict[str, Any]:
    """Video only (no audio needed), the smallest resolution at or above what the target size needs."""
    return {"format": "bv*/b/w", "format_sort": [f"res:{max_height}", "+size", "+br"]}


def _options(cache: Path, settings: DownloadSettings, prefix: str) -> dict[str, Any]:
    def backoff(n: int) -> float:
        return settings.retry_wait * 2 ** n

    opts: dict[str, Any] = {
        **format_selector(settings.max_height),
        # A relative template: yt-dlp puts finished files under "home" and half-downloaded ones under "temp" only
        # then (an absolute template overrides both, and .part files would sit among the videos).
        "outtmpl": {"default": f"{prefix}-%(extractor)s-%(id)s.%(ext)s"},
        "paths": {"home": str(cache / "videos"), "temp": str(cache / "partial")},
        "cachedir": str(cache / "yt-dlp-cache"),  # yt-dlp's own cache defaults to ~/.cache: keep it inside --out
        "download_archive": str(_archive(cache, prefix)),
        "restrictfilenames": True, "overwrites": False, "continuedl": True,
        "retries": settings.retries, "fragment_retries": settings.retries,
        "retry_sleep_functions": {"http": backoff, "fragment": backoff, "extractor": backoff},
        "socket_timeout": settings.socket_timeout,
        "quiet": True, "no_warnings": True, "noprogress": True, "logger": _QuietLogger(),
    }
    if settings.rate_limit:
        opts["ratelimit"] = rate_bytes(settings.rate_limit)
    return opts


def _archive(cache: Path, url_hash: str) -> Path:
    return cache / "archives" / f"{url_hash}.txt"


def _download_url(ydl: Any, url: str, cache: Path) -> list[SourceSpec]:
    info = ydl.extract_info(url, download=False)
    entries = [e for e in (info.get("entries") or [info]) if e]
    specs = []
    for entry in entries:
        archive_id = f"{(entry.get('extractor_key') or entry.get('extractor') or 'generic').lower()} {entry['id']}"
        key = _short_hash(f"{url} {archive_id}")
        record = _read_json(cache / "videos" / f"{key}.json")
        if record is None or not (cache / "videos" / record["file"]).is_file():
            result = ydl.process_ie_result(entry, download=True)
            downloads = result.get("requested_downloads") or [{}]
            path = Path(downloads[0].get("filepath") or ydl.prepare_filename(result))
            if not path.is_file():  # skipped by yt-dlp's archive (killed before our record was written)
                path = _finished_file(path)
                if path is None:
                    raise RuntimeError(f"yt-dlp's archive lists {archive_id!r} as downloaded but its file is missing "
                                       f"(deleted by hand?); delete its line from {_archive(cache, _short_hash(url))} "
                                       "to fetch it again")
            name = url if len(entries) == 1 else f"{url}#{entry['id']}"
            record = {"name": name, "record": key, "file": path.name, "archive_id": archive_id, "url": url,
                      **{k: entry.get(k) for k in PROVENANCE_FIELDS}}
            write_json_atomic(cache / "videos" / f"{key}.json", record)
        specs.append(_spec(cache, record))
    return specs


def _finished_file(guess: Path) -> Path | None:
    """The downloaded file a skipped entry left: yt-dlp names a skipped entry's file without knowing its extension
    (``name.NA``), so it is looked up by the rest of the name."""
    found = sorted(p for p in guess.parent.glob(f"{guess.stem}.*") if p.suffix not in (".json", ".part", ".NA"))
    return found[0] if found else None


def _url_record(cache: Path, url: str) -> list[SourceSpec] | None:
    """The videos of a URL finished in an earlier run, or None (not finished, or a file has gone)."""
    done = _read_json(cache / "urls" / f"{_short_hash(url)}.json")
    if done is None:
        return None
    records = [_read_json(cache / "videos" / f"{key}.json") for key in done["records"]]
    if any(r is None or not (cache / "videos" / r["file"]).is_file() for r in records):
        return None
    return [_spec(cache, r) for r in records]


def _spec(cache: Path, record: dict) -> SourceSpec:
    """A downloaded video as a source; the name is the URL (plus ``#id`` for a playlist's entries)."""
    return SourceSpec(name=record["name"], kind="video", path=str(cache / "videos" / record["file"]),
                      provenance=record)


class _QuietLogger:
    """yt-dlp talks a lot; errors come back as exceptions, so everything else is dropped."""

    def debug(self, msg: str) -> None: ...

    def info(self, msg: str) -> None: ...

    def warning(self, msg: str) -> None: ...

    def error(self, msg: str) -> None: ...


def _clean(message: str) -> str:
    message = message.removeprefix("ERROR: ")
    return message.split(" (caused by", 1)[0]


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


__all__ = ["PROVENANCE_FIELDS", "DownloadSettings", "download_all", "format_selector"]
