"""Which latent action the arrow/WASD keys play: a suggestion from true-action alignment, or a --mapping file.

A mapping is {direction: latent action id or None} over the directions left, right, up, down. The page binds
ArrowLeft/A, ArrowRight/D, ArrowUp/W and ArrowDown/S to them (number keys always play actions 1..|A| -> 0..|A|-1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from genie_jax.metrics.probe import majority_mapping

DIRECTIONS = ("left", "right", "up", "down")
# The dataset action names a direction stands for, best first (platformer: jump; Atari: UP, DOWN, NOOP).
_MEANINGS = {"left": ("left",), "right": ("right",), "up": ("jump", "up"), "down": ("down", "noop")}


def empty_mapping() -> dict[str, int | None]:
    return {d: None for d in DIRECTIONS}


def suggest_mapping(codes_N: np.ndarray, true_N: np.ndarray, meanings: Sequence[str],
                    num_actions: int) -> dict[str, int | None]:
    """For each direction, the latent code whose most frequent true action (its majority) is that direction's
    meaning; among several such codes, the one used most often. Transitions with unknown true action (< 0)
    are ignored. Directions no code stands for stay None."""
    majority, counts = _majority(codes_N, true_N, meanings, num_actions)
    mapping = empty_mapping()
    for direction, wanted in _MEANINGS.items():
        for meaning in wanted:
            codes = [c for c, m in majority.items() if m.lower() == meaning]
            if codes:
                mapping[direction] = max(codes, key=lambda c: (counts[c], -c))
                break
    return mapping


def action_labels(codes_N: np.ndarray, true_N: np.ndarray, meanings: Sequence[str], num_actions: int) -> list[str]:
    """Per latent code, the name of its majority true action ('' where unknown: no true actions, or unused)."""
    majority, _ = _majority(codes_N, true_N, meanings, num_actions)
    return [majority.get(c, "") for c in range(num_actions)]


def _majority(codes_N: np.ndarray, true_N: np.ndarray, meanings: Sequence[str],
              num_actions: int) -> tuple[dict[int, str], np.ndarray]:
    """{code: name of its majority true action} and per-code counts, over transitions with a known true action."""
    codes_N, true_N = np.asarray(codes_N).reshape(-1), np.asarray(true_N).reshape(-1)
    known = (true_N >= 0) & (true_N < len(meanings)) & (codes_N >= 0) & (codes_N < num_actions)
    codes_N, true_N = codes_N[known], true_N[known]
    majority = {c: meanings[t] for c, t in majority_mapping(true_N, codes_N).items()} if codes_N.size else {}
    return majority, np.bincount(codes_N, minlength=num_actions)


def load_mapping(path: str | Path, num_actions: int) -> dict[str, int | None]:
    """A --mapping JSON file, e.g. {"left": 2, "right": 5, "up": 1, "down": null}; directions left out are None."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"mapping file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"mapping file {path} is not readable JSON ({error})") from None
    return check_mapping(data, num_actions, f"mapping file {path}")


def check_mapping(data: object, num_actions: int, what: str = "mapping") -> dict[str, int | None]:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object like {{\"left\": 2, \"right\": 5}}, got {data!r}")
    unknown = set(data) - set(DIRECTIONS)
    if unknown:
        raise ValueError(f"{what} has unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                         f"use {', '.join(DIRECTIONS)}")
    mapping = empty_mapping()
    for direction, action in data.items():
        if action is None:
            continue
        if isinstance(action, bool) or not isinstance(action, int) or not 0 <= action < num_actions:
            raise ValueError(f"{what}: {direction!r} -> {action!r} is not a latent action id in 0..{num_actions - 1}")
        mapping[direction] = action
    return mapping
