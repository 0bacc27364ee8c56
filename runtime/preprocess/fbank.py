"""Kaldi-compatible log-mel filterbank features in numpy.

Equal to ``torchaudio.compliance.kaldi.fbank`` with the settings of the official
ImageBind audio loader (fact sheet §5.3): ``htk_compat=True``,
``use_energy=False``, ``window_type="hanning"``, ``dither=0``, 25 ms frames with
a 10 ms shift, everything else at its default. Per frame of ``N`` samples
(400 at 16 kHz):

1. frames are taken every ``shift`` samples (160), only those that fit entirely
   (``snip_edges``): ``n_frames = 1 + (len - N) // shift``;
2. subtract the frame mean (``remove_dc_offset``);
3. pre-emphasis ``y[j] = x[j] - 0.97 x[j-1]`` with ``x[-1] := x[0]``;
4. multiply by a symmetric Hann window ``0.5 - 0.5 cos(2 pi n / (N - 1))``;
5. zero-pad to the next power of two (512) and take the power spectrum
   ``|rfft|**2`` (257 bins);
6. apply triangular filters on the Kaldi mel scale ``1127 ln(1 + f / 700)``,
   edges evenly spaced in mel from ``low_freq_hz`` to ``high_freq_hz`` (0 or
   negative means Nyquist plus that value), evaluated at bin frequencies
   ``k * rate / 512``; the Nyquist bin has weight 0;
7. ``log(max(energy, log_floor))`` with ``log_floor`` = float32 epsilon.

No dithering is ever applied (the output is deterministic). Frames are batched
with stride tricks; the mel matrix is cached per configuration.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from runtime.config_util import DictConfig
from runtime.errors import ConfigError, InputError

_WINDOWS = ("hanning", "hamming", "povey", "rectangular")


@dataclass(frozen=True)
class FbankConfig(DictConfig):
    """Every constant of the Kaldi filterbank; the defaults are ImageBind's.

    Attributes:
        sample_rate_hz: rate of the input waveform in Hz.
        num_mel_bins: number of triangular mel filters (output columns).
        frame_length_ms: analysis window length in milliseconds (25 ms = 400 samples).
        frame_shift_ms: hop between frames in milliseconds (10 ms = 160 samples).
        preemphasis: pre-emphasis coefficient (0 disables it).
        low_freq_hz: lower edge of the first mel filter in Hz.
        high_freq_hz: upper edge of the last filter in Hz; ``<= 0`` means
            Nyquist plus this value (Kaldi convention), so 0 is Nyquist.
        remove_dc_offset: subtract each frame's mean before pre-emphasis.
        window: "hanning" (symmetric Hann, official), "hamming", "povey" or
            "rectangular".
        round_to_power_of_two: zero-pad each frame to the next power of two
            before the FFT.
        snip_edges: True (official): only frames that fit entirely in the
            signal. False: Kaldi's centred framing, ``(N + shift // 2) // shift``
            frames over the signal reflected at both ends.
        use_power: power spectrum ``|X|**2`` (True) or magnitude ``|X|``.
        use_log: take ``log(max(e, log_floor))`` of the filter energies.
        log_floor: smallest energy before the log; float32 machine epsilon.
    """

    sample_rate_hz: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    low_freq_hz: float = 20.0
    high_freq_hz: float = 0.0
    remove_dc_offset: bool = True
    window: str = "hanning"
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    use_power: bool = True
    use_log: bool = True
    log_floor: float = 1.1920928955078125e-07

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0 or self.num_mel_bins <= 0:
            raise ConfigError("FbankConfig: sample_rate_hz and num_mel_bins must be positive")
        if self.window not in _WINDOWS:
            raise ConfigError(f"FbankConfig: window must be one of {_WINDOWS}, got {self.window!r}")
        if self.frame_shift_samples < 1 or self.frame_length_samples < 2:
            raise ConfigError("FbankConfig: frame_length_ms/frame_shift_ms give frames under 2 samples")
        nyquist_hz = 0.5 * self.sample_rate_hz
        high_hz = self.high_freq_hz if self.high_freq_hz > 0 else nyquist_hz + self.high_freq_hz
        if not 0.0 <= self.low_freq_hz < high_hz <= nyquist_hz:
            raise ConfigError(
                f"FbankConfig: need 0 <= low_freq_hz < high_freq < Nyquist ({nyquist_hz} Hz), "
                f"got {self.low_freq_hz} and {high_hz}"
            )

    @property
    def frame_length_samples(self) -> int:
        """Window length in samples, ``int(rate * frame_length_ms / 1000)`` (400)."""
        return int(self.sample_rate_hz * self.frame_length_ms * 0.001)

    @property
    def frame_shift_samples(self) -> int:
        """Hop in samples, ``int(rate * frame_shift_ms / 1000)`` (160)."""
        return int(self.sample_rate_hz * self.frame_shift_ms * 0.001)

    @property
    def fft_size(self) -> int:
        """FFT length: the frame length, rounded up to a power of two if enabled (512)."""
        n = self.frame_length_samples
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    def num_frames(self, n_samples: int) -> int:
        """Frames produced by ``n_samples`` input samples (0 if shorter than one window)."""
        n, hop = self.frame_length_samples, self.frame_shift_samples
        if not self.snip_edges:
            return (n_samples + hop // 2) // hop
        return 0 if n_samples < n else 1 + (n_samples - n) // hop


def kaldi_fbank(wave: NDArray[np.floating], cfg: FbankConfig | None = None) -> NDArray[np.float32]:
    """Log-mel filterbank of a mono waveform, Kaldi/torchaudio compatible.

    Args:
        wave: float array of shape ``(N,)``, samples at ``cfg.sample_rate_hz``
            (nominally in [-1, 1]); not modified.
        cfg: filterbank settings; defaults to ImageBind's.

    Returns:
        float32 array of shape ``(n_frames, cfg.num_mel_bins)`` with
        ``n_frames = 1 + (N - frame_length) // frame_shift``; natural-log
        energies when ``cfg.use_log``.

    Raises:
        InputError: ``wave`` is not 1-D, is shorter than one frame (25 ms), or
            holds NaN/Inf.
    """
    cfg = cfg or FbankConfig()
    x = np.asarray(wave, dtype=np.float32)
    n = cfg.frame_length_samples
    if x.ndim != 1:
        raise InputError(f"kaldi_fbank: wave must be 1-D (samples,), got shape {x.shape}")
    if x.shape[0] < n:
        raise InputError(
            f"kaldi_fbank: {x.shape[0]} samples is shorter than one {cfg.frame_length_ms} ms frame "
            f"({n} samples); give a longer clip"
        )
    if not np.all(np.isfinite(x)):
        raise InputError("kaldi_fbank: wave contains NaN or Inf; clean the signal first")
    frames = _frames(x.astype(np.float64), cfg)
    spectrum = np.abs(np.fft.rfft(frames, n=cfg.fft_size, axis=1))
    if cfg.use_power:
        spectrum = spectrum * spectrum
    energies = spectrum @ _mel_matrix(cfg).T
    if cfg.use_log:
        energies = np.log(np.maximum(energies, cfg.log_floor))
    return energies.astype(np.float32)


def _frames(x: NDArray[np.float64], cfg: FbankConfig) -> NDArray[np.float64]:
    """Cut, de-mean, pre-emphasise and window the frames: ``(n_frames, frame_length)`` float64."""
    n, hop = cfg.frame_length_samples, cfg.frame_shift_samples
    n_frames = cfg.num_frames(x.shape[0])
    if not cfg.snip_edges:  # frame t is centred on t * hop + hop / 2; reflect (Kaldi) beyond the ends
        pad = n // 2 - hop // 2
        x = np.concatenate([x[:pad][::-1], x, x[::-1]]) if pad > 0 else np.concatenate([x[-pad:], x[::-1]])
    view = np.lib.stride_tricks.as_strided(
        x, shape=(n_frames, n), strides=(hop * x.strides[0], x.strides[0]), writeable=False
    )
    frames = view - view.mean(axis=1, keepdims=True) if cfg.remove_dc_offset else view.copy()
    if cfg.preemphasis != 0.0:
        previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
        frames -= cfg.preemphasis * previous
    return frames * _window(cfg.window, n)[None, :]


@functools.lru_cache(maxsize=8)
def _window(kind: str, n: int) -> NDArray[np.float64]:
    """Kaldi window of ``n`` samples (symmetric: the denominator is ``n - 1``)."""
    phase = 2.0 * math.pi * np.arange(n) / (n - 1)
    if kind == "hanning":
        return 0.5 - 0.5 * np.cos(phase)
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(phase)
    if kind == "povey":
        return (0.5 - 0.5 * np.cos(phase)) ** 0.85
    return np.ones(n)


def mel_scale(freq_hz: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """Kaldi/HTK mel scale ``1127 ln(1 + f / 700)`` of frequencies in Hz."""
    return 1127.0 * np.log1p(np.asarray(freq_hz, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=8)
def _mel_matrix(cfg: FbankConfig) -> NDArray[np.float64]:
    """Triangular mel filters: float64 ``(num_mel_bins, fft_size // 2 + 1)``, last column 0.

    Filter ``i`` rises from edge ``i`` to edge ``i + 1`` and falls to edge
    ``i + 2`` (edges evenly spaced in mel); weights are evaluated at the mel
    value of each FFT bin centre ``k * rate / fft_size``. The array is read-only.
    """
    n_fft_bins = cfg.fft_size // 2
    nyquist_hz = 0.5 * cfg.sample_rate_hz
    high_hz = cfg.high_freq_hz if cfg.high_freq_hz > 0 else nyquist_hz + cfg.high_freq_hz
    mel_low, mel_high = float(mel_scale(cfg.low_freq_hz)), float(mel_scale(high_hz))
    delta = (mel_high - mel_low) / (cfg.num_mel_bins + 1)
    i = np.arange(cfg.num_mel_bins, dtype=np.float64)[:, None]
    left, centre, right = mel_low + i * delta, mel_low + (i + 1) * delta, mel_low + (i + 2) * delta
    mel = mel_scale(np.arange(n_fft_bins) * (cfg.sample_rate_hz / cfg.fft_size))[None, :]
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = np.zeros((cfg.num_mel_bins, n_fft_bins + 1), dtype=np.float64)
    banks[:, :n_fft_bins] = np.maximum(0.0, np.minimum(up, down))
    banks.setflags(write=False)
    return banks
