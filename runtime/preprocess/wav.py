"""Minimal RIFF/WAVE reader and PCM16 writer in numpy (no soundfile, no torchaudio).

:func:`read_wav` decodes the formats a sensor or a recorder is likely to write:
integer PCM with 8, 16, 24 or 32 bits per sample, IEEE float with 32 or 64
bits, and ``WAVE_FORMAT_EXTENSIBLE`` wrappers of both. Unknown chunks (``LIST``,
``fact``, ``bext``, ...) are skipped, odd-sized chunks honour their pad byte.

Integer samples are scaled to float32 exactly as ``torchaudio.load`` does, so the
waveform equals the one the official ImageBind loader sees (fact sheet §5.3):

======== ===================
format   float32 value
======== ===================
uint8    ``(x - 128) / 128``
int16    ``x / 32768``
int24    ``x / 2**23``
int32    ``x / 2**31``
float    unchanged (float64 is rounded to float32)
======== ===================

Every problem with the file raises :class:`runtime.errors.InputError` with a
one-line message naming the path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from runtime.errors import InputError

_FORMAT_PCM = 0x0001
_FORMAT_FLOAT = 0x0003
_FORMAT_EXTENSIBLE = 0xFFFE
_STREAMING_SIZE = 0xFFFFFFFF  # "size unknown": some live writers never patch the header
_HINT = "re-export it as a PCM or float WAV file"


@dataclass(frozen=True)
class _WavFormat:
    """The parsed ``fmt `` chunk.

    Attributes:
        code: 1 (integer PCM) or 3 (IEEE float), after unwrapping EXTENSIBLE.
        channels: number of interleaved channels (>= 1).
        rate_hz: sample rate in Hz.
        block_align: bytes per frame (all channels of one sample instant).
        bits: container bits per sample (8, 16, 24, 32 or 64).
    """

    code: int
    channels: int
    rate_hz: int
    block_align: int
    bits: int


def read_wav(path: str | Path) -> tuple[NDArray[np.float32], int]:
    """Read a WAV file into float32 samples.

    Args:
        path: the ``.wav`` file.

    Returns:
        ``(samples, rate_hz)``: samples is a C-contiguous float32 array of shape
        ``(channels, frames)``, integer formats scaled to [-1, 1) like
        ``torchaudio.load``; ``rate_hz`` is the sample rate in Hz.

    Raises:
        InputError: the file is missing, not RIFF/WAVE, truncated, or uses an
            unsupported sample format.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; check the path") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file ({exc.strerror or exc}); check the path") from None
    fmt, data = _parse_chunks(raw, path)
    return _decode(data, fmt), fmt.rate_hz


