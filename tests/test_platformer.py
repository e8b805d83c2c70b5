"""The built-in platformer: determinism, shapes, scrolling/blocking/jumping physics, speed, action sidecars."""

import json
import time

import numpy as np
import pytest

from data_ingest.platformer import (ACTION_MEANINGS, PlatformerConfig, PlatformerGame, effect_id, generate_level,
                                    play_episode, read_actions_sidecar, write_actions_sidecar)

NOOP, LEFT, RIGHT, JUMP = 0, 1, 2, 3
CFG32 = PlatformerConfig(size=32)


def test_deterministic_per_seed_and_seeds_differ():
    a, b = play_episode(7, 60, CFG32), play_episode(7, 60, CFG32)
    np.testing.assert_array_equal(a.frames_THWC, b.frames_THWC)
    np.testing.assert_array_equal(a.actions_T, b.actions_T)
    np.testing.assert_array_equal(a.effects_T, b.effects_T)
    c = play_episode(8, 60, CFG32)
    assert not np.array_equal(a.frames_THWC, c.frames_THWC)
    assert not np.array_equal(a.actions_T, c.actions_T)
    assert not np.array_equal(generate_level(7, CFG32).kind_RW, generate_level(8, CFG32).kind_RW)


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_and_dtypes(size):
    ep = play_episode(1, 50, PlatformerConfig(size=size))
    assert ep.frames_THWC.shape == (50, size, size, 3) and ep.frames_THWC.dtype == np.uint8
    assert ep.actions_T.shape == ep.effects_T.shape == (49,)
    assert ep.actions_T.dtype == ep.effects_T.dtype == np.int32
    assert ep.meanings == ACTION_MEANINGS == ("noop", "left", "right", "jump", "left+jump", "right+jump")
    assert set(np.unique(ep.actions_T)) <= set(range(6)) and set(np.unique(ep.effects_T)) <= set(range(6))
    assert ep.agent_xy_T2.shape == (50, 2)


def test_effects_describe_what_the_agent_did():
    ep = play_episode(3, 400, CFG32, render=False)
    p = CFG32.tile_px
    dx_of = np.array([0, -1, 1, 0, -1, 1])  # per action index
    jump_of = np.array([0, 0, 0, 1, 1, 1])
    dx, dy = np.diff(ep.agent_xy_T2[:, 0]), np.diff(ep.agent_xy_T2[:, 1])
    ok = np.ones(len(dx), bool)
    ok[list(ep.respawn_steps)] = False  # a respawn teleports the agent
    assert set(np.abs(dx[ok])) <= {0, p}  # run speed is exactly one tile per frame
    np.testing.assert_array_equal(np.sign(dx)[ok], dx_of[ep.effects_T][ok])
    assert np.all(dy[ok & (jump_of[ep.effects_T] == 1)] < 0)  # a visible jump start moves the agent up
    # The visible effect is the action's intended effect or part of it (blocked move, jump in mid-air).
    e, a = ep.effects_T, ep.actions_T
    assert np.all(((dx_of[e] == dx_of[a]) | (dx_of[e] == 0)) & (jump_of[e] <= jump_of[a]))
    assert (e == a).mean() > 0.4
    assert [effect_id(dx, j) for j in (False, True) for dx in (0, -1, 1)] == [0, 1, 2, 3, 4, 5]


def _flat_run_column(game: PlatformerGame) -> int:
    """A column where the agent stands and can run right (same ground height, nothing in the way)."""
    top = game._top_row
    for c in game.level.spawn_cols:
        if c > game.level.width // 3 and top[c] == top[c + 1] == top[c + 2] and top[c] >= 5:
            return int(c)
    raise AssertionError("no flat run found")


def test_running_right_scrolls_the_scene_by_one_tile():
    game = PlatformerGame(5, CFG32)
    p = CFG32.tile_px
    game.place_agent(_flat_run_column(game))
    cam0, y0, f0 = game.camera_x, game.y, game.render()
    moved, jumped, _ = game.step(RIGHT)
    f1 = game.render()
    assert (moved, jumped) == (1, False)
    assert game.camera_x == cam0 + p and game.y == y0
    _, m0 = game.level.tile_layer(cam0)
    _, m1 = game.level.tile_layer(game.camera_x)
    # Tile pixels seen in both frames: frame 1 equals frame 0 shifted left by exactly tile_px.
    both = m0[:, p:] & m1[:, :-p]
    assert both.sum() > 3 * p * p
    np.testing.assert_array_equal(f1[:, :-p][both], f0[:, p:][both])


