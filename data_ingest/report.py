"""What an ingest tells the user: ``manifest.json`` (every source, by name) and a short human-readable summary."""

from __future__ import annotations

from collections import Counter
from typing import Any

from data_ingest.settings import IngestSettings

MANIFEST_FORMAT = "genie_ingest_manifest"
FRAME_DROP_REASONS = ("blank", "static", "short_segment", "not_in_clip", "near_duplicate")


def totals(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over sources: statuses, frames and why they were dropped, clips and why they were dropped."""
    status = Counter(r["status"] for r in results)
    frames: Counter = Counter()
    dropped: Counter = Counter()
    clips: Counter = Counter()
    for r in results:
        frames.update(r.get("frames", {}))
        dropped.update(r.get("dropped_frames", {}))
        clips.update(r.get("clips", {}))
    return {"sources": {k: status[k] for k in ("ok", "dropped", "failed")},
            "reused": sum(bool(r.get("reused")) for r in results),
            "frames": dict(frames), "dropped_frames": {k: dropped[k] for k in FRAME_DROP_REASONS},
            "clips": dict(clips)}


def ingest_manifest(*, arguments: list[str], settings: IngestSettings, split_options: dict[str, Any],
                    results: list[dict[str, Any]], ignored: list[str], dataset: dict[str, Any] | None,
                    error: str) -> dict[str, Any]:
    """The contents of ``manifest.json``. ``dataset`` is the written dataset's summary (None if none was)."""
    return {
        "format": MANIFEST_FORMAT, "version": 1,
        "arguments": arguments, "settings": settings.to_dict(), "split": split_options,
        "dataset": dataset, "error": error,
        "totals": totals(results),
        "sources": sorted(results, key=lambda r: r["name"]),
        "ignored": ignored,
    }


def summary_text(manifest: dict[str, Any], out_dir: str) -> str:
    """A few lines for a person: what was written, what was dropped and why, and every failure by name."""
    t, s = manifest["totals"], manifest["settings"]
    counts = t["sources"]
    lines = [f"genie ingest -> {out_dir}",
             (f"sources: {counts['ok']} ingested, {counts['dropped']} dropped, {counts['failed']} failed "
              f"({t['reused']} already staged, not redone); {len(manifest['ignored'])} file(s) ignored (not video)")]
    ds = manifest["dataset"]
    if ds:
        clips = ", ".join(f"{k} {v}" for k, v in ds["num_clips"].items())
        lines.append(f"dataset: {clips} clips of {s['clip_len']} frames at {s['height']}x{s['width']}, "
                     f"{s['fps']:g} fps (fingerprint {ds['fingerprint'][:12]})")
    else:
        lines.append(f"dataset: not written: {manifest['error']}")
    f, d = t["frames"], t["dropped_frames"]
    lines.append(f"frames: {f.get('decoded', 0)} in the sources, {f.get('resampled', 0)} at {s['fps']:g} fps, "
                 f"{f.get('kept', 0)} kept; dropped: " + ", ".join(f"{k.replace('_', ' ')} {d[k]}" for k in d))
    c = t["clips"]
    lines.append(f"clips: {c.get('written', 0)} written; dropped: low quality {c.get('low_quality', 0)}, "
                 f"near-duplicate {c.get('near_duplicate', 0)}")
    for status in ("failed", "dropped"):
        bad = [r for r in manifest["sources"] if r["status"] == status]
        if bad:
            lines.append(f"{status}:")
            lines.extend(f"  {r['name']}: {r['reason']}" for r in bad)
    moved = [r for r in manifest["sources"] if r.get("was_train")]
    if moved and ds:
        lines.append("warning: in train in the dataset this one replaces, now held out (a model trained on that "
                     "dataset has seen them):")
        lines.extend(f"  {r['name']}: {r['split']}" for r in moved)
    text = "\n".join(lines) + "\n"
    # A file name that is not UTF-8 (its bytes kept as surrogates) is shown escaped: the text must encode.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


__all__ = ["FRAME_DROP_REASONS", "MANIFEST_FORMAT", "ingest_manifest", "summary_text", "totals"]