def write_wav(path: str | Path, samples: NDArray[np.floating], rate_hz: int) -> None:
    """Write float samples as a 16-bit PCM WAV file.

    Args:
        path: destination file; overwritten if it exists.
        samples: float array of shape ``(channels, frames)`` or ``(frames,)``
            (mono), nominally in [-1, 1]; values are scaled by 32768, rounded
            and clipped to the int16 range, so ``read_wav`` returns them within
            ``0.5 / 32768``.
        rate_hz: sample rate in Hz (positive integer).

    Raises:
        InputError: ``samples`` has the wrong rank, no channels, or NaN/Inf,
            or ``rate_hz`` is not a positive integer.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"{path}: samples must have shape (channels, frames), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{path}: samples contain NaN or Inf; clean the signal before writing")
    if isinstance(rate_hz, bool) or not isinstance(rate_hz, (int, np.integer)) or rate_hz <= 0:
        raise InputError(f"{path}: rate_hz must be a positive integer, got {rate_hz!r}")
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")
    channels = x.shape[0]
    payload = np.ascontiguousarray(pcm.T).tobytes()
    fmt = struct.pack("<HHIIHH", _FORMAT_PCM, channels, int(rate_hz), int(rate_hz) * 2 * channels, 2 * channels, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(payload)) + payload
    if len(payload) % 2:
        body += b"\x00"
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def _parse_chunks(raw: bytes, path: Path) -> tuple[_WavFormat, memoryview]:
    """Walk the RIFF chunks; return the format and the raw ``data`` payload."""
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise InputError(f"{path}: not a WAV file (no RIFF/WAVE header); {_HINT}")
    view = memoryview(raw)
    fmt: _WavFormat | None = None
    pos = 12
    while pos + 8 <= len(raw):
        chunk_id = raw[pos : pos + 4]
        (size,) = struct.unpack_from("<I", raw, pos + 4)
        start = pos + 8
        if chunk_id == b"data":
            if fmt is None:
                raise InputError(f"{path}: corrupt WAV: 'data' chunk before 'fmt ' chunk; {_HINT}")
            if size == _STREAMING_SIZE:
                size = len(raw) - start
            if start + size > len(raw):
                raise InputError(
                    f"{path}: truncated WAV: data chunk declares {size} bytes but only "
                    f"{len(raw) - start} are present; re-copy or re-record the file"
                )
            return fmt, view[start : start + size]
        if start + size > len(raw):
            raise InputError(f"{path}: truncated WAV: {chunk_id!r} chunk runs past the end of the file")
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(raw[start : start + size], path)
        pos = start + size + (size & 1)
    if fmt is None:
        raise InputError(f"{path}: corrupt WAV: no 'fmt ' chunk; {_HINT}")
    raise InputError(f"{path}: corrupt or truncated WAV: no 'data' chunk; re-copy or re-record the file")


def _parse_fmt(body: bytes, path: Path) -> _WavFormat:
    """Decode a ``fmt `` chunk body, unwrapping WAVE_FORMAT_EXTENSIBLE."""
    if len(body) < 16:
        raise InputError(f"{path}: corrupt WAV: 'fmt ' chunk has {len(body)} bytes (need 16)")
    code, channels, rate_hz, _, block_align, bits = struct.unpack_from("<HHIIHH", body, 0)
    if code == _FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise InputError(f"{path}: corrupt WAV: WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk is too short")
        (code,) = struct.unpack_from("<H", body, 24)  # first two bytes of the SubFormat GUID
    if channels == 0:
        raise InputError(f"{path}: WAV header declares zero channels; {_HINT}")
    if rate_hz == 0:
        raise InputError(f"{path}: WAV header declares a sample rate of 0 Hz; {_HINT}")
    supported = {_FORMAT_PCM: (8, 16, 24, 32), _FORMAT_FLOAT: (32, 64)}
    if code not in supported or bits not in supported[code]:
        kind = {_FORMAT_PCM: "integer PCM", _FORMAT_FLOAT: "float"}.get(code, f"format code {code:#06x}")
        raise InputError(
            f"{path}: unsupported WAV sample format ({kind}, {bits} bits); "
            "supported: PCM 8/16/24/32-bit and float 32/64-bit"
        )
    if block_align != channels * bits // 8:
        raise InputError(f"{path}: corrupt WAV: block align {block_align} != {channels} channels x {bits // 8} bytes")
    return _WavFormat(code, channels, rate_hz, block_align, bits)


def _decode(data: memoryview, fmt: _WavFormat) -> NDArray[np.float32]:
    """Turn the interleaved payload into a (channels, frames) float32 array."""
    n_frames = len(data) // fmt.block_align  # a trailing partial frame is dropped
    buf = np.frombuffer(data, dtype=np.uint8, count=n_frames * fmt.block_align)
    if fmt.code == _FORMAT_FLOAT:
        x = buf.view("<f4" if fmt.bits == 32 else "<f8").astype(np.float32)
    elif fmt.bits == 8:
        x = (buf.astype(np.float32) - 128.0) / np.float32(128.0)
    elif fmt.bits == 16:
        x = buf.view("<i2").astype(np.float32) / np.float32(32768.0)
    elif fmt.bits == 24:
        b = buf.reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8  # sign-extend 24 -> 32 bits
        x = ints.astype(np.float32) / np.float32(2.0**23)
    else:
        x = buf.view("<i4").astype(np.float32) / np.float32(2.0**31)
    if n_frames == 0:
        return np.zeros((fmt.channels, 0), dtype=np.float32)
    return np.ascontiguousarray(x.reshape(n_frames, fmt.channels).T)
