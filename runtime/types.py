"""Core runtime types shared by every stage (stdlib + numpy only, never torch)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


class Modality(str, enum.Enum):
    """The six ImageBind modalities; values are the official dictionary keys."""

    VISION = "vision"
    TEXT = "text"
    AUDIO = "audio"
    DEPTH = "depth"
    THERMAL = "thermal"
    IMU = "imu"

    @classmethod
    def parse(cls, name: str) -> Modality:
        """Return the modality named ``name`` or raise ``ValueError`` listing the valid names."""
        try:
            return cls(name.strip().lower())
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown modality {name!r}: expected one of {valid}") from None


@dataclass(frozen=True)
class EmbeddingBatch:
    """Embeddings of one modality, one row per input, in input order.

    Attributes:
        modality: which encoder produced the rows.
        vectors: (B, D) float32, exactly the official forward's output (the
            per-modality postprocessing scale included; multi-clip inputs are
            the mean of the scaled clip vectors, as the official code does).
    """

    modality: Modality
    vectors: NDArray[np.float32]

    def unit(self) -> NDArray[np.float32]:
        """Return the rows L2-normalised: (B, D) float32 unit vectors."""
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        return (self.vectors / np.maximum(norms, 1e-12)).astype(np.float32)
