"""Worker-process hygiene for the ingest's process pool (a module of its own: workers import it, and nothing heavy)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import select
import threading
import time
from multiprocessing.context import BaseContext

# What a worker needs loaded (to process sources, then write shards): imported once by the fork server, then
# inherited by every worker it forks.
_WORKER_MODULES = ["data_ingest.process", "data_ingest.shards", "data_ingest.workers"]
# A fork server's workers can watch the pool's owner only through a pidfd; without one, workers are spawned.
_PIDFDS = hasattr(os, "pidfd_open")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, which containers and taskset narrow), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def pool_context() -> BaseContext:
    """The multiprocessing context for ingest workers.

    Where Linux's pidfds exist, a fork server: it starts once, imports PyAV and NumPy once (~0.45 s CPU), and
    forks each worker from that clean, single-threaded process, so a worker starts in milliseconds. (Plain fork
    would copy this process's threads and TFDS state, which fork does not copy safely.) Elsewhere, spawn: each
    worker imports on its own.
    """
    if not _PIDFDS:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_WORKER_MODULES)
    return context


def start_pool_server() -> None:
    """Starts the fork server of :func:`pool_context` now rather than at the first worker, so that its interpreter
    start and imports (~0.25 s of wall time) overlap the caller's own start-up. Does nothing where workers are
    spawned."""
    if _PIDFDS:
        pool_context()  # its preload list first: the server imports it as it starts
        multiprocessing.forkserver.ensure_running()


def exit_with_parent(parent_pid: int, poll_seconds: float = 0.5) -> None:
    """Pool initializer: ends this worker once the process that started the pool is gone.

    A pool worker whose parent was killed (SIGKILL, an OOM kill) would otherwise wait for work forever. It stops
    at once, mid-source if need be: sources are staged atomically, so the rerun redoes a half-done one.
    A fork server's workers are its children, not the pool owner's, so the owner is watched through a pidfd
    (readable once that process has exited); without pidfds (spawn), by polling for this worker's parent.
    """
    if _PIDFDS:
        try:
            pidfd = os.pidfd_open(parent_pid)
        except ProcessLookupError:  # already gone
            os._exit(1)

        def watch() -> None:
            select.select([pidfd], [], [])
            os._exit(1)
    else:
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(poll_seconds)
            os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


__all__ = ["available_cores", "exit_with_parent", "pool_context", "start_pool_server"]
