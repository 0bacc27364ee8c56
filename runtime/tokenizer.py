"""CLIP byte-level BPE tokenizer for ImageBind text prompts, without torch.

Reproduces the official ImageBind text preprocessing (fact sheet §5.2): text
cleaning, the pre-tokenisation regex, byte-level BPE over the 48,894 merges of
``bpe_simple_vocab_16e6.txt.gz``, and sequences of ``[SOT] + ids[:76] + [EOT]``
right-padded with 0 to 77 tokens.

The merges file is the one shipped by OpenCLIP (MIT); :func:`find_clip_vocab`
locates it in an installed ``open_clip_torch`` distribution without importing it.
Nothing is loaded at import time; ftfy and regex are imported on first use.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib.metadata
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import BundleError, InputError
from runtime.fileio import import_extra

VOCAB_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
# SHA-256 of the gzip file bytes (open_clip_torch 3.3.0; same file as OpenAI CLIP's).
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
N_MERGES = 49152 - 256 - 2  # merge lines used after the version header: 48,894
CONTEXT_LENGTH = 77  # tokens per sequence, SOT and EOT included
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
_CACHE_LIMIT = 65536  # BPE results kept per tokenizer before the cache is reset
# Case-insensitive; alternatives in order: special tokens, contractions, a letter
# run, one digit, a run of characters that are neither space, letter nor digit.
_PRETOKEN_PATTERN = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"
    r"|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)


def bytes_to_unicode() -> dict[int, str]:
    """Return the reversible byte -> printable character table of byte-level BPE.

    Returns:
        Dict of 256 entries in vocabulary order: the printable bytes ``!``..``~``,
        ``¡``..``¬`` and ``®``..``ÿ`` map to themselves, then the remaining 68
        bytes, ascending, map to code points 256, 257, ...
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def find_clip_vocab() -> Path:
    """Locate ``bpe_simple_vocab_16e6.txt.gz`` inside an installed ``open_clip_torch``.

    Only the distribution's file list is read; ``open_clip`` is never imported.

    Returns:
        Absolute path of the gzip merges file.

    Raises:
        BundleError: the distribution or the file is not installed.
    """
    hint = "install it with `pip install --no-deps open-clip-torch`, or pass --vocab FILE"
    try:
        dist = importlib.metadata.distribution("open_clip_torch")
    except importlib.metadata.PackageNotFoundError:
        raise BundleError(f"CLIP vocabulary {VOCAB_FILENAME} not found: {hint}") from None
    for file in dist.files or ():
        if file.name == VOCAB_FILENAME:
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    raise BundleError(f"CLIP vocabulary {VOCAB_FILENAME} missing from open_clip_torch {dist.version}: {hint}")


