"""A built-in procedural side-view platformer: the synthetic gameplay source for Genie.

Pure NumPy, deterministic per seed, thousands of frames per second on one core. The world is a grid of tiles
8 tiles tall (``tile_px = size // 8``) and a few hundred wide, with ground, pits, steps, blocks and floating
platforms. The camera always follows the agent horizontally (no clamping at the level ends) and never moves
vertically, so running scrolls the whole scene by exactly ``tile_px`` pixels per frame, a large and clean signal
for the latent action model, while jumping moves the agent sprite up and down. Enemies walking back and forth and
blinking coins add motion the agent does not cause.

Rendering is cheap because each level's tile layer and background are drawn once as wide images; a frame is a
crop of each (the background scrolls at half speed, parallax) plus a few sprites pasted by array slicing.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

ACTION_MEANINGS: tuple[str, ...] = ("noop", "left", "right", "jump", "left+jump", "right+jump")
_ACTION_DX = (0, -1, 1, 0, -1, 1)
_ACTION_JUMP = (False, False, False, True, True, True)
# Visible effect (sign of the agent's x step, jump actually started) -> the action index that intends exactly
# that effect, so effect == action whenever nothing got in the way.
_EFFECT_ID = {(-1, False): 1, (0, False): 0, (1, False): 2, (-1, True): 4, (0, True): 3, (1, True): 5}

ROWS = 8  # the world is always 8 tiles tall and fills the screen vertically
_EMPTY, _GROUND_TOP, _GROUND, _PLATFORM, _WALL = 0, 1, 2, 3, 4

# Sprite colours no palette or background uses, so the agent is never confused with scenery.
_AGENT_HEAD = (255, 222, 173)
_AGENT_BODY = (235, 30, 210)
_AGENT_LEGS = (70, 10, 110)
_ENEMY_BODY = (225, 35, 25)
_ENEMY_DARK = (110, 10, 10)
_COIN = (255, 205, 0)
_COIN_EDGE = (200, 130, 0)

# Tile palettes: (grass/top, dirt/fill, platform, wall).
_PALETTES = (
    ((70, 185, 60), (140, 92, 50), (205, 120, 60), (125, 125, 135)),  # grassland
    ((235, 240, 250), (110, 125, 150), (140, 200, 230), (85, 90, 115)),  # snow
    ((230, 200, 100), (185, 125, 60), (165, 80, 40), (140, 110, 80)),  # desert
    ((150, 95, 205), (75, 50, 110), (90, 185, 170), (70, 75, 95)),  # crystal cave
)
_BACKGROUNDS = ("clouds", "hills", "sunset", "night")


@dataclass(frozen=True)
class PlatformerConfig:
    """Game settings. ``size`` must be a multiple of 16 (even ``tile_px``: integer jump physics) and >= 32."""

    size: int = 64  # square frame side in pixels
    level_tiles: int = 256  # level width in tiles, boundary walls included
    hold_min: int = 2  # the random policy holds each action for hold_min..hold_max frames
    hold_max: int = 6
    noop_weight: float = 0.5  # sampling weight of noop; every other action has weight 1
    enemies_per_100_tiles: float = 8.0
    coins_per_100_tiles: float = 12.0

    def __post_init__(self) -> None:
        if self.size < 32 or self.size % 16:
            raise ValueError(f"size must be a multiple of 16 and >= 32 (sprites need 4-pixel tiles), got {self.size}")
        if self.level_tiles < 48:
            raise ValueError(f"level_tiles must be >= 48, got {self.level_tiles}")
        if not 1 <= self.hold_min <= self.hold_max:
            raise ValueError(f"need 1 <= hold_min <= hold_max, got {self.hold_min}, {self.hold_max}")
        if self.noop_weight < 0:
            raise ValueError(f"noop_weight must be >= 0, got {self.noop_weight}")

    @property
    def tile_px(self) -> int:
        return self.size // ROWS


@dataclass(frozen=True, eq=False)
class Episode:
    """One played episode of T frames.

    frames_THWC: uint8 [T, size, size, 3].
    actions_T: int32 [T-1]; actions_T[i] is the action taken between frame i and frame i+1.
    effects_T: int32 [T-1]; the visible effect of each transition, as the index of the action that intends
        exactly that effect (0 noop .. 5 right+jump): a move into a wall or a jump in mid-air counts as noop.
        At a respawn it describes the agent's own move before it was put back.
    meanings: names of the action indices.
    agent_xy_T2: int32 [T, 2]; the agent's top-left corner in world pixels at each frame.
    respawn_steps: transitions i at which the agent fell into a pit and was put back on safe ground.
    coins_collected: coins touched during the episode.
    """

    frames_THWC: np.ndarray
    actions_T: np.ndarray
    effects_T: np.ndarray
    meanings: tuple[str, ...] = ACTION_MEANINGS
    agent_xy_T2: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))
    respawn_steps: tuple[int, ...] = ()
    coins_collected: int = 0


def effect_id(dx_sign: int, started_jump: bool) -> int:
    """Index (into ACTION_MEANINGS) of the action whose intended effect is this visible effect."""
    return _EFFECT_ID[(int(np.sign(dx_sign)), bool(started_jump))]


# ----------------------------------------------------------------------------------------------------------------
# Level generation


@dataclass(frozen=True, eq=False)
class Level:
    """A generated level: the tile grid plus the pre-rendered wide images a frame is cropped from.

    kind_RW: int8 [8, W] tile kinds (0 empty). solid_RW: bool [8, W].
    tiles_rgb: uint8 [size, W*tile_px + 2*pad, 3] and tiles_mask: bool [size, W*tile_px + 2*pad], the tile
        layer with ``pad`` empty pixels on each side (world x = image x - pad).
    background: [size, ~(W*tile_px + 2*pad)/2 + size, 3], scrolled at half the camera speed.
    """

    config: PlatformerConfig
    kind_RW: np.ndarray
    solid_RW: np.ndarray
    tiles_rgb: np.ndarray
    tiles_mask: np.ndarray
    background: np.ndarray
    pad: int
    enemies: np.ndarray  # int64 [E, 4]: lo_x, hi_x, y, phase (pixels); walk between lo_x and hi_x
    coins_xy: np.ndarray  # int64 [C, 2]: top-left of each coin, sorted by x
    coin_phase: np.ndarray  # int64 [C]
    spawn_cols: np.ndarray  # columns where the agent can stand safely, ascending
    background_style: str
    palette_id: int

    @property
    def width(self) -> int:
        return self.kind_RW.shape[1]

    def tile_layer(self, camera_x: int) -> tuple[np.ndarray, np.ndarray]:
        """The tile layer as seen by a camera whose left edge is at world x ``camera_x``: rgb [H,W,3], mask [H,W]."""
        x0 = camera_x + self.pad
        size = self.config.size
        return self.tiles_rgb[:, x0:x0 + size], self.tiles_mask[:, x0:x0 + size]

    @cached_property
    def tiles_mask_HWC(self) -> np.ndarray:
        # np.copyto with a full-shape mask is ~6x faster than with a broadcast [H, W, 1] one.
        return np.repeat(self.tiles_mask[:, :, None], 3, axis=2)


def generate_level(seed: int, config: PlatformerConfig = PlatformerConfig()) -> Level:
    """Builds the level for ``seed``: terrain, platforms, enemies, coins, palette and background."""
    rng = np.random.default_rng([int(seed), 0])
    kind = _generate_terrain(rng, config.level_tiles)
    solid = kind != _EMPTY
    top_row = _top_solid_row(solid)
    p, size = config.tile_px, config.size
    palette_id = int(rng.integers(len(_PALETTES)))
    style = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    tiles_rgb, tiles_mask, pad = _render_tile_layer(kind, _jitter(rng, _PALETTES[palette_id]), p, rng)
    background = _render_background(rng, style, size, tiles_rgb.shape[1] // 2 + size + 2)
    spawn = [c for c in range(3, config.level_tiles - 3)
             if 2 <= top_row[c] < ROWS and top_row[c - 1] < ROWS and top_row[c + 1] < ROWS]
    enemies = _place_enemies(rng, top_row, config)
    coins_xy, coin_phase = _place_coins(rng, solid, top_row, config)
    return Level(config=config, kind_RW=kind, solid_RW=solid, tiles_rgb=tiles_rgb, tiles_mask=tiles_mask,
                 background=background, pad=pad, enemies=enemies, coins_xy=coins_xy, coin_phase=coin_phase,
                 spawn_cols=np.asarray(spawn, np.int64), background_style=style, palette_id=palette_id)


def _generate_terrain(rng: np.random.Generator, width: int) -> np.ndarray:
    """Tile kinds [8, width]: boundary walls, ground segments of varying height with pits, blocks, platforms."""
    kind = np.zeros((ROWS, width), np.int8)
    kind[:, :2] = _WALL  # full-height boundary walls: the agent can never leave the level
    kind[:, width - 2:] = _WALL
    top = 6  # ground top row; the ground fills rows top..7
    c = 2
    while c < width - 2:
        if 10 < c < width - 12 and rng.random() < 0.16:
            c += int(rng.integers(1, 4))  # a pit, 1-3 tiles wide (empty columns)
            continue
        top = int(np.clip(top + rng.choice([-2, -1, -1, 0, 0, 1, 1, 2]), 4, 7))
        seg = int(min(rng.integers(3, 12), width - 2 - c))
        kind[top, c:c + seg] = _GROUND_TOP
        kind[top + 1:, c:c + seg] = _GROUND
        if seg >= 5 and top >= 5 and rng.random() < 0.25:  # a block to jump over (or run into)
            b = c + int(rng.integers(1, seg - 2))
            h = int(rng.integers(1, 3))
            kind[top - h:top, b] = _WALL
        c += seg
    # Floating platforms, 2-5 tiles long, with room for the agent (1.5 tiles) above and below them.
    top_row = _top_solid_row(kind != _EMPTY)
    for _ in range(width // 5):
        length = int(rng.integers(2, 6))
        c0 = int(rng.integers(3, width - 3 - length))
        under = int(min(top_row[c0:c0 + length].min(), ROWS - 1))
        row = under - int(rng.integers(3, 5))
        if row < 2:
            continue
        if (kind[max(row - 2, 0):row + 3, c0 - 1:c0 + length + 1] != _EMPTY).any():
            continue  # keep platforms apart so every gap is passable
        kind[row, c0:c0 + length] = _PLATFORM
    return kind


def _top_solid_row(solid_RW: np.ndarray) -> np.ndarray:
    """Per column, the topmost solid row (8 where the column is empty, i.e. a pit)."""
    any_solid = solid_RW.any(axis=0)
    return np.where(any_solid, solid_RW.argmax(axis=0), ROWS)


def _place_enemies(rng: np.random.Generator, top_row: np.ndarray, config: PlatformerConfig) -> np.ndarray:
    """Enemies patrol flat runs (>= 3 tiles) of the topmost surface: rows [lo_x, hi_x, y, phase]."""
    p = config.tile_px
    runs = []
    c = 2
    width = len(top_row)
    while c < width - 2:
        r = top_row[c]
        e = c
        while e < width - 2 and top_row[e] == r:
            e += 1
        if r < ROWS and r >= 1 and e - c >= 3:
            runs.append((c, e, int(r)))
        c = e
    n = min(len(runs), int(round(config.enemies_per_100_tiles * width / 100)))
    chosen = sorted(rng.choice(len(runs), size=n, replace=False)) if n else []
    enemy_h = 3 * p // 4
    rows = []
    for i in chosen:
        c0, c1, r = runs[i]
        lo, hi = c0 * p, c1 * p - p
        rows.append((lo, hi, r * p - enemy_h, int(rng.integers(0, 2 * (hi - lo)))))
    return np.asarray(rows, np.int64).reshape(-1, 4)


def _place_coins(rng: np.random.Generator, solid: np.ndarray, top_row: np.ndarray,
                 config: PlatformerConfig) -> tuple[np.ndarray, np.ndarray]:
    """Coins float 1-2 tiles above a surface in empty cells: top-left [C, 2] sorted by x, and blink phases."""
    p = config.tile_px
    width = solid.shape[1]
    n = int(round(config.coins_per_100_tiles * width / 100))
    coin = p // 2
    xy = []
    for c in rng.choice(np.arange(3, width - 3), size=min(n, width - 6), replace=False):
        r = int(top_row[c]) - int(rng.integers(1, 3))
        if r < 0 or top_row[c] >= ROWS or solid[r, c]:
            continue
        xy.append((c * p + (p - coin) // 2, r * p + (p - coin) // 2))
    xy_C2 = np.asarray(sorted(xy), np.int64).reshape(-1, 2)
    return xy_C2, rng.integers(0, 12, size=len(xy_C2)).astype(np.int64)


# ----------------------------------------------------------------------------------------------------------------
# Drawing the wide layers (once per level)


def _jitter(rng: np.random.Generator, colours: Sequence[Sequence[int]], amount: int = 14) -> np.ndarray:
    base = np.asarray(colours, np.int64)
    return np.clip(base + rng.integers(-amount, amount + 1, size=base.shape), 0, 255).astype(np.uint8)


def _tile_images(palette: np.ndarray, p: int) -> dict[int, np.ndarray]:
    """One [p, p, 3] image per tile kind. Darker tile edges make scrolling visible even on flat ground."""
    grass, dirt, plat, wall = (palette[i].astype(np.int64) for i in range(4))
    edge = max(1, p // 8)

    def bordered(colour: np.ndarray, dark: float = 0.65) -> np.ndarray:
        img = np.empty((p, p, 3), np.int64)
        img[:] = colour
        img[-edge:, :] = colour * dark
        img[:, -edge:] = colour * dark
        return img

    ground = bordered(dirt)
    ground[p // 4:p // 4 + edge, p // 4:p // 4 + edge] = dirt * 0.75  # a speck of texture
    top = bordered(dirt)
    top[:max(edge, p // 3)] = grass
    top[:max(edge, p // 3), -edge:] = grass * 0.8
    platform = bordered(plat, 0.55)
    platform[:edge] = np.minimum(plat * 1.3, 255)  # lit top edge
    block = bordered(wall, 0.55)
    block[p // 2 - edge // 2:p // 2 - edge // 2 + edge, :] = wall * 0.55  # brick mortar line
    images = {_GROUND_TOP: top, _GROUND: ground, _PLATFORM: platform, _WALL: block}
    return {k: np.clip(v, 0, 255).astype(np.uint8) for k, v in images.items()}


def _render_tile_layer(kind_RW: np.ndarray, palette: np.ndarray, p: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Draws the whole tile grid once, padded by one screen width of empty pixels on each side.

    Every tile gets its own shade and a speck at its own place. A run step scrolls exactly one tile, so identical
    tiles would look the same after a step: the variation is what makes running visible on flat ground.
    """
    rows, width = kind_RW.shape
    size = rows * p
    pad = size
    rgb = np.zeros((size, width * p + 2 * pad, 3), np.uint8)
    mask = np.zeros(rgb.shape[:2], bool)
    shade = rng.uniform(0.62, 1.18, size=(rows, width))
    speck = rng.integers(0, p - max(1, p // 8), size=(rows, width, 2))
    for k, img in _tile_images(palette, p).items():
        for r, c in zip(*np.nonzero(kind_RW == k)):
            tile = img.astype(np.float32) * shade[r, c]
            y, x = speck[r, c]
            tile[y:y + max(1, p // 8), x:x + max(1, p // 8)] *= 0.6
            rgb[r * p:(r + 1) * p, pad + c * p:pad + (c + 1) * p] = np.clip(tile, 0, 255).astype(np.uint8)
            mask[r * p:(r + 1) * p, pad + c * p:pad + (c + 1) * p] = True
    return rgb, mask, pad


def _render_background(rng: np.random.Generator, style: str, height: int, width: int) -> np.ndarray:
    """A wide background image: a vertical sky gradient plus clouds, hills or stars."""
    skies = {"clouds": ((95, 155, 250), (185, 225, 255)), "hills": ((125, 190, 250), (205, 235, 250)),
             "sunset": ((250, 115, 85), (255, 205, 130)), "night": ((8, 10, 38), (40, 42, 95))}
    top, bottom = (_jitter(rng, c, 10).astype(np.float64) for c in skies[style])
    t = np.linspace(0.0, 1.0, height)[:, None]
    sky = (top * (1 - t) + bottom * t).astype(np.uint8)
    img = np.broadcast_to(sky[:, None, :], (height, width, 3)).copy()
    xs = np.arange(width)
    if style in ("hills", "sunset"):
        # Two ranges of rolling hills; the far one lighter. Heights in fractions of the screen.
        colours = ((95, 165, 130), (70, 135, 95)) if style == "hills" else ((150, 80, 120), (100, 50, 90))
        for depth, colour in enumerate(_jitter(rng, colours, 10)):
            f1, f2 = rng.uniform(0.01, 0.03, size=2) * (64 / height) * (1 + depth)
            ph1, ph2 = rng.uniform(0, 2 * np.pi, size=2)
            h = height * (0.45 + 0.1 * depth + 0.08 * np.sin(xs * f1 + ph1) + 0.05 * np.sin(xs * f2 + ph2))
            rows = np.arange(height)[:, None]
            img[rows >= h[None, :]] = colour
    if style == "clouds":
        for _ in range(width // max(height // 2, 8)):
            cx, cy = rng.uniform(0, width), rng.uniform(0.1, 0.45) * height
            rx, ry = rng.uniform(0.08, 0.18) * height, rng.uniform(0.04, 0.07) * height
            y0, y1 = int(max(cy - ry, 0)), int(min(cy + ry + 1, height))
            x0, x1 = int(max(cx - rx, 0)), int(min(cx + rx + 1, width))
            yy, xx = np.mgrid[y0:y1, x0:x1]
            inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
            img[y0:y1, x0:x1][inside] = (245, 248, 255)
    if style == "night":
        n = width * height // 60
        ys, xs_ = rng.integers(0, int(height * 0.7), n), rng.integers(0, width, n)
        img[ys, xs_] = rng.integers(150, 256, size=(n, 1)).astype(np.uint8)
    return img


def _sprite(p: int, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Sprite (rgb [h, w, 3], mask [h, w, 3]) drawn procedurally at tile size p."""
    q = max(1, p // 4)
    if layout == "agent":  # 1 tile wide, 1.5 tiles tall: head, magenta body, dark legs
        h, w = 3 * p // 2, p
        rgb = np.zeros((h, w, 3), np.uint8)
        mask = np.zeros((h, w), bool)
        head = p // 2
        rgb[:head, q:w - q] = _AGENT_HEAD
        mask[:head, q:w - q] = True
        rgb[head:h - q] = _AGENT_BODY
        mask[head:h - q] = True
        rgb[h - q:] = _AGENT_LEGS
        mask[h - q:, :q] = mask[h - q:, w - q:] = True
        if p >= 8:
            rgb[head // 2, w // 2] = (20, 20, 20)  # an eye
        return rgb, np.repeat(mask[:, :, None], 3, axis=2)
    if layout == "enemy":  # 1 tile wide, 3/4 tile tall red blob with eyes
        h, w = 3 * p // 4, p
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[:] = _ENEMY_BODY
        rgb[h - q:] = _ENEMY_DARK
        mask = np.ones((h, w), bool)
        mask[0, 0] = mask[0, w - 1] = False
        rgb[q, q:2 * q] = rgb[q, w - 2 * q:w - q] = (255, 255, 255)
        return rgb, np.repeat(mask[:, :, None], 3, axis=2)
    if layout == "coin":  # half a tile, gold
        s = p // 2
        rgb = np.zeros((s, s, 3), np.uint8)
        rgb[:] = _COIN
        mask = np.ones((s, s), bool)
        if s >= 4:
            mask[0, 0] = mask[0, -1] = mask[-1, 0] = mask[-1, -1] = False
            rgb[1:-1, s // 2] = _COIN_EDGE
        return rgb, np.repeat(mask[:, :, None], 3, axis=2)
    raise ValueError(layout)


def _blit(frame_HWC: np.ndarray, sprite: tuple[np.ndarray, np.ndarray], x: int, y: int) -> None:
    """Pastes a sprite (rgb [h, w, 3], mask [h, w, 3]) with its top-left at (x, y), clipped to the frame."""
    rgb, mask = sprite
    h, w = mask.shape[:2]
    fh, fw = frame_HWC.shape[:2]
    if 0 <= x and x + w <= fw and 0 <= y and y + h <= fh:  # the common case: no clipping
        np.copyto(frame_HWC[y:y + h, x:x + w], rgb, where=mask)
        return
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, fw), min(y + h, fh)
    if x0 < x1 and y0 < y1:
        np.copyto(frame_HWC[y0:y1, x0:x1], rgb[y0 - y:y1 - y, x0 - x:x1 - x], where=mask[y0 - y:y1 - y, x0 - x:x1 - x])


# ----------------------------------------------------------------------------------------------------------------
# The game


class PlatformerGame:
    """One level plus the agent's state. ``step(action)`` advances one frame; ``render()`` draws the current one.

    Physics in integer pixels: horizontal speed tile_px per frame (the agent is always column-aligned), gravity
    tile_px/2, jump impulse 3*tile_px/2, so a jump rises 3 tiles and lasts 7 frames.
    """

    def __init__(self, seed: int, config: PlatformerConfig = PlatformerConfig(), level: Level | None = None):
        self.config = config
        self.level = level if level is not None else generate_level(seed, config)
        p = config.tile_px
        self.p = p
        self.agent_h = 3 * p // 2
        self.gravity = p // 2
        self.jump_speed = 3 * p // 2
        # The agent sits in a fixed, tile-aligned screen column next to the centre (the agent is one tile wide
        # and the screen 8 tiles, so it cannot be both exactly centred and aligned with the tile/patch grid).
        self.agent_screen_x = (config.size // 2 - p // 2) // p * p
        # Solid rows of each column as a bit mask: collision tests are then a couple of integer operations.
        self._col_bits = [int(sum(1 << r for r in range(ROWS) if self.level.solid_RW[r, c]))
                          for c in range(self.level.width)]
        self._top_row = _top_solid_row(self.level.solid_RW)
        self._agent_sprite = _sprite(p, "agent")
        self._enemy_sprite = _sprite(p, "enemy")
        self._coin_sprite = _sprite(p, "coin")
        self._enemy_speed = max(1, p // 4)
        self.coins_taken = np.zeros(len(self.level.coins_xy), bool)
        self._index_sprites()
        self.t = 0
        self.vy = 0
        spawn = self.level.spawn_cols
        middle = spawn[(spawn >= self.level.width // 4) & (spawn <= 3 * self.level.width // 4)]
        rng = np.random.default_rng([int(seed), 1])
        self.place_agent(int(rng.choice(middle if len(middle) else spawn)))

    # -- state -----------------------------------------------------------------------------------------------
    def place_agent(self, col: int) -> None:
        """Stands the agent on the topmost solid tile of column ``col``."""
        self.x = col * self.p
        self.y = int(self._top_row[col]) * self.p - self.agent_h
        self.vy = 0

    @property
    def col(self) -> int:
        return self.x // self.p

    @property
    def camera_x(self) -> int:
        """World x of the screen's left edge: the camera follows the agent with no clamping."""
        return self.x - self.agent_screen_x

    def _blocked(self, col: int, y_top: int, y_bottom: int) -> bool:
        """Does any solid tile of column ``col`` overlap the pixel rows [y_top, y_bottom)?"""
        if col < 0 or col >= len(self._col_bits) or y_bottom <= 0:
            return False
        r0 = max(y_top // self.p, 0)
        r1 = min((y_bottom - 1) // self.p, ROWS - 1)
        if r1 < r0:
            return False
        span = ((1 << (r1 + 1)) - 1) ^ ((1 << r0) - 1)
        return bool(self._col_bits[col] & span)

    def on_ground(self) -> bool:
        bottom = self.y + self.agent_h
        return bottom % self.p == 0 and self._blocked(self.col, bottom, bottom + 1)

    # -- dynamics --------------------------------------------------------------------------------------------
    def step(self, action: int) -> tuple[int, bool, bool]:
        """Advances one frame. Returns (dx sign the agent actually moved, jump started visibly, respawned)."""
        dx, jump = _ACTION_DX[action], _ACTION_JUMP[action]
        p, h = self.p, self.agent_h
        grounded = self.on_ground()
        rising = False
        if jump and grounded:
            self.vy = -self.jump_speed
            rising = True
        moved = 0
        if dx and not self._blocked(self.col + dx, self.y, self.y + h):
            self.x += dx * p
            moved = dx
        elif dx and grounded and not self._blocked(self.col + dx, self.y - p, self.y + h - p) \
                and not self._blocked(self.col, self.y - p, self.y):
            # A one-tile step is climbed on the way (as in most platformers), so running is rarely a no-op.
            self.y -= p
            self.x += dx * p
            moved = dx
        y0 = self.y
        if not grounded or rising:
            ny = self.y + self.vy
            if self.vy < 0:  # rising: stop under the first solid tile the head sweeps into, or the screen top
                for r in range((self.y - 1) // p, (ny // p) - 1, -1):
                    if r < 0 or self._blocked(self.col, r * p, r * p + 1):
                        ny = max((r + 1) * p, 0)
                        self.vy = 0
                        break
            else:  # falling: land on the first solid tile the feet sweep into
                for r in range(-(-(self.y + h) // p), -(-(ny + h) // p)):
                    if 0 <= r < ROWS and self._blocked(self.col, r * p, r * p + 1):
                        ny = r * p - h
                        self.vy = -self.gravity  # cancelled by gravity below: at rest
                        break
            self.y = ny
            self.vy = min(self.vy + self.gravity, self.jump_speed)
        else:
            self.vy = 0
        started_jump = rising and self.y < y0
        respawned = False
        if self.y >= self.config.size:  # fell into a pit: back on safe ground a little to the left
            self._respawn()
            respawned = True
        self._collect_coins()
        self.t += 1
        return moved, started_jump, respawned

    def _respawn(self) -> None:
        spawn = self.level.spawn_cols
        left = spawn[spawn <= self.col - 2]
        self.place_agent(int(left[-1]) if len(left) else int(spawn[0]))

    def _index_sprites(self) -> None:
        """Plain-Python lookup tables, so a frame touches only the few coins and enemies near the camera."""
        p, size, pad = self.p, self.config.size, self.level.pad
        n_keys = self.level.tiles_rgb.shape[1] // p + 1  # key = (camera_x + pad) // p
        self._enemies = [tuple(int(v) for v in row) for row in self.level.enemies]
        self._coins = [(int(x), int(y), int(ph)) for (x, y), ph in zip(self.level.coins_xy, self.level.coin_phase)]
        self._enemies_near: list[list[int]] = [[] for _ in range(n_keys)]
        self._coins_near: list[list[int]] = [[] for _ in range(n_keys)]
        self._coins_in_col: dict[int, list[int]] = {}
        for table, spans in ((self._enemies_near, [(e[0], e[1] + p) for e in self._enemies]),
                             (self._coins_near, [(c[0], c[0] + p) for c in self._coins])):
            for i, (x0, x1) in enumerate(spans):  # visible while the camera's [cam, cam+size) meets [x0, x1)
                for k in range(max((x0 - size + pad) // p, 0), min((x1 + pad) // p + 1, n_keys)):
                    table[k].append(i)
        for i, (x, _, _) in enumerate(self._coins):
            self._coins_in_col.setdefault(x // p, []).append(i)

    def _collect_coins(self) -> None:
        # The agent is exactly one column wide and coins sit inside a tile: only its own column can touch it.
        s = self.p // 2
        for i in self._coins_in_col.get(self.col, ()):
            cy = self._coins[i][1]
            if not self.coins_taken[i] and cy < self.y + self.agent_h and cy + s > self.y:
                self.coins_taken[i] = True

    def enemy_position(self, i: int) -> tuple[int, int]:
        """Top-left world pixels of enemy i now: a triangle-wave patrol between its lo_x and hi_x."""
        lo, hi, y, phase = self._enemies[i]
        span = max(hi - lo, 1)
        s = (self.t * self._enemy_speed + phase) % (2 * span)
        return lo + (s if s <= span else 2 * span - s), y

    # -- drawing ---------------------------------------------------------------------------------------------
    def render(self) -> np.ndarray:
        """The current frame, uint8 [size, size, 3]."""
        size, lvl = self.config.size, self.level
        cam = self.camera_x
        bx = (cam + lvl.pad) // 2  # parallax: the background moves at half speed
        frame = lvl.background[:, bx:bx + size].copy()
        x0 = cam + lvl.pad
        np.copyto(frame, lvl.tiles_rgb[:, x0:x0 + size], where=lvl.tiles_mask_HWC[:, x0:x0 + size])
        key = x0 // self.p
        for i in self._coins_near[key]:
            x, y, phase = self._coins[i]
            # Coins blink: hidden 3 frames out of 12, each on its own phase.
            if not self.coins_taken[i] and (self.t + phase) % 12 < 9:
                _blit(frame, self._coin_sprite, x - cam, y)
        for i in self._enemies_near[key]:
            ex, ey = self.enemy_position(i)
            _blit(frame, self._enemy_sprite, ex - cam, ey)
        _blit(frame, self._agent_sprite, self.agent_screen_x, self.y)
        return frame


# ----------------------------------------------------------------------------------------------------------------
# Episodes


def random_policy(seed: int, num_actions: int, config: PlatformerConfig = PlatformerConfig()) -> np.ndarray:
    """int32 [num_actions]: actions sampled (noop down-weighted) and each held for hold_min..hold_max frames."""
    rng = np.random.default_rng([int(seed), 2])
    weights = np.ones(len(ACTION_MEANINGS))
    weights[0] = config.noop_weight
    n = num_actions // config.hold_min + 1
    choices = rng.choice(len(ACTION_MEANINGS), size=n, p=weights / weights.sum())
    holds = rng.integers(config.hold_min, config.hold_max + 1, size=n)
    return np.repeat(choices, holds)[:num_actions].astype(np.int32)


def play_episode(seed: int, num_frames: int, config: PlatformerConfig = PlatformerConfig(), *,
                 render: bool = True) -> Episode:
    """Plays the random policy for ``num_frames`` frames on the level of ``seed``.

    Deterministic in (seed, num_frames, config). With ``render=False`` nothing is drawn (frames_THWC is
    [0, size, size, 3]) but actions, effects and positions are identical: a fast way to get labels.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    game = PlatformerGame(seed, config)
    actions_T = random_policy(seed, num_frames - 1, config)
    size = config.size
    frames_THWC = np.empty((num_frames if render else 0, size, size, 3), np.uint8)
    effects_T = np.empty(num_frames - 1, np.int32)
    agent_xy_T2 = np.empty((num_frames, 2), np.int32)
    respawns = []
    agent_xy_T2[0] = game.x, game.y
    if render:
        frames_THWC[0] = game.render()
    for i, a in enumerate(actions_T.tolist()):
        moved, started_jump, respawned = game.step(a)
        effects_T[i] = _EFFECT_ID[(moved, started_jump)]
        if respawned:
            respawns.append(i)
        agent_xy_T2[i + 1] = game.x, game.y
        if render:
            frames_THWC[i + 1] = game.render()
    return Episode(frames_THWC=frames_THWC, actions_T=actions_T, effects_T=effects_T, meanings=ACTION_MEANINGS,
                   agent_xy_T2=agent_xy_T2, respawn_steps=tuple(respawns),
                   coins_collected=int(game.coins_taken.sum()))


def write_episode_gif(path: str | os.PathLike, frames_THWC: np.ndarray, *, scale: int = 4, fps: int = 10) -> Path:
    """Writes frames uint8 [T, H, W, 3] as an upscaled, looping GIF (nearest neighbour: pixels stay crisp)."""
    from PIL import Image

    path = Path(path)
    big = np.repeat(np.repeat(np.asarray(frames_THWC, np.uint8), scale, axis=1), scale, axis=2)
    images = [Image.fromarray(f) for f in big]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Action sidecar files: <clip>.actions.json next to a recorded clip


def sidecar_path(clip_path: str | os.PathLike) -> Path:
    """``run1.mp4`` -> ``run1.actions.json`` (a path already ending in .actions.json is returned as is)."""
    path = Path(clip_path)
    if path.name.endswith(".actions.json"):
        return path
    return path.with_name(path.name[:-len(path.suffix)] + ".actions.json" if path.suffix else
                          path.name + ".actions.json")


def write_actions_sidecar(path: str | os.PathLike, actions: Sequence[int] | np.ndarray,
                          meanings: Sequence[str]) -> Path:
    """Writes {"actions": [...], "meanings": [...]} to the clip's sidecar atomically (temp file + rename)."""
    target = sidecar_path(path)
    data = {"actions": [int(a) for a in np.asarray(actions).reshape(-1)], "meanings": [str(m) for m in meanings]}
    _validate_sidecar(data, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp makes 0600; sidecars are read by other tools too
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_actions_sidecar(path: str | os.PathLike) -> tuple[np.ndarray, tuple[str, ...]]:
    """Reads and validates a sidecar (given the clip or the sidecar path): (actions int32 [N], meanings)."""
    target = sidecar_path(path)
    try:
        data = json.loads(target.read_text())
    except FileNotFoundError:
        raise ValueError(f"{target}: action sidecar not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{target}: not valid JSON ({exc})") from None
    _validate_sidecar(data, target)
    return np.asarray(data["actions"], np.int32), tuple(data["meanings"])


def _validate_sidecar(data: object, where: Path) -> None:
    if not isinstance(data, dict) or set(data) != {"actions", "meanings"}:
        raise ValueError(f"{where}: expected a JSON object with exactly the keys 'actions' and 'meanings'")
    meanings, actions = data["meanings"], data["actions"]
    if (not isinstance(meanings, list) or not meanings
            or not all(isinstance(m, str) and m for m in meanings) or len(set(meanings)) != len(meanings)):
        raise ValueError(f"{where}: 'meanings' must be a non-empty list of distinct non-empty strings")
    if not isinstance(actions, list) or not all(isinstance(a, int) and not isinstance(a, bool) for a in actions):
        raise ValueError(f"{where}: 'actions' must be a list of integers")
    bad = [a for a in actions if not -1 <= a < len(meanings)]
    if bad:
        raise ValueError(f"{where}: action {bad[0]} is outside [-1, {len(meanings)}) "
                         f"(-1 means unknown; there are {len(meanings)} meanings)")


__all__ = ["ACTION_MEANINGS", "Episode", "Level", "PlatformerConfig", "PlatformerGame", "effect_id",
           "generate_level", "play_episode", "random_policy", "read_actions_sidecar", "sidecar_path",
           "write_actions_sidecar", "write_episode_gif"]
