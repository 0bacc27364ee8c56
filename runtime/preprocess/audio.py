"""Audio preprocessing for the ImageBind audio encoder, without torch.

Two entry points share one configuration (:class:`AudioPreprocess`):

* **Whole files, official behaviour** (:func:`file_to_clips`,
  :func:`load_audio_file`) reproduce ``imagebind.data.load_and_transform_audio_data``
  (fact sheet §5.3): resample to 16 kHz (torchaudio's windowed sinc), place 3
  clips of 2 s with pytorchvideo's ``ConstantClipsPerVideoSampler`` arithmetic
  (:func:`clip_ranges`), remove each clip's mean over *all* channels, take a
  Kaldi log-mel filterbank of channel 0 only (128 x 198 for 2 s), right-pad
  with zeros to 204 frames (or crop), then normalise ``(x - mean) / std``.

  **The aliasing quirk.** Upstream subtracts each clip's mean *in place on a
  view* of the whole waveform. Clips overlap (e.g. [0, 2 s) and [1.5 s, 3.5 s)
  for a 5 s file), so removing clip k's mean also shifts the samples clip k+1
  shares with it, before clip k+1's own mean is computed. The per-frame DC
  removal in the filterbank hides most of it, but frames straddling the
  boundary of the shifted region change: up to 0.53 in normalised units on the
  fixtures. With ``official_inplace_mean=True`` (default) we reproduce this
  exactly on a private copy of the waveform (the caller's array is never
  modified); ``False`` de-means a copy of each clip instead (the fixture
  ``audio_noalias_variant.npy``).

* **Streaming** (:func:`clip_to_input`) turns ONE clip (normally a 2 s window
  of 16 kHz mono audio from a live source) into one model input. A single
  clip shares no samples with another clip, so the aliasing quirk cannot
  occur: the mean is removed from a copy, which equals the official result
  for a first (non-overlapped) clip.

Outputs are float32 ``(clips, 1, num_mel_bins, target_frames)``, i.e.
``(3, 1, 128, 204)`` per file; stack files for a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from runtime.config_util import DictConfig
from runtime.errors import ConfigError, InputError
from runtime.preprocess.fbank import FbankConfig, kaldi_fbank
from runtime.preprocess.resample import resample
from runtime.preprocess.wav import read_wav


@dataclass(frozen=True)
class AudioPreprocess(DictConfig):
    """Every constant of the audio pipeline; the defaults are the official ones.

    Attributes:
        sample_rate_hz: model rate in Hz; other rates are resampled to it.
        clip_duration_s: length of each clip in seconds.
        clips_per_file: clips taken from each file, evenly spaced.
        target_frames: fbank frames per clip after zero-padding / cropping.
        mean: normalisation mean of the log-mel values (AudioSet statistic).
        std: normalisation std of the log-mel values.
        fbank: Kaldi filterbank settings (128 mel bins, 25 ms / 10 ms frames).
        resample_lowpass_filter_width: sinc zero crossings per side of the
            resampling kernel (torchaudio default 6).
        resample_rolloff: resampling cut-off as a fraction of the lower Nyquist
            rate (torchaudio default 0.99).
        official_inplace_mean: reproduce upstream's in-place mean removal on
            overlapping views of the waveform (see the module docstring); False
            de-means each clip independently.
    """

    sample_rate_hz: int = 16000
    clip_duration_s: float = 2.0
    clips_per_file: int = 3
    target_frames: int = 204
    mean: float = -4.268
    std: float = 9.138
    fbank: FbankConfig = field(default_factory=FbankConfig)
    resample_lowpass_filter_width: int = 6
    resample_rolloff: float = 0.99
    official_inplace_mean: bool = True

    def __post_init__(self) -> None:
        if self.fbank.sample_rate_hz != self.sample_rate_hz:
            raise ConfigError(
                f"AudioPreprocess: fbank.sample_rate_hz ({self.fbank.sample_rate_hz}) must equal "
                f"sample_rate_hz ({self.sample_rate_hz})"
            )
        if self.sample_rate_hz <= 0 or self.clips_per_file < 1 or self.target_frames < 1:
            raise ConfigError("AudioPreprocess: sample_rate_hz, clips_per_file, target_frames must be >= 1")
        if self.clip_duration_s <= 0 or self.std <= 0:
            raise ConfigError("AudioPreprocess: clip_duration_s and std must be positive")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one clip's model input: ``(1, num_mel_bins, target_frames)``."""
        return (1, self.fbank.num_mel_bins, self.target_frames)


