"""Demo preset: a 32x32 platformer, tiny models, trains all three stages on a 2-core CPU in minutes."""

from genie_jax.config import (Config, DynamicsConfig, LAMConfig, StageTrainConfigs, TokenizerConfig, TrainConfig,
                              TransformerConfig)

# Data the demo generates with the built-in platformer (genie demo reads these).
DEMO_DATA = {"episodes": 240, "frames_per_episode": 160, "size": 32, "clip_len": 16, "stride": 8,
             "val_fraction": 0.1, "seed": 0}

SMALL = TransformerConfig(width=96, depth=2, heads=4, ffn_dim=384)


def get_config() -> Config:
    common = dict(batch_size=8, num_frames=16, log_every=25, checkpoint_every=250, warmup_steps=50)
    return Config(
        name="demo",
        tokenizer=TokenizerConfig(patch=4, codebook_size=256, code_dim=32, encoder=SMALL,
                                  decoder=TransformerConfig(width=128, depth=2, heads=4, ffn_dim=512)),
        lam=LAMConfig(patch=8, num_actions=8, code_dim=32, encoder=SMALL, decoder=SMALL),
        dynamics=DynamicsConfig(transformer=TransformerConfig(width=128, depth=3, heads=4, ffn_dim=512),
                                maskgit_steps=8, temperature=1.0),
        train=StageTrainConfigs(
            tokenizer=TrainConfig(steps=800, lr=1e-3, min_lr=1e-4, **common),
            lam=TrainConfig(steps=800, lr=1e-3, min_lr=1e-4, **common),
            dynamics=TrainConfig(steps=800, lr=1e-3, min_lr=1e-4, **common),
        ),
    )
