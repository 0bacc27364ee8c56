"""A torch-ops Kaldi fbank (the benchmark's torch reference; torchaudio is not installed here).

Follows the same documented algorithm as ``torchaudio.compliance.kaldi.fbank`` with
ImageBind's settings (fact sheet §5.3), written independently with torch tensor ops,
so the numpy front end can be timed against a torch implementation and cross-checked.
Imported only by the benchmark (torch is imported inside the functions).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray


def torch_clip_to_input(clip: NDArray[np.float32], mel: Any, mean: float = -4.268, std: float = 9.138) -> Any:
    """One 2 s 16 kHz mono clip -> normalised (1, 128, 204) log-mel, computed with torch ops."""
    import torch

    x = torch.from_numpy(clip).double()
    x = x - x.mean()
    frames = x.unfold(0, 400, 160)  # (n_frames, 400), snip_edges
    frames = frames - frames.mean(dim=1, keepdim=True)
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - 0.97 * prev
    n = torch.arange(400, dtype=torch.float64)
    frames = frames * (0.5 - 0.5 * torch.cos(2 * math.pi * n / 399))
    power = torch.fft.rfft(frames, n=512).abs() ** 2  # (n_frames, 257)
    energy = power[:, :256] @ mel.T
    logmel = torch.log(torch.clamp(energy, min=1.1920928955078125e-07)).T  # (128, n_frames)
    out = torch.zeros((128, 204), dtype=torch.float64)
    out[:, : logmel.shape[1]] = logmel[:, :204]
    return ((out - mean) / std).float()[None]


def torch_mel_matrix(n_mels: int = 128, rate_hz: int = 16000, low_hz: float = 20.0) -> Any:
    """(n_mels, 256) triangular Kaldi-mel weights over FFT bins 0..255 (31.25 Hz apart)."""
    import torch

    def mel(f: Any) -> Any:
        return 1127.0 * torch.log1p(f / 700.0)

    high_hz = rate_hz / 2
    edges = torch.linspace(float(mel(torch.tensor(low_hz))), float(mel(torch.tensor(high_hz))), n_mels + 2)
    bins = mel(torch.arange(256, dtype=torch.float64) * rate_hz / 512)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins - left) / (centre - left)
    down = (right - bins) / (right - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0).double()
