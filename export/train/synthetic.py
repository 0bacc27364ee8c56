"""A tiny class-separable paired dataset for tests and smoke runs of the trainer (no files needed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset


class SyntheticPairs(Dataset[dict[str, Any]]):
    """Rows of ``{"image", <modality>, "index", "label", "caption"}`` whose class is visible in both inputs.

    Each class has a fixed random prototype per input; a row is its class prototype
    plus Gaussian noise drawn from ``(seed, index)``, so a row never depends on the
    global RNG or on the order it is read in.

    Args:
        num_items: rows in the dataset.
        modality: the paired modality key (e.g. ``audio``).
        image_shape: one image row, e.g. ``(3, 2, 32, 32)``.
        modality_shape: one modality row, e.g. ``(1, 32, 32)``.
        num_classes: classes (labels ``index % num_classes``).
        noise: noise standard deviation relative to the unit prototypes.
        seed: prototype and noise seed.
    """

    def __init__(
        self,
        num_items: int,
        modality: str,
        image_shape: Sequence[int],
        modality_shape: Sequence[int],
        *,
        num_classes: int = 4,
        noise: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.num_items, self.modality, self.noise, self.seed = num_items, modality, noise, seed
        self.num_classes = num_classes
        gen = torch.Generator().manual_seed(seed)
        self.image_protos = torch.randn((num_classes, *image_shape), generator=gen)
        self.modality_protos = torch.randn((num_classes, *modality_shape), generator=gen)

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_items:
            raise IndexError(index)
        label = index % self.num_classes
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 17 + index)
        image = self.image_protos[label] + self.noise * torch.randn(self.image_protos.shape[1:], generator=gen)
        other = self.modality_protos[label] + self.noise * torch.randn(self.modality_protos.shape[1:], generator=gen)
        return {"image": image, self.modality: other, "index": index, "label": label, "caption": f"class {label}"}