def clip_ranges(n_samples: int, cfg: AudioPreprocess | None = None) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` of the clips of a waveform, as upstream computes them.

    pytorchvideo's ``ConstantClipsPerVideoSampler`` gets the duration as a
    float ``D = n_samples / rate``; the latest start ``max(D - clip, 0)`` is a
    float subtraction, turned into an exact ``Fraction``; clip k starts at
    ``Fraction(latest, max(clips - 1, 1)) * k`` and ends ``clip`` seconds later;
    the slice is ``int(t * rate)`` (truncation). Float rounding of ``D - clip``
    can land just below a sample boundary: 68800 samples (4.3 s) give
    ``[18399, 50399)``, not 18400.

    Args:
        n_samples: waveform length in samples at ``cfg.sample_rate_hz``.
        cfg: pipeline settings; defaults to the official ones.

    Returns:
        ``clips_per_file`` pairs ``(start, end)`` in samples. ``end`` may
        exceed ``n_samples`` for files shorter than one clip (slices clamp).
    """
    cfg = cfg or AudioPreprocess()
    rate = cfg.sample_rate_hz
    clip_s = Fraction(cfg.clip_duration_s)
    duration_s = n_samples / rate
    latest_start_s = Fraction(max(duration_s - float(clip_s), 0))
    step_s = Fraction(latest_start_s, max(cfg.clips_per_file - 1, 1))
    ranges = []
    for k in range(cfg.clips_per_file):
        start_s = step_s * k
        ranges.append((int(start_s * rate), int((start_s + clip_s) * rate)))
    return ranges


def file_to_clips(
    waveform: NDArray[np.floating], rate_hz: int, cfg: AudioPreprocess | None = None
) -> NDArray[np.float32]:
    """Official per-file audio preprocessing: waveform in, model-ready clips out.

    Args:
        waveform: float array ``(channels, samples)`` (or ``(samples,)`` for
            mono) in [-1, 1] at ``rate_hz``; never modified.
        rate_hz: sample rate of ``waveform`` in Hz (positive integer).
        cfg: pipeline settings; defaults to the official ones.

    Returns:
        float32 ``(clips_per_file, 1, num_mel_bins, target_frames)``,
        ``(3, 1, 128, 204)`` by default.

    Raises:
        InputError: bad shape, NaN/Inf, non-positive rate, or a clip shorter
            than one 25 ms fbank frame.
    """
    cfg = cfg or AudioPreprocess()
    # a private float32 copy: the in-place quirk below must never reach the caller's array
    wave = _checked_waveform(waveform, rate_hz, "file_to_clips")
    if rate_hz != cfg.sample_rate_hz:
        wave = resample(wave, int(rate_hz), cfg.sample_rate_hz, cfg.resample_lowpass_filter_width, cfg.resample_rolloff)
    clips = []
    for start, end in clip_ranges(wave.shape[1], cfg):
        clip = wave[:, start:end]  # a view into the shared buffer, as upstream
        if not cfg.official_inplace_mean:
            clip = clip.copy()
        clip -= _global_mean(clip)
        clips.append(_melspec(clip[0], cfg, "file_to_clips"))
    return np.stack(clips)


def clip_to_input(clip: NDArray[np.floating], cfg: AudioPreprocess | None = None) -> NDArray[np.float32]:
    """Streaming path: one mono clip at ``cfg.sample_rate_hz`` to one model input.

    The clip's mean is removed on a copy (a single window overlaps no other
    clip, so the official aliasing quirk does not apply), then filterbank,
    pad/crop to ``target_frames`` and normalisation as in :func:`file_to_clips`.

    Args:
        clip: float array ``(samples,)`` in [-1, 1] at ``cfg.sample_rate_hz``,
            normally ``clip_duration_s`` long (shorter clips are zero-padded in
            the frame axis, longer ones cropped); never modified.
        cfg: pipeline settings; defaults to the official ones.

    Returns:
        float32 ``(1, num_mel_bins, target_frames)``, ``(1, 128, 204)`` by default.

    Raises:
        InputError: not 1-D, NaN/Inf, or shorter than one 25 ms frame.
    """
    cfg = cfg or AudioPreprocess()
    x = np.asarray(clip)
    if x.ndim != 1:
        raise InputError(f"clip_to_input: clip must be 1-D mono (samples,), got shape {x.shape}")
    wave = _checked_waveform(x, cfg.sample_rate_hz, "clip_to_input")[0]  # a float32 copy
    wave -= _global_mean(wave)
    return _melspec(wave, cfg, "clip_to_input")


def load_audio_file(path: str | Path, cfg: AudioPreprocess | None = None) -> NDArray[np.float32]:
    """Read a WAV file and run :func:`file_to_clips` on it.

    Args:
        path: a PCM or float WAV file (any rate, any channel count).
        cfg: pipeline settings; defaults to the official ones.

    Returns:
        float32 ``(clips_per_file, 1, num_mel_bins, target_frames)``.

    Raises:
        InputError: unreadable file, or audio the pipeline rejects (message
            prefixed with the path).
    """
    waveform, rate_hz = read_wav(path)
    try:
        return file_to_clips(waveform, rate_hz, cfg)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def _checked_waveform(waveform: NDArray[np.floating], rate_hz: int, who: str) -> NDArray[np.float32]:
    """Validate and return a float32 ``(channels, samples)`` copy of ``waveform``."""
    if isinstance(rate_hz, bool) or not isinstance(rate_hz, (int, np.integer)) or rate_hz <= 0:
        raise InputError(f"{who}: rate_hz must be a positive integer, got {rate_hz!r}")
    x = np.array(waveform, dtype=np.float32, copy=True, ndmin=2)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"{who}: waveform must be (channels, samples), got shape {np.shape(waveform)}")
    if x.shape[1] == 0:
        raise InputError(f"{who}: waveform is empty (0 samples); give at least 25 ms of audio")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{who}: waveform contains NaN or Inf; clean the signal first")
    return x


def _global_mean(x: NDArray[np.float32]) -> np.float32:
    """Mean over every element, accumulated in float64, rounded to float32 (as torch's)."""
    return np.float32(x.mean(dtype=np.float64))


def _melspec(wave: NDArray[np.float32], cfg: AudioPreprocess, who: str) -> NDArray[np.float32]:
    """De-meaned mono clip ``(samples,)`` to normalised ``(1, num_mel_bins, target_frames)``."""
    n_min = cfg.fbank.frame_length_samples
    if wave.shape[0] < n_min:
        raise InputError(
            f"{who}: clip has {wave.shape[0]} samples, shorter than one {cfg.fbank.frame_length_ms} ms "
            f"frame ({n_min} samples at {cfg.sample_rate_hz} Hz); give longer audio"
        )
    feats = kaldi_fbank(wave, cfg.fbank).T  # (mels, frames)
    out = np.zeros((cfg.fbank.num_mel_bins, cfg.target_frames), dtype=np.float32)  # zero padding (log domain)
    n = min(feats.shape[1], cfg.target_frames)
    out[:, :n] = feats[:, :n]
    out -= np.float32(cfg.mean)
    out /= np.float32(cfg.std)
    return out[None]
