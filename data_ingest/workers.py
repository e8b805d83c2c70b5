"""Worker-process hygiene for the ingest's process pool (a module of its own: workers import it, and nothing heavy)."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent_pid: int, poll_seconds: float = 0.5) -> None:
    """Pool initializer: ends this worker once the process that started it is gone.

    A pool worker whose parent was killed (SIGKILL, an OOM kill) would otherwise wait for work forever. It stops
    at once, mid-source if need be: sources are staged atomically, so the rerun redoes a half-done one.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


__all__ = ["exit_with_parent"]
