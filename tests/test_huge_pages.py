"""The `genie` command's re-execution with glibc's huge-page tunable (genie_jax/huge_pages.py)."""

import os
import subprocess
import sys

import pytest

from genie_jax.huge_pages import OPT_OUT, TUNABLE

PROBE = ("import os, sys; print(os.getpid(), file=sys.stderr); from genie_jax.huge_pages import "
         "reexec_with_huge_pages; reexec_with_huge_pages(); print(os.getpid(), os.environ.get('GLIBC_TUNABLES'))")


def probe(**env: str) -> tuple[list[str], str, str]:
    """Runs PROBE with ``env`` -> (pids printed before re-executing, pid after, GLIBC_TUNABLES after)."""
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         check=True)
    pid, tunables = out.stdout.split()
    return out.stderr.split(), pid, tunables


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux's")
def test_reexecutes_once_with_the_tunable_keeping_the_pid_and_other_tunables():
    before, pid, tunables = probe()
    assert tunables == TUNABLE
    assert before == [pid, pid]  # the script ran twice (before and after exec), in one process
    before, pid, tunables = probe(GLIBC_TUNABLES="glibc.malloc.arena_max=2")
    assert tunables == f"glibc.malloc.arena_max=2:{TUNABLE}" and before == [pid, pid]


def test_a_choice_already_made_or_the_opt_out_is_left_alone():
    before, pid, tunables = probe(GLIBC_TUNABLES="glibc.malloc.hugetlb=0")
    assert tunables == "glibc.malloc.hugetlb=0" and before == [pid]
    before, pid, tunables = probe(**{OPT_OUT: "0"})
    assert tunables == "None" and before == [pid]
