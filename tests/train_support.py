"""Shared helpers for the training tests: the micro model (six tiny towers that build in milliseconds)."""

from __future__ import annotations

from typing import Any

from export.config import ModelConfig, TowerConfig

IMAGE = (3, 2, 32, 32)
AUDIO = (1, 32, 32)


def micro_model_config(num_blocks: int = 1, audio_drop_path: float = 0.0) -> ModelConfig:
    """Six towers of width 16 with ``num_blocks`` blocks each on 32x32 inputs (IMAGE, AUDIO shapes above)."""

    def tower(shape: tuple[int, ...], kernel: tuple[int, ...], **kw: Any) -> TowerConfig:
        return TowerConfig(embed_dim=16, num_blocks=num_blocks, num_heads=2, input_shape=shape, kernel_size=kernel,
                           **kw)  # fmt: skip

    return ModelConfig(
        name="micro", out_embed_dim=16,
        vision=tower(IMAGE, (2, 16, 16)), text=tower((8,), (), vocab_size=64),
        audio=tower(AUDIO, (16, 16), stride=(16, 16), bias_kv=True, drop_path=audio_drop_path),
        depth=tower((1, 32, 32), (16, 16), bias_kv=True), thermal=tower((1, 32, 32), (16, 16), bias_kv=True),
        imu=tower((6, 64), (8,), bias_kv=True),
    )  # fmt: skip
