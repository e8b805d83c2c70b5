"""procgen:GAME sources, played in the separate procgen environment (`make test` creates it via `make procgen-env`)."""

import numpy as np

from data_ingest.atari import random_policy
from data_ingest.procgen_games import DEFAULT_ENV, NUM_BUTTONS, level_for, play
from data_ingest.settings import IngestSettings
from data_ingest.sources import SourceSpec
from data_ingest.video_ingest import IngestOptions, ingest_video_sources
from genie_jax.data import ClipDataset

SETTINGS = IngestSettings(height=64, width=64, clip_len=8, fps=10, min_quality=0.0)


def test_levels_are_distinct_until_all_are_used():
    levels = [level_for(i, 50, seed=3) for i in range(50)]
    assert sorted(levels) == list(range(50)) and levels != list(range(50))
    assert level_for(50, 50, seed=3) == levels[0]  # then they come round again
    assert [level_for(i, 50, seed=4) for i in range(50)] != levels  # the seed picks the order


def test_a_level_plays_the_same_frames_for_the_same_seed():
    spec = SourceSpec(name="procgen:coinrun/00000", kind="procgen", path="coinrun",
                      provenance={"episode": 0, "frames": 30, "level": 7, "mode": "hard"},
                      runner=str(DEFAULT_ENV / "bin" / "python"))
    runs = [play(spec, SETTINGS, seed=1) for _ in range(2)]
    frames = [np.stack([f.image for f in raw]) for raw, _, _ in runs]
    assert frames[0].shape == (30, 64, 64, 3) and frames[0].dtype == np.uint8
    np.testing.assert_array_equal(frames[0], frames[1])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert (np.diff(frames[0].astype(np.int16), axis=0) != 0).any(axis=(1, 2, 3)).sum() >= 3  # it moves
    assert len(runs[0][2]) == NUM_BUTTONS and runs[0][2][4] == "NOOP"
    other = play(SourceSpec(**{**spec.__dict__, "provenance": {**spec.provenance, "level": 8}}), SETTINGS, seed=1)
    assert not np.array_equal(np.stack([f.image for f in other[0]]), frames[0])  # another level looks different


def test_procgen_episodes_become_sources_with_true_actions(tmp_path):
    options = IngestOptions(settings=SETTINGS, episodes=3, frames_per_episode=40, val_fraction=0.34, seed=5,
                            procgen_levels=100)
    report = ingest_video_sources(["procgen:coinrun", "procgen:nosuchgame"], tmp_path / "out", options,
                                  log=lambda _: None)
    [failed] = [s for s in report.manifest["sources"] if s["status"] == "failed"]
    assert failed["name"] == "procgen:nosuchgame" and "unknown Procgen game 'nosuchgame'" in failed["reason"]
    ds = ClipDataset(tmp_path / "out")
    assert len(ds.info.action_meanings) == NUM_BUTTONS
    assert list(ds.info.sources) == ["procgen:coinrun/00000", "procgen:coinrun/00001", "procgen:coinrun/00002"]
    levels = {s["provenance"]["level"] for s in report.manifest["sources"] if s["status"] == "ok"}
    assert levels == {level_for(i, 100, seed=5) for i in range(3)}
    clips = [ds.split(s)[i] for s in ds.info.num_clips for i in range(len(ds.split(s)))]
    assert len(clips) >= 9 and len({c["actions"].tobytes() for c in clips}) > 1
    for clip in clips:  # every environment step is a frame: clip actions are windows of the policy's actions
        episode = int(ds.info.sources[clip["source_id"]].rsplit("/", 1)[1])
        seed = int(np.random.SeedSequence([5, episode, level_for(episode, 100, seed=5)]).generate_state(1)[0])
        policy = random_policy(NUM_BUTTONS, 39, np.random.default_rng(seed)).tolist()
        window = clip["actions"].tolist()
        assert any(policy[i:i + len(window)] == window for i in range(len(policy))), (episode, window)


def test_a_missing_procgen_environment_is_reported_with_the_fix(tmp_path):
    options = IngestOptions(settings=SETTINGS, episodes=2, frames_per_episode=20,
                            procgen_python=str(tmp_path / "no" / "python"))
    report = ingest_video_sources(["procgen:coinrun"], tmp_path / "out", options, log=lambda _: None)
    [failed] = report.manifest["sources"]
    assert failed["status"] == "failed" and report.exit_code == 2
    assert str(tmp_path / "no" / "python") in failed["reason"] and "make procgen-env" in failed["reason"]
