"""atari:GAME sources (optional 'games' extra): random policy with action persistence, true actions kept."""

import numpy as np
import pytest

from data_ingest.atari import MEAN_HOLD, random_policy
from data_ingest.settings import IngestSettings
from data_ingest.video_ingest import IngestOptions, ingest_video_sources
from genie_jax.data import ClipDataset


def test_random_policy_holds_actions():
    actions = random_policy(6, 20000, np.random.default_rng(0))
    changes = np.count_nonzero(np.diff(actions))
    # A new draw every MEAN_HOLD steps on average, which repeats the old action 1/6 of the time.
    assert changes / len(actions) == pytest.approx((1 / MEAN_HOLD) * (5 / 6), rel=0.1)
    assert set(np.unique(actions)) == set(range(6))


def test_atari_episodes_become_sources_with_true_actions(tmp_path):
    pytest.importorskip("ale_py")
    # At the ALE's own 15 fps no resampling happens, so clip actions are runs of the policy's actions.
    options = IngestOptions(settings=IngestSettings(height=32, width=32, clip_len=8, fps=15, min_quality=0.0),
                            episodes=3, frames_per_episode=40, val_fraction=0.34, seed=5)
    report = ingest_video_sources(["atari:Pong", "atari:NoSuchGame"], tmp_path / "out", options,
                                  log=lambda _: None)
    failed = [s for s in report.manifest["sources"] if s["status"] == "failed"]
    assert len(failed) == 3 and all("unknown Atari game 'NoSuchGame'" in s["reason"] for s in failed)
    ds = ClipDataset(tmp_path / "out")
    assert ds.info.action_meanings[:2] == ("NOOP", "FIRE")
    assert [s for s in ds.info.sources] == ["atari:Pong/00000", "atari:Pong/00001", "atari:Pong/00002"]
    clips = [ds.split(s)[i] for s in ds.info.num_clips for i in range(len(ds.split(s)))]
    assert len({c["actions"].tobytes() for c in clips}) > 1
    for clip in clips:  # each clip's actions are a window of its episode's policy actions
        episode = int(ds.info.sources[clip["source_id"]].rsplit("/", 1)[1])
        seed = int(np.random.SeedSequence([5, episode]).generate_state(1)[0])
        policy = random_policy(len(ds.info.action_meanings), 39, np.random.default_rng(seed)).tolist()
        window = clip["actions"].tolist()
        assert any(policy[i:i + len(window)] == window for i in range(len(policy))), (episode, window)
