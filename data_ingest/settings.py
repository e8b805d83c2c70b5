"""The processing settings of a video ingest: what turns decoded frames into clips.

Everything here changes the clips a source yields, so it is hashed into each staged source's key: a rerun with
the same settings reuses the staged sources; one with other settings needs --overwrite, which redoes them. Settings
that only decide splits (fractions, seed) or speed (workers) are deliberately not part of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

RESIZE_POLICIES = ("crop", "pad", "stretch")


@dataclasses.dataclass(frozen=True)
class IngestSettings:
    """How frames are sampled, resized, filtered and cut. Thresholds are on the resized uint8 frames."""

    height: int = 64
    width: int = 64
    fps: float = 10.0  # target frame rate (Genie: 10)
    resize: str = "crop"  # crop: fill the frame, cut the overflow; pad: fit inside, black bars; stretch: distort
    clip_len: int = 16
    stride: int | None = None  # frames between clip starts; None = clip_len (no overlap)
    image_fps: float = 10.0  # frame rate of folders of numbered images (they carry no timestamps)
    min_seconds: float | None = None  # shorter videos are dropped; None = one clip's duration
    scene_threshold: float = 0.5  # colour-histogram distance in [0, 1] above which two frames are a scene cut
    blank_std: float = 4.0  # a frame whose grey levels vary less than this (std, 0-255) is blank
    static_seconds: float = 1.0  # an unchanged stretch this long is static (paused game, menu): dropped
    static_pixels: float = 0.002  # frames differ if more than this fraction of pixels changed by > 12 levels
    quality_filter: str = ""  # "module:function" scoring a clip in [0, 1]; "" = the built-in motion score
    min_quality: float = 0.5  # clips scoring below are dropped
    max_side: int = 8192  # videos or images with a side beyond this (or below 8 px) are refused as absurd

    def __post_init__(self) -> None:
        checks = [
            (self.height >= 8 and self.width >= 8, f"--height/--width must be >= 8, got {self.height}x{self.width}"),
            (0 < self.fps < math.inf and 0 < self.image_fps < math.inf,
             f"--fps, --image-fps must be > 0 and finite, got {self.fps}, {self.image_fps}"),
            (self.resize in RESIZE_POLICIES, f"--resize must be crop, pad or stretch, got {self.resize!r}"),
            (self.clip_len >= 2, f"--clip-len must be >= 2, got {self.clip_len}"),
            (self.stride is None or self.stride >= 1, f"--stride must be >= 1, got {self.stride}"),
            (self.min_seconds is None or 0 <= self.min_seconds < math.inf,
             f"--min-seconds must be >= 0 and finite, got {self.min_seconds}"),
            (0 < self.scene_threshold <= 1, f"--scene-threshold must be in (0, 1], got {self.scene_threshold}"),
            (0 < self.static_seconds < math.inf, f"--static-seconds must be > 0 and finite, got {self.static_seconds}"),
            (self.blank_std >= 0, f"--blank-std must be >= 0, got {self.blank_std}"),
            (0 <= self.min_quality <= 1, f"--min-quality must be in [0, 1], got {self.min_quality}"),
            (self.max_side >= 64, f"--max-side must be >= 64, got {self.max_side}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.stride == self.clip_len:  # the same clips as no --stride: the same staged sources too
            object.__setattr__(self, "stride", None)

    @property
    def clip_stride(self) -> int:
        return self.clip_len if self.stride is None else self.stride

    @property
    def min_frames(self) -> int:
        """Output frames a video needs to be kept at all (at least one clip's worth)."""
        seconds = self.clip_len / self.fps if self.min_seconds is None else self.min_seconds
        return max(self.clip_len, round(seconds * self.fps))

    @property
    def static_frames(self) -> int:
        return max(2, round(self.static_seconds * self.fps))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Identifies the processing: part of every staged source's key."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["RESIZE_POLICIES", "IngestSettings"]
