"""`genie ingest SOURCE... --out DIR` for real video: discover, download, process in parallel, build, report.

The run is resumable and idempotent: each source is staged atomically under ``DIR/.ingest`` (see staging.py)
and skipped once staged; the dataset is built from staged sources only, into a fresh directory, and committed by
renaming ``genie_dataset.json`` into place last. Kill it anywhere and run the same command again: finished
sources are reused, half-done ones redone, and the dataset comes out identical to an uninterrupted run's.
Nothing is written outside DIR.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_ingest.atomic import write_atomic, write_json_atomic
from data_ingest.clips import MANIFEST_NAME, check_split_options, stable_splits
from data_ingest.decode import SourceError, default_threads
from data_ingest.download import DownloadSettings, download_all
from data_ingest.process import GAME_KINDS, RESULT_VERSION, frames_in_clips, process_source
from data_ingest.report import ingest_manifest, summary_text
from data_ingest.settings import IngestSettings
from data_ingest.sources import SourceSpec, discover
from data_ingest.staging import WORK_DIR, StagedClips, clean_tmp, staged_arrays, staged_result, work_paths
from data_ingest.workers import exit_with_parent, pool_context

if TYPE_CHECKING:
    from data_ingest.clip_dataset import BuiltRecords

REPORT_NAME = "manifest.json"
SUMMARY_NAME = "summary.txt"
_RECORDS_DIR = re.compile(r"tfds-[0-9a-f]{12}|tfds")  # how builds name their records folders (synthetic: "tfds")


@dataclass(frozen=True)
class IngestOptions:
    settings: IngestSettings = field(default_factory=IngestSettings)
    download: DownloadSettings = field(default_factory=DownloadSettings)
    workers: int = 1
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    overwrite: bool = False
    episodes: int = 10  # per game source (atari:GAME, procgen:GAME)
    frames_per_episode: int = 1000
    procgen_levels: int = 10_000  # procgen levels are drawn from seeds 0..levels-1 (Genie: 10,000)
    procgen_mode: str = "hard"  # Procgen's distribution mode (Genie: hard)
    procgen_python: str = ""  # the Python with procgen2; "" = $GENIE_PROCGEN_PYTHON or the default environment
    beam_options: tuple[str, ...] = ()  # given: the dataset's clips are cut by an Apache Beam pipeline with these flags


@dataclass
class IngestReport:
    out_dir: Path
    manifest: dict[str, Any]
    summary: str

    @property
    def dataset_written(self) -> bool:
        return self.manifest["dataset"] is not None

    @property
    def exit_code(self) -> int:
        """0: all good; 1: a dataset was written but some source failed; 2: no dataset."""
        if not self.dataset_written:
            return 2
        return 1 if self.manifest["totals"]["sources"]["failed"] else 0


def ingest_video_sources(arguments: list[str], out_dir: str | Path, options: IngestOptions,
                         log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> IngestReport:
    """Runs a whole ingest (see the module docstring). Raises only for unusable arguments or output directory."""
    out = Path(out_dir).absolute()
    check_split_options(val_fraction=options.val_fraction, test_fraction=options.test_fraction, seed=options.seed)
    # The dataset writer (TFDS, ~0.5 s) is imported before the worker pool exists, not beside it in a thread: while
    # TFDS imports itself it swaps builtins.__import__ for a lazy one, and an import in any other thread (the pool's
    # own, in multiprocessing) then gets a placeholder module and fails.
    importlib.import_module("data_ingest.clip_dataset")
    with _locked_out_dir(out, options.overwrite, options.settings), _executor(options.workers) as pool:
        clean_tmp(out)
        found = discover(arguments, out)
        results = [_failed(name, "argument", reason) for name, reason in found.problems]
        specs, unplayable = _expand_games(found.specs, options)
        results += unplayable
        results += _process_all(specs, found.urls, out, options, pool, log)
        results = _unique_names(results)
        dataset, error = _build(out, results, options, pool, log)
        manifest = ingest_manifest(arguments=list(arguments), settings=options.settings,
                                   split_options={"val_fraction": options.val_fraction,
                                                  "test_fraction": options.test_fraction, "seed": options.seed},
                                   results=results, ignored=found.ignored, dataset=dataset, error=error)
        summary = summary_text(manifest, str(out))
        write_json_atomic(out / REPORT_NAME, manifest)
        write_atomic(out / SUMMARY_NAME, summary.encode())
        if dataset is not None:
            _commit_dataset(out, dataset)
            _prune_staged(out)
    return IngestReport(out, manifest, summary)


@contextlib.contextmanager
def _locked_out_dir(out: Path, overwrite: bool, settings: IngestSettings) -> Iterator[None]:
    """Checks that ``out`` may be used, creates the work area, and holds a lock so two runs never share it.

    The work area is made before an old dataset is deleted (``--overwrite``), so a run killed in between leaves
    an ingest that the next run resumes, not a folder it refuses."""
    work = out / WORK_DIR
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a directory")
    replace = False
    if out.is_dir() and any(out.iterdir()) and not work.is_dir():
        if not (out / MANIFEST_NAME).is_file():
            raise FileExistsError(f"--out {out} exists and is neither empty, a genie dataset, nor an earlier "
                                  "ingest; choose another --out (nothing there is deleted)")
        if not overwrite:
            raise FileExistsError(f"{out} already holds a genie dataset; pass --overwrite to replace it")
        replace = True
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    with open(work / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FileExistsError(f"another genie ingest is writing {out}; wait for it or choose another "
                                  "--out") from None
        if not overwrite:
            _check_same_settings(out, settings)
        if replace:
            _remove_dataset(out)
        if overwrite:  # redo every source; the download cache stays (it is not derived from settings)
            shutil.rmtree(work_paths(out)["staged"], ignore_errors=True)
        yield


def _check_same_settings(out: Path, settings: IngestSettings) -> None:
    """A rerun resumes or updates the dataset in ``out``; one with other processing settings would replace it,
    which only ``--overwrite`` may do. Compared with the settings the dataset there was made with, as it records
    them (a setting newer than the dataset counting as its default), or for an older dataset that does not, as
    :func:`_earlier_settings` finds them."""
    current = _current_dataset(out)
    if current is None:
        return
    now = {**settings.to_dict(), "stride": settings.clip_stride}  # (no --stride means --stride clip_len)
    earlier = current.get("ingest", {}).get("settings")
    if isinstance(earlier, dict):
        earlier = {**IngestSettings().to_dict(), **earlier}
    else:  # a dataset from before datasets recorded them: what it does not show is not compared
        earlier = {**now, **_earlier_settings(out, current)}
    earlier["stride"] = earlier["stride"] or earlier["clip_len"]
    changed = [f"{key} {earlier[key]!r} -> {now[key]!r}" for key in now if earlier[key] != now[key]]
    if changed:
        raise FileExistsError(f"{out} holds a dataset made with other settings ({', '.join(changed)}); pass "
                              "--overwrite to replace it, or choose another --out")


def _earlier_settings(out: Path, dataset: dict[str, Any]) -> dict[str, Any]:
    """The settings an older dataset (one that does not record them) was made with: those of the report of the run
    that wrote it, or else the few the dataset's manifest shows (size, clip length, stride, fps, resize)."""
    try:
        report = json.loads((out / REPORT_NAME).read_text())
        if report["dataset"]["fingerprint"] == dataset.get("fingerprint") and isinstance(report["settings"], dict):
            return report["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    shown = {key: dataset.get(key) for key in ("height", "width", "clip_len", "stride")}
    shown.update({key: dataset.get("ingest", {}).get(key) for key in ("fps", "resize")})
    return {key: value for key, value in shown.items() if value is not None}


def _records_dir_name(out: Path, tfds_dir: object) -> str | None:
    """The records folder directly under ``out`` that a dataset manifest's ``tfds_dir`` points into, or None if it
    points anywhere else: only a folder named as ingest names them ("tfds-<fingerprint>", or "tfds") is ever
    deleted, whatever a hand-edited manifest says."""
    parts = Path(str(tfds_dir)).parts
    if Path(str(tfds_dir)).is_absolute() or not parts or not _RECORDS_DIR.fullmatch(parts[0]):
        return None
    return parts[0] if (out / parts[0]).resolve().parent == out.resolve() else None


def _remove_dataset(out: Path) -> None:
    """Deletes a genie dataset's own files (its manifest and the records folder inside ``out``), nothing else."""
    path = out / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
        tfds_dir = manifest["tfds_dir"]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path} is not a genie dataset manifest ({type(exc).__name__}: {exc}); nothing was "
                         "deleted: remove the old dataset by hand or choose another --out") from None
    records = _records_dir_name(out, tfds_dir)
    path.unlink()
    if records is not None and (out / records).is_dir():
        shutil.rmtree(out / records)


