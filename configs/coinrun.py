"""CoinRun case study at the paper's sizes (Genie, Appendix F): 64x64, 16 frames.

Tokenizer 8+8 layers, width 512, 1024 codes, patch 4; LAM 8+8 layers, 6 codes; dynamics 12 layers, width 512.
Paper batches: tokenizer 48 (300k steps), LAM+dynamics 36 (200k steps); 25 MaskGIT steps, temperature 1.
"""

from genie_jax.config import (Config, DynamicsConfig, LAMConfig, StageTrainConfigs, TokenizerConfig, TrainConfig,
                              TransformerConfig)

WIDE = TransformerConfig(width=512, depth=8, heads=8, ffn_dim=2048)


def get_config() -> Config:
    return Config(
        name="coinrun",
        tokenizer=TokenizerConfig(patch=4, codebook_size=1024, code_dim=32, encoder=WIDE, decoder=WIDE),
        lam=LAMConfig(patch=16, num_actions=6, code_dim=32, encoder=WIDE, decoder=WIDE),
        dynamics=DynamicsConfig(transformer=TransformerConfig(width=512, depth=12, heads=8, ffn_dim=2048),
                                maskgit_steps=25, temperature=1.0),
        train=StageTrainConfigs(
            tokenizer=TrainConfig(steps=300_000, batch_size=48, lr=3e-4, min_lr=3e-5, warmup_steps=10_000),
            lam=TrainConfig(steps=200_000, batch_size=36, lr=3e-5, min_lr=3e-6, warmup_steps=5_000),
            dynamics=TrainConfig(steps=200_000, batch_size=36, lr=3e-5, min_lr=3e-6, warmup_steps=5_000,
                                 co_train_lam=True),
        ),
    )
