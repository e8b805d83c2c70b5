"""CoinRun at Jasmine's defaults (p-doom, arXiv:2510.27002): 64x64, 16 frames, patch 16, width 512, FFN 2048,
tokenizer and LAM 4 blocks, dynamics 6 blocks, 6 latent actions. Used to compare throughput like for like."""

import dataclasses
from pathlib import Path

from genie_jax.config import Config, DynamicsConfig, LAMConfig, TokenizerConfig, TransformerConfig, load_preset

BLOCKS4 = TransformerConfig(width=512, depth=4, heads=8, ffn_dim=2048)


def get_config() -> Config:
    paper = load_preset(Path(__file__).with_name("coinrun.py"))
    return dataclasses.replace(
        paper, name="coinrun_jasmine",
        tokenizer=TokenizerConfig(patch=16, codebook_size=1024, code_dim=32, encoder=BLOCKS4, decoder=BLOCKS4),
        lam=LAMConfig(patch=16, num_actions=6, code_dim=32, encoder=BLOCKS4, decoder=BLOCKS4),
        dynamics=DynamicsConfig(transformer=TransformerConfig(width=512, depth=6, heads=8, ffn_dim=2048),
                                maskgit_steps=25, temperature=1.0),
    )