def _expand_games(specs: list[SourceSpec], options: IngestOptions) -> tuple[list[SourceSpec], list[dict]]:
    """``atari:GAME`` and ``procgen:GAME`` stand for ``options.episodes`` episodes, each its own source (and split
    unit). Returns the sources and the failures of games that cannot be played at all."""
    out, failed = [], []
    for spec in specs:
        if spec.kind not in GAME_KINDS:
            out.append(spec)
            continue
        runner = ""
        if spec.kind == "procgen":
            from data_ingest.procgen_games import GAMES, MODES, find_python, level_for

            if spec.path not in GAMES or options.procgen_mode not in MODES or options.procgen_levels < 1:
                failed.append(_failed(spec.name, spec.kind, f"unknown Procgen game {spec.path!r} or mode "
                                      f"{options.procgen_mode!r} (or --procgen-levels < 1): games are "
                                      f"{', '.join(GAMES)}; modes {', '.join(MODES)}"))
                continue
            try:
                runner = str(find_python(options.procgen_python))
            except SourceError as exc:
                failed.append(_failed(spec.name, spec.kind, str(exc)))
                continue
        for i in range(options.episodes):
            provenance = {"episode": i, "frames": options.frames_per_episode}
            if spec.kind == "procgen":
                provenance.update(level=level_for(i, options.procgen_levels, options.seed),
                                  levels=options.procgen_levels, mode=options.procgen_mode)
            out.append(SourceSpec(name=f"{spec.name}/{i:05d}", kind=spec.kind, path=spec.path,
                                  provenance=provenance, runner=runner))
    return out, failed