def read_merges(path: str | Path, sha256: str | None = VOCAB_SHA256) -> list[tuple[str, str]]:
    """Read the BPE merge list from a gzip merges file.

    Args:
        path: the ``bpe_simple_vocab_16e6.txt.gz`` file.
        sha256: expected SHA-256 (hex) of the file bytes; None skips the check.

    Returns:
        48,894 merge pairs ``(left, right)`` in rank order (rank 0 first).

    Raises:
        BundleError: the file is missing, has the wrong hash or is malformed.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read CLIP vocabulary ({exc.strerror or exc})") from None
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256.lower():
        raise BundleError(f"{path}: SHA-256 mismatch, not the CLIP vocabulary {VOCAB_FILENAME}")
    try:
        lines = gzip.decompress(raw).decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{path}: not a gzip UTF-8 merges file ({exc})") from None
    body = lines[1 : 1 + N_MERGES]
    if len(body) < N_MERGES:
        raise BundleError(f"{path}: {len(body)} merge lines, expected {N_MERGES}")
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(body, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise BundleError(f"{path}: line {number} is not a merge pair: {line[:40]!r}")
        merges.append((parts[0], parts[1]))
    return merges


class ClipTokenizer:
    """CLIP BPE tokenizer producing ImageBind text-encoder inputs.

    Attributes:
        context_length: tokens per sequence (77).
        sot: start-of-text id (49406).
        eot: end-of-text id (49407); the text head pools at its position.
        pad: padding id (0).
        vocab_size: number of ids (49408).
    """

    context_length = CONTEXT_LENGTH
    sot = 49406
    eot = 49407
    pad = 0

    def __init__(self, merges: Sequence[tuple[str, str]]) -> None:
        """Build the vocabulary from ``merges`` (rank order); see :func:`read_merges`."""
        byte_symbols = list(bytes_to_unicode().values())
        vocab = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges]
        vocab += [SOT_TOKEN, EOT_TOKEN]
        self._encoder: dict[str, int] = {symbol: i for i, symbol in enumerate(vocab)}
        if self._encoder[SOT_TOKEN] != self.sot or self._encoder[EOT_TOKEN] != self.eot:
            raise BundleError(f"CLIP vocabulary has {len(vocab)} ids, expected {self.eot + 1}")
        self.vocab_size = len(vocab)
        self._ranks: dict[tuple[str, str], int] = {tuple(m): i for i, m in enumerate(merges)}
        self._byte_table = bytes_to_unicode()
        self._cache: dict[str, list[str]] = {}
        self._pattern: Any = None  # compiled lazily with the `regex` module
        self._ftfy: Any = None

    @classmethod
    def from_file(cls, path: str | Path | None = None, sha256: str | None = VOCAB_SHA256) -> ClipTokenizer:
        """Load the tokenizer from a gzip merges file.

        Args:
            path: the merges file; None uses :func:`find_clip_vocab`.
            sha256: expected SHA-256 of the file; None skips the check.

        Raises:
            BundleError: the file is absent, corrupted or not the CLIP vocabulary.
        """
        return cls(read_merges(find_clip_vocab() if path is None else path, sha256))

    def encode(self, texts: Sequence[str]) -> NDArray[np.int64]:
        """Tokenise a batch of strings.

        Args:
            texts: N prompts (a list, not a bare string).

        Returns:
            int64 array (N, 77): ``[SOT] + bpe_ids`` cut to 76 ids, then EOT,
            then zero padding. Long texts are truncated but always keep their EOT.

        Raises:
            InputError: ``texts`` is a bare string or holds a non-string.
        """
        if isinstance(texts, (str, bytes)):
            raise InputError("encode() takes a list of strings, got a single string")
        out = np.full((len(texts), self.context_length), self.pad, dtype=np.int64)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text {row}: expected a string, got {type(text).__name__}")
            ids = [self.sot, *self.text_ids(text)][: self.context_length - 1]
            ids.append(self.eot)
            out[row, : len(ids)] = ids
        return out

    def text_ids(self, text: str) -> list[int]:
        """Return the BPE ids of one cleaned string, without SOT/EOT or truncation."""
        if self._pattern is None:
            regex_module = import_extra("regex", "text tokenisation")
            self._pattern = regex_module.compile(_PRETOKEN_PATTERN, regex_module.IGNORECASE)
        ids: list[int] = []
        for piece in self._pattern.findall(self.clean(text)):
            symbols = "".join(self._byte_table[b] for b in piece.encode("utf-8"))
            ids.extend(self._encoder[s] for s in self._bpe(symbols))
        return ids

    def clean(self, text: str) -> str:
        """ftfy fix, HTML-unescape twice, collapse whitespace runs to one space, strip, lowercase."""
        if self._ftfy is None:
            self._ftfy = import_extra("ftfy", "text tokenisation")
        text = html.unescape(html.unescape(self._ftfy.fix_text(text))).strip()
        return " ".join(text.split()).lower()

    def _bpe(self, token: str) -> list[str]:
        """Merge the byte-symbols of one pre-token by rank; the last symbol ends in ``</w>``."""
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        if token in (SOT_TOKEN, EOT_TOKEN):  # literal special tokens in the text map to their ids
            return [token]
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = set(itertools.pairwise(word))
            best = min(pairs, key=lambda p: self._ranks.get(p, N_MERGES))
            if best not in self._ranks:
                break
            word = _merge_pair(word, best)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[token] = word
        return word


def _merge_pair(word: list[str], pair: tuple[str, str]) -> list[str]:
    """Replace every left-to-right, non-overlapping occurrence of ``pair`` by its concatenation."""
    first, second = pair
    merged: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
            merged.append(first + second)
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return merged


def eot_positions(tokens: NDArray[np.integer]) -> NDArray[np.int64]:
    """Index of the first EOT (49407) in each row: the position the text head pools.

    Args:
        tokens: integer array (N, L) of token ids.

    Returns:
        int64 array (N,). Equals ``argmax(tokens, axis=1)`` for well-formed rows.

    Raises:
        InputError: ``tokens`` is not 2-D integer or a row has no EOT.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise InputError(f"tokens: expected an integer (N, L) array, got {tokens.dtype} {tokens.shape}")
    is_eot = tokens == ClipTokenizer.eot
    missing = np.flatnonzero(~is_eot.any(axis=1))
    if missing.size:
        raise InputError(f"tokens: row {int(missing[0])} has no EOT token ({ClipTokenizer.eot})")
    return np.argmax(is_eot, axis=1).astype(np.int64)
