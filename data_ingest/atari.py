"""``atari:GAME`` sources: an Atari game (gymnasium + ale-py, the optional ``games`` extra; ROMs are bundled)
played by a random policy with action persistence, with the true actions kept for evaluation.

One source is one episode of up to ``--frames-per-episode`` frames, so whole episodes go to one split. Frames
come at the ALE's 60 Hz / frameskip 4 = 15 fps and are resampled like any video; the environment's own sticky
actions are off, because the policy already holds actions and the labels must be the actions really taken.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from data_ingest.decode import RawFrame, SourceError
from data_ingest.settings import IngestSettings
from data_ingest.sources import SourceSpec

FRAMESKIP = 4
ALE_HZ = 60
MEAN_HOLD = 4.0  # steps an action is held on average (geometric), like a person pressing a button


def env_id(game: str) -> str:
    """``Pong`` -> ``ALE/Pong-v5``; a full id (with a slash) is used as given."""
    return game if "/" in game else f"ALE/{game}-v5"


def random_policy(num_actions: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """int32 [steps]: uniform random actions, each held for a geometric number of steps (mean MEAN_HOLD)."""
    actions = np.empty(steps, np.int32)
    current = int(rng.integers(num_actions))
    for i in range(steps):
        if rng.random() < 1 / MEAN_HOLD:
            current = int(rng.integers(num_actions))
        actions[i] = current
    return actions


def play(spec: SourceSpec, settings: IngestSettings, *, seed: int) -> tuple[Iterator[RawFrame], np.ndarray, list[str]]:
    """(frames, actions [frames-1], action meanings) of episode ``spec.provenance["episode"]`` of ``spec.path``.

    The episode may end (game over) before the frame budget; frames then stop early and the unused actions are
    never referenced.
    """
    try:
        import ale_py
        import gymnasium
    except ImportError:
        raise SourceError("atari sources need the optional games extra: pip install 'genie_jax[games]' "
                          "(gymnasium and ale-py)") from None
    gymnasium.register_envs(ale_py)
    try:
        env = gymnasium.make(env_id(spec.path), frameskip=FRAMESKIP, repeat_action_probability=0.0)
    except gymnasium.error.Error as exc:
        raise SourceError(f"unknown Atari game {spec.path!r} ({exc}); e.g. atari:Pong, atari:Pitfall") from None
    episode, num_frames = int(spec.provenance["episode"]), int(spec.provenance["frames"])
    episode_seed = int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])
    meanings = list(env.unwrapped.get_action_meanings())
    actions = random_policy(len(meanings), num_frames - 1, np.random.default_rng(episode_seed))
    return _frames(env, actions, episode_seed), actions, meanings


def _frames(env, actions: np.ndarray, episode_seed: int) -> Iterator[RawFrame]:
    rate = ALE_HZ / FRAMESKIP  # observations per second
    try:
        obs, _ = env.reset(seed=episode_seed)
        yield RawFrame(0, 0.0, obs)
        for i, action in enumerate(actions, 1):
            obs, _, terminated, truncated, _ = env.step(int(action))
            yield RawFrame(i, i / rate, obs)
            if terminated or truncated:
                return
    finally:
        env.close()


__all__ = ["env_id", "play", "random_policy"]