def test_running_into_a_wall_does_not_move():
    game = PlatformerGame(5, CFG32)
    game.place_agent(2)  # next to the left boundary wall (columns 0 and 1)
    x0, cam0 = game.x, game.camera_x
    f0 = game.level.tile_layer(cam0)[0].copy()
    for _ in range(3):
        assert game.step(LEFT)[:2] == (0, False)
    assert game.x == x0 and game.camera_x == cam0
    np.testing.assert_array_equal(game.level.tile_layer(game.camera_x)[0], f0)


def test_jump_raises_the_agent_about_three_tiles():
    game = PlatformerGame(5, CFG32)
    p = CFG32.tile_px
    game.place_agent(_flat_run_column(game))
    ground_y = game.y
    moved, jumped, _ = game.step(JUMP)
    assert jumped and game.y < ground_y
    ys = [game.y]
    while game.y != ground_y and len(ys) < 20:
        game.step(NOOP)
        ys.append(game.y)
    assert 6 <= len(ys) <= 10  # frames in the air
    assert ground_y - min(ys) == 3 * p
    assert game.step(JUMP)[1]  # back on the ground: can jump again
    # Jumping in mid-air does nothing.
    game.place_agent(_flat_run_column(game))
    game.step(JUMP)
    assert game.step(JUMP)[1] is False


def test_air_control_and_respawn_are_recorded():
    for seed in range(20):
        ep = play_episode(seed, 600, CFG32, render=False)
        if ep.respawn_steps:
            break
    else:
        pytest.fail("no episode fell into a pit")
    i = ep.respawn_steps[0]
    assert ep.agent_xy_T2[i + 1, 0] < ep.agent_xy_T2[i, 0]  # put back to the left
    # Air control: some transitions move sideways while airborne (y changes at the same time).
    dx, dy = np.diff(ep.agent_xy_T2[:, 0]), np.diff(ep.agent_xy_T2[:, 1])
    assert ((dx != 0) & (dy != 0)).any()


def test_enemies_and_coins_move_without_the_agent():
    game = PlatformerGame(2, CFG32)
    game.place_agent(_flat_run_column(game))
    changed = 0
    prev = game.render()
    for _ in range(12):
        game.step(NOOP)
        f = game.render()
        changed += int(not np.array_equal(f, prev))
        prev = f
    assert len(game.level.enemies) > 0 and len(game.level.coins_xy) > 0
    assert changed > 0  # something moved (enemy patrol / coin blink) though the agent stood still


def test_speed():
    for size, floor in ((32, 300), (64, 150)):
        cfg = PlatformerConfig(size=size)
        play_episode(0, 10, cfg)  # warm up
        t = time.perf_counter()
        play_episode(1, 2000, cfg)
        fps = 2000 / (time.perf_counter() - t)
        print(f"platformer at {size}x{size}: {fps:.0f} frames/s")
        assert fps > floor


def test_actions_sidecar_roundtrip_and_validation(tmp_path):
    clip = tmp_path / "run1.mp4"
    path = write_actions_sidecar(clip, np.array([0, 5, 2]), ACTION_MEANINGS)
    assert path == tmp_path / "run1.actions.json"
    assert json.loads(path.read_text()) == {"actions": [0, 5, 2], "meanings": list(ACTION_MEANINGS)}
    actions, meanings = read_actions_sidecar(clip)
    assert actions.tolist() == [0, 5, 2] and meanings == ACTION_MEANINGS
    assert [p.name for p in tmp_path.iterdir()] == ["run1.actions.json"]  # no temp file left behind
    for bad in ({"actions": [0, 9], "meanings": ["a", "b"]}, {"actions": [0]}, [1, 2],
                {"actions": ["x"], "meanings": ["a"]}, {"actions": [0], "meanings": ["a", "a"]}):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="run1.actions.json"):
            read_actions_sidecar(clip)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="run1.actions.json"):
        read_actions_sidecar(path)
    with pytest.raises(ValueError, match="outside"):
        write_actions_sidecar(clip, [7], ["a"])
