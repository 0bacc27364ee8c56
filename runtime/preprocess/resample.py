"""Band-limited (windowed-sinc) resampling equal to ``torchaudio.functional.resample``.

The official ImageBind audio loader resamples every file that is not at 16 kHz
with torchaudio's defaults: ``resampling_method="sinc_interp_hann"``,
``lowpass_filter_width=6``, ``rolloff=0.99`` (fact sheet §5.3). This module
implements that documented algorithm in numpy:

1. Reduce the rates by their gcd: ``orig = orig_hz / g``, ``new = new_hz / g``.
2. Cut-off ``base = rolloff * min(orig, new)`` (in units of the reduced rates),
   kernel half-width ``width = ceil(lowpass_filter_width * orig / base)`` input
   samples.
3. For each of the ``new`` output phases ``j`` and each tap offset ``i`` in
   ``[-width, width + orig)``: ``t = (i / orig - j / new) * base`` clamped to
   ``±lowpass_filter_width``; tap ``= sinc(pi t) * cos(pi t / (2 w))**2 * base / orig``
   (a Hann window over the sinc; ``sinc(0) = 1``).
4. Zero-pad the input by ``width`` on the left and ``width + orig`` on the right,
   slide the ``new`` kernels with a stride of ``orig`` input samples, interleave
   the phases, and keep the first ``ceil(new * N / orig)`` samples.

The kernel is built in float32 with the same operation order as torchaudio (it
builds it in the waveform's dtype), so results agree to float32 rounding.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.typing import NDArray

from runtime.errors import InputError


def resample(
    x: NDArray[np.floating],
    orig_hz: int,
    new_hz: int,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
) -> NDArray[np.float32]:
    """Resample the last axis of ``x`` from ``orig_hz`` to ``new_hz``.

    Args:
        x: float array of shape ``(..., N)`` (e.g. ``(channels, N)``), any
            float dtype; computed in float32.
        orig_hz: input sample rate in Hz (positive integer).
        new_hz: output sample rate in Hz (positive integer).
        lowpass_filter_width: sinc zero crossings on each side of the kernel
            centre (positive integer); wider is sharper and slower.
        rolloff: cut-off as a fraction of the lower Nyquist rate, in (0, 1].

    Returns:
        float32 array of shape ``(..., ceil(new_hz * N / orig_hz))``; a new
        array (``x`` itself is never modified, and is copied when the rates
        are equal).

    Raises:
        InputError: a rate or filter parameter is out of range.
    """
    _check_rate("orig_hz", orig_hz)
    _check_rate("new_hz", new_hz)
    _check_rate("lowpass_filter_width", lowpass_filter_width)
    if not 0.0 < float(rolloff) <= 1.0:
        raise InputError(f"resample: rolloff must be in (0, 1], got {rolloff!r}")
    wave = np.asarray(x, dtype=np.float32)
    if wave.ndim == 0:
        raise InputError("resample: x must have at least one axis (samples last)")
    if orig_hz == new_hz:
        return wave.copy()
    g = math.gcd(int(orig_hz), int(new_hz))
    orig, new = int(orig_hz) // g, int(new_hz) // g
    kernel, width = _sinc_kernel(orig, new, int(lowpass_filter_width), float(rolloff))
    lead_shape, n_in = wave.shape[:-1], wave.shape[-1]
    out = _apply_kernel(wave.reshape(-1, n_in), kernel, width, orig)
    n_out = _target_length(n_in, orig, new)
    return out[:, :n_out].astype(np.float32).reshape(*lead_shape, n_out)


def _apply_kernel(flat: NDArray[np.float32], kernel: NDArray[np.float32], width: int, orig: int) -> NDArray[np.float64]:
    """Strided polyphase convolution (torch ``conv1d`` with stride ``orig``), phases interleaved.

    Output step ``s`` of phase ``j`` is ``sum_k padded[s * orig + k] * kernel[j, k]``
    over the input zero-padded by ``width`` left and ``width + orig`` right. The
    taps are split into blocks of ``orig`` so each block is one contiguous
    matmul on the input viewed as ``(blocks, orig)``: memory stays O(N).

    Args:
        flat: float32 ``(rows, N)``.
        kernel: float32 ``(new, taps)`` from :func:`_sinc_kernel`.
        width: kernel half-width in input samples.
        orig: reduced input rate (the stride).

    Returns:
        float64 ``(rows, (N // orig + 1) * new)``, before trimming to the target length.
    """
    rows, n_in = flat.shape
    new, taps = kernel.shape
    n_steps = n_in // orig + 1  # conv1d output length: (N + 2w + orig - taps) // orig + 1
    n_blocks = -(-taps // orig)
    blocked = np.zeros((new, n_blocks * orig), dtype=np.float64)
    blocked[:, :taps] = kernel  # zero taps past the end meet only the extra zero padding below
    padded = np.zeros((rows, (n_steps + n_blocks - 1) * orig), dtype=np.float64)
    padded[:, width : width + n_in] = flat
    grid = padded.reshape(rows, n_steps + n_blocks - 1, orig)
    out = np.zeros((rows, n_steps, new), dtype=np.float64)
    for q in range(n_blocks):
        out += grid[:, q : q + n_steps] @ blocked[:, q * orig : (q + 1) * orig].T
    return out.reshape(rows, n_steps * new)


def _check_rate(name: str, value: object) -> None:
    """Raise a one-line InputError unless ``value`` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InputError(f"resample: {name} must be a positive integer, got {value!r}")


def _target_length(n_in: int, orig: int, new: int) -> int:
    """Output length ``ceil(new * N / orig)``, with the quotient rounded to float32 first.

    torchaudio evaluates ``torch.ceil(torch.as_tensor(new * N / orig))``, and
    ``as_tensor`` of a Python float is float32; we round the same way so the
    length matches for long inputs too.
    """
    return math.ceil(float(np.float32(new * n_in / orig)))


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> tuple[NDArray[np.float32], int]:
    """Hann-windowed sinc kernels for reduced rates ``orig -> new``.

    Returns:
        ``(kernel, width)``: kernel is float32 of shape ``(new, 2 * width + orig)``,
        row ``j`` producing output phase ``j``; ``width`` is the half-width in
        input samples. The array is read-only (it is cached).
    """
    f32 = np.float32
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = np.arange(-width, width + orig, dtype=f32) / f32(orig)
    t = (np.arange(0, -new, -1, dtype=f32) / f32(new))[:, None] + idx[None, :]
    t = t * f32(base)
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width).astype(f32)
    window = np.cos(t * f32(math.pi) / f32(lowpass_filter_width) / f32(2.0)) ** 2
    t = t * f32(math.pi)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = np.where(t == 0, f32(1.0), np.sin(t) / t).astype(f32)
    kernel = kernel * (window * f32(base / orig))
    kernel.setflags(write=False)
    return kernel, width