def _process_all(specs: list[SourceSpec], urls: list[str], out: Path, options: IngestOptions, pool: cf.Executor,
                 log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Processes local sources in the worker pool while URLs download in this process, feeding the pool."""
    # Decoder threads: the cores shared among the workers that will be busy (a lone local file gets them all).
    threads = default_threads(options.workers if urls else min(options.workers, max(1, len(specs))))
    results: list[dict[str, Any]] = []
    futures: dict[cf.Future, SourceSpec] = {}

    def submit(spec: SourceSpec) -> None:
        futures[pool.submit(process_source, spec, options.settings, str(out), threads=threads,
                            seed=options.seed)] = spec

    for spec in specs:
        submit(spec)
    if urls:
        for url, downloaded, error in download_all(urls, work_paths(out)["downloads"], options.download, log):
            if error:
                results.append(_failed(url, "url", error))
                log(f"failed: {url}: {error}")
            for spec in downloaded:
                submit(spec)
    for done, future in enumerate(cf.as_completed(futures), 1):
        spec = futures[future]
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 (a worker died, e.g. a decoder crash: report it, go on)
            result = _failed(spec.name, spec.kind, f"worker crashed: {type(exc).__name__}: {exc}")
        results.append(result)
        clips = result.get("clips", {}).get("staged", 0)
        detail = f"{clips} clips" + (" (reused)" if result.get("reused") else "")
        log(f"[{done}/{len(futures)}] {spec.name}: {result['status']}, "
            f"{result['reason'] if result['status'] != 'ok' else detail}")
    return results


def _executor(workers: int) -> cf.Executor:
    if workers <= 1:
        return _InlineExecutor()
    return cf.ProcessPoolExecutor(workers, mp_context=pool_context(), initializer=exit_with_parent,
                                  initargs=(os.getpid(),))


class _InlineExecutor(cf.Executor):
    """--workers 1: run each task (a source, a shard) right away in this process (no pickling, no start-up)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 (handed to the caller, as a pool would)
            future.set_exception(exc)
        return future


def _failed(name: str, kind: str, reason: str) -> dict[str, Any]:
    return {"name": name, "kind": kind, "status": "failed", "reason": reason}


def _unique_names(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per name (a URL listed twice, or found via two playlists, is ingested once)."""
    seen: dict[str, dict[str, Any]] = {}
    for r in results:
        seen.setdefault(r["name"], r)
    return sorted(seen.values(), key=lambda r: r["name"])


def _build(out: Path, results: list[dict[str, Any]], options: IngestOptions, pool: cf.Executor,
           log: Callable[[str], None]) -> tuple[dict[str, Any] | None, str]:
    """Dedupes, splits and writes the records of every staged source, the pool's workers writing shards; returns
    (dataset summary, error)."""
    s = options.settings
    sources, meanings = _select(out, results, s)
    if not sources:
        return None, "no source yielded a clip"
    by_name = {r["name"]: r for r in results}
    # By the pictures' bytes: a source keeps its split when others are added, when it is renamed, and when its
    # sidecar's labels are corrected.
    try:
        splits = stable_splits([by_name[c.name]["media_sha256"] for c in sources], val_fraction=options.val_fraction,
                               test_fraction=options.test_fraction, seed=options.seed)
    except ValueError as exc:
        return None, str(exc)
    current = _current_dataset(out)
    trained_on = set(current.get("splits", {}).get("train", [])) if current is not None else set()
    for split, ids in splits.items():
        for i in ids:
            by_name[sources[i].name]["split"] = split
            if split != "train" and sources[i].name in trained_on:  # (e.g. a dataset split the older way)
                by_name[sources[i].name]["was_train"] = True
    build_key = hashlib.sha256(json.dumps([[(c.name, c.path, c.keep, c.action_map) for c in sources], splits,
                                           meanings, s.digest()]).encode()).hexdigest()
    if current is not None and current.get("ingest", {}).get("build_key") == build_key:
        log("dataset already up to date")
        return current, ""
    build_dir = work_paths(out)["tmp"] / f"build-{uuid.uuid4().hex[:8]}"

    from data_ingest.clip_dataset import (  # TFDS: imported already (see ingest_video_sources)
        build_clip_records,
        dataset_manifest,
    )

    def build(executor: cf.Executor) -> BuiltRecords:
        shutil.rmtree(build_dir, ignore_errors=True)
        build_dir.mkdir(parents=True)
        return build_clip_records(build_dir, sources, splits, clip_len=s.clip_len, stride=s.clip_stride,
                                  height=s.height, width=s.width, action_meanings=meanings,
                                  beam_options=options.beam_options, executor=executor)

    try:
        try:
            records = build(pool)
        except BrokenProcessPool:  # a worker died on some source (reported as failed): write the shards here
            records = build(_InlineExecutor())
    except ValueError as exc:
        return None, str(exc)
    # The records move next to the manifest under a name of their own, so an older dataset stays readable
    # until the new manifest replaces it.
    records_dir = out / f"tfds-{records.fingerprint[:12]}"
    if records_dir.exists():
        shutil.rmtree(records_dir)
    (build_dir / "tfds").rename(records_dir)
    shutil.rmtree(build_dir, ignore_errors=True)
    records = type(records)(records.num_clips, records.fingerprint,
                            records_dir / records.tfds_dir.relative_to(build_dir / "tfds"))
    metadata = {"ingest": {"build_key": build_key, "report": REPORT_NAME, "fps": s.fps, "resize": s.resize,
                           "settings": s.to_dict()}}
    return dataset_manifest(records, out, names=[c.name for c in sources], splits=splits, clip_len=s.clip_len,
                            stride=s.clip_stride, height=s.height, width=s.width, action_meanings=meanings,
                            metadata=metadata), ""


def _select(out: Path, results: list[dict[str, Any]], settings: IngestSettings) -> tuple[list[StagedClips], list[str]]:
    """The staged sources that go into the dataset, in name order, with near-duplicate clips left out.

    A source whose content equals an earlier one's is dropped whole; a clip whose signature an earlier clip (in
    any source) has is dropped, which also keeps a re-upload in train from leaking into validation.
    """
    seen_content: dict[str, str] = {}
    seen_clips: set[str] = set()
    meanings: list[str] = []
    chosen = []
    for r in results:
        if r["status"] != "ok":
            continue
        path = work_paths(out)["staged"] / r["key"]
        staged = staged_arrays(path)
        first = seen_content.setdefault(r["sha256"], r["name"])
        keep = []
        if first == r["name"]:
            for i, signature in enumerate(staged["signatures"].tolist()):
                if signature not in seen_clips:
                    seen_clips.add(signature)
                    keep.append(i)
        # Frames only in dropped clips were kept by the filters but are left out as duplicates: count them so.
        kept_frames = frames_in_clips(staged["positions"][keep], settings.clip_len)
        r["dropped_frames"] = {**r["dropped_frames"], "near_duplicate": r["frames"]["kept"] - kept_frames}
        r["frames"] = {**r["frames"], "kept": kept_frames}
        r["clips"] = {**r["clips"], "near_duplicate": len(staged["signatures"]) - len(keep), "written": len(keep)}
        if first != r["name"]:
            r.update(status="dropped", reason=f"same content as {first}")
            continue
        if not keep:
            r.update(status="dropped", reason="every clip duplicates an earlier one")
            continue
        local = r.get("action_meanings") or []
        for m in local:
            if m not in meanings:
                meanings.append(m)
        chosen.append((r, path, keep, tuple(meanings.index(m) for m in local)))
    shape = (settings.clip_len, settings.height, settings.width, 3)
    return [StagedClips(name=r["name"], path=str(path), clip_shape=shape, keep=tuple(keep), action_map=action_map)
            for r, path, keep, action_map in chosen], meanings


def _current_dataset(out: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or _records_dir_name(out, manifest.get("tfds_dir", "")) is None:
        return None
    return manifest if (out / manifest["tfds_dir"]).is_dir() else None


def _commit_dataset(out: Path, dataset: dict[str, Any]) -> None:
    """Renames the new ``genie_dataset.json`` into place (the commit point), then deletes superseded records."""
    write_json_atomic(out / MANIFEST_NAME, dataset)
    live = _records_dir_name(out, dataset["tfds_dir"])
    for old in out.glob("tfds-*"):
        if old.name != live and old.is_dir() and _RECORDS_DIR.fullmatch(old.name):  # ours only
            shutil.rmtree(old, ignore_errors=True)


def _prune_staged(out: Path) -> None:
    """Deletes sources staged by an older processing version: no run of this version uses them (their keys hold
    the version), and they would double the disk a large ingest takes after an upgrade."""
    for staged in work_paths(out)["staged"].iterdir():
        result = staged_result(out, staged.name)
        if result is None or result.get("result_version") != RESULT_VERSION:
            shutil.rmtree(staged, ignore_errors=True)


__all__ = ["REPORT_NAME", "SUMMARY_NAME", "IngestOptions", "IngestReport", "ingest_video_sources"]
