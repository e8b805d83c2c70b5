"""Demo preset: a 32x32 platformer, tiny models; trains all three stages on a 2-core CPU in about 10 minutes.

Differences from Genie's defaults, each to fit a CPU budget, and each a config value you can change:
- LAM decoder sees only the last frame and has a (per-patch) motion term (see LAMConfig): actions are held for
  several frames, so with history the decoder predicts most motion without the action; and a transformer needs
  far more steps than this budget to learn camera scrolls as token routing. The LAM encoder also gets a motion
  cost volume, so the direction of a scroll is in its input rather than learned from pixels.
- Tokenizer encoder is per patch (encoder.depth=0): the same patch gets the same token anywhere, so a one-tile
  camera scroll is an exact shift of the token grid.
- Dynamics spatial attention has a 2D rotary position embedding, so a camera scroll (every token moves one column)
  is one relative-offset pattern to learn rather than one per position.
- Dynamics training leaves half the frames unmasked (clean_frame_prob=0.5), so the model often sees a complete
  previous frame, as it always does when generating.
- Warmup-stable-decay schedules, so the short runs learn at full rate for most of their steps.
"""

import dataclasses

from genie_jax.config import (Config, DynamicsConfig, LAMConfig, StageTrainConfigs, TokenizerConfig, TrainConfig,
                              TransformerConfig)

# Data `genie demo` generates with the built-in platformer.
DEMO_DATA = {"episodes": 240, "frames_per_episode": 160, "size": 32, "clip_len": 16, "stride": 8,
             "val_fraction": 0.1, "seed": 0}

W96 = TransformerConfig(width=96, depth=2, heads=4, ffn_dim=384)


def get_config() -> Config:
    common = dict(num_frames=16, log_every=25, checkpoint_every=200, warmup_steps=30, schedule="wsd", lr=1e-3,
                  min_lr=1e-4)
    return Config(
        name="demo",
        tokenizer=TokenizerConfig(patch=4, codebook_size=256, code_dim=32,
                                  encoder=TransformerConfig(width=64, depth=0, heads=4, ffn_dim=128),
                                  decoder=TransformerConfig(width=64, depth=2, heads=4, ffn_dim=256)),
        lam=LAMConfig(patch=8, num_actions=8, code_dim=32, encoder=W96, decoder=W96, decoder_history=False,
                      global_motion_radius=4, global_motion_step=2, local_motion=True, cost_volume_radius=4),
        dynamics=DynamicsConfig(transformer=dataclasses.replace(W96, spatial_rope=True), maskgit_steps=8,
                                temperature=1.0, clean_frame_prob=0.5),
        train=StageTrainConfigs(
            tokenizer=TrainConfig(steps=540, batch_size=4, **common),
            lam=TrainConfig(steps=720, batch_size=8, **common),
            dynamics=TrainConfig(steps=660, batch_size=4, **common),
        ),
    )
