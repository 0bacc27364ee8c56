"""Embedding arithmetic: weighted sums of text and example embeddings (ImageBind §4.4).

An expression is a ``+``/``-`` chain of terms, each an optional weight and an atom::

    "a dog" + 0.5*@audio:bark.wav
    "a person" - "sitting"
    -0.3 * "an empty room" + @imu:rec.npz#imu[12.0:17.0]

- ``"text"``: quoted text (``\\"`` and ``\\\\`` escape inside), embedded by the text encoder.
- ``@modality:path``: an example file (see :mod:`runtime.prompt_examples`), optionally
  ``path#stream[start_s:end_s]`` for a segment of a recording; ``@modality:"path with spaces"``.
- ``w*term``: a weight (a finite number; default 1); a leading ``-`` negates a term.

Each term's embedding is L2-normalised, the terms are summed with their signed weights
and the sum is L2-normalised again, as the paper does for embedding arithmetic. A sum
of (nearly) zero length (``"a" - "a"``) is an error.

A prompt-file template is an expression when it starts with ``"``, ``@``, ``+``, ``-`` or
``<number>*``; anything else is plain text (``a well-known dog`` stays text).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import InputError

if TYPE_CHECKING:
    from runtime.embedder import Embedder
    from runtime.manifest import ModelManifest

EXAMPLE_MODALITIES = ("audio", "imu", "depth", "thermal", "vision")
_NUMBER = re.compile(r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?")
_EXPR_START = re.compile(r"^\s*(?:[\"@+-]|[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?\s*\*)")
_SEGMENT = re.compile(r"^(?P<path>.*?)(?:#(?P<stream>[^#\[\]]*))?(?:\[(?P<a>[^:\]]*):(?P<b>[^\]]*)\])?$")
_MIN_NORM = 1e-6


class ExpressionError(InputError):
    """A malformed embedding expression (one line saying where and what to write)."""


@dataclass(frozen=True)
class ExampleRef:
    """One example: a file of a modality, optionally a segment of a recording.

    Attributes:
        modality: ``audio``, ``imu``, ``depth``, ``thermal`` or ``vision``.
        path: the file as written (relative paths resolve against a base directory).
        stream: recordings (.npz): the stream id (default: the only stream of that modality).
        start_s, end_s: recordings: seconds from the recording's start (default: all of it).
    """

    modality: str
    path: str
    stream: str | None = None
    start_s: float | None = None
    end_s: float | None = None

    def resolved(self, base_dir: str | Path | None) -> Path:
        """The file path, relative to ``base_dir`` unless absolute (``~`` expanded)."""
        p = Path(self.path)
        try:
            p = p.expanduser()
        except RuntimeError:  # ~unknown_user: keep the path as written
            pass
        return p if p.is_absolute() or base_dir is None else Path(base_dir) / p

    def describe(self) -> str:
        """``@modality:path#stream[a:b]`` as written."""
        seg = f"#{self.stream}" if self.stream else ""
        if self.start_s is not None or self.end_s is not None:
            a = "" if self.start_s is None else f"{self.start_s:g}"
            b = "" if self.end_s is None else f"{self.end_s:g}"
            seg += f"[{a}:{b}]"
        return f"@{self.modality}:{self.path}{seg}"


@dataclass(frozen=True)
class Term:
    """One weighted term: ``weight * atom``; exactly one of ``text`` and ``example`` is set."""

    weight: float
    text: str | None = None
    example: ExampleRef | None = None


def is_expression(template: str) -> bool:
    """Whether a template is an expression (starts with ``"``, ``@``, ``+``, ``-`` or ``<number>*``)."""
    return bool(_EXPR_START.match(template))


def parse_expression(expr: str) -> tuple[Term, ...]:
    """Parse ``expr`` (grammar in the module docstring) into terms.

    Raises:
        ExpressionError: one line naming the column and what was expected.
    """
    terms: list[Term] = []
    i, n = 0, len(expr)
    sign = 1.0
    first = True
    while True:
        i = _skip(expr, i)
        if i < n and expr[i] in "+-":
            sign = -1.0 if expr[i] == "-" else 1.0
            i = _skip(expr, i + 1)
        elif not first:
            if i >= n:
                break
            raise ExpressionError(_at(expr, i, "expected '+' or '-' between terms"))
        weight = 1.0
        m = _NUMBER.match(expr, i)
        if m:
            j = _skip(expr, m.end())
            if j >= n or expr[j] != "*":
                raise ExpressionError(_at(expr, j, "expected '*' after the weight, e.g. 0.5*\"a dog\""))
            weight = float(m.group())
            if not math.isfinite(weight):
                raise ExpressionError(_at(expr, i, f"weight {m.group()} is not finite"))
            i = _skip(expr, j + 1)
        term, i = _atom(expr, i, sign * weight)
        terms.append(term)
        first = False
        sign = 1.0
        i = _skip(expr, i)
        if i >= n:
            break
    if not terms:
        raise ExpressionError(f"expression {expr!r}: empty; write e.g. '\"a dog\" + 0.5*@audio:bark.wav'")
    return tuple(terms)


def _skip(expr: str, i: int) -> int:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return i


def _at(expr: str, i: int, what: str) -> str:
    return f"expression {expr!r} at column {i + 1}: {what}"


def _atom(expr: str, i: int, weight: float) -> tuple[Term, int]:
    n = len(expr)
    if i >= n:
        raise ExpressionError(_at(expr, i, "missing term; write quoted text or @modality:path"))
    if expr[i] == '"':
        text, i = _quoted(expr, i)
        if not text.strip():
            raise ExpressionError(_at(expr, i - 1, 'empty text term ""'))
        return Term(weight, text=text), i
    if expr[i] == "@":
        colon = expr.find(":", i)
        modality = expr[i + 1 : colon].strip().lower() if colon > 0 else ""
        if modality not in EXAMPLE_MODALITIES:
            shown = expr[i + 1 : colon] if colon > 0 else (expr[i + 1 :].split(maxsplit=1) or [""])[0]
            valid = "/@".join(EXAMPLE_MODALITIES)
            raise ExpressionError(_at(expr, i, f"unknown modality {shown!r}; use @{valid}:FILE"))
        j = colon + 1
        if j < n and expr[j] == '"':
            path, j = _quoted(expr, j)
            k = j
            while k < n and not expr[k].isspace() and expr[k] not in "+":
                k += 1
            tail = expr[j:k]
        else:
            k = j
            while k < n and not expr[k].isspace():
                k += 1
            path, tail = expr[j:k], ""
        return Term(weight, example=_example(modality, path + tail, expr, i)), k
    raise ExpressionError(_at(expr, i, f'unexpected {expr[i]!r}; terms are "quoted text" or @modality:path'))


def _quoted(expr: str, i: int) -> tuple[str, int]:
    """Parse ``"..."`` starting at ``expr[i] == '"'``; returns (text, index after the closing quote)."""
    out: list[str] = []
    j = i + 1
    while j < len(expr):
        c = expr[j]
        if c == "\\" and j + 1 < len(expr) and expr[j + 1] in '"\\':
            out.append(expr[j + 1])
            j += 2
            continue
        if c == '"':
            return "".join(out), j + 1
        out.append(c)
        j += 1
    raise ExpressionError(_at(expr, i, "unterminated quote; close the text with '\"'"))


def _example(modality: str, spec: str, expr: str, i: int) -> ExampleRef:
    m = _SEGMENT.match(spec)
    if not spec or m is None or not m.group("path"):
        raise ExpressionError(_at(expr, i, f"@{modality}: needs a file, e.g. @{modality}:examples/x"))
    path, stream = m.group("path"), m.group("stream")
    a, b = m.group("a"), m.group("b")
    if (stream is not None or a is not None) and not path.lower().endswith(".npz"):
        raise ExpressionError(_at(expr, i, f"'#stream[start:end]' selects a segment of a .npz recording, not {path!r}"))
    if stream is not None and not stream.strip():
        raise ExpressionError(_at(expr, i, "empty stream name after '#'; write e.g. rec.npz#imu[12:17]"))
    start = _seconds(a, expr, i)
    end = _seconds(b, expr, i)
    if start is not None and end is not None and end <= start:
        raise ExpressionError(_at(expr, i, f"empty segment [{a}:{b}]; the end must be after the start"))
    return ExampleRef(modality, path, stream.strip() if stream else None, start, end)


def _seconds(text: str | None, expr: str, i: int) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise ExpressionError(_at(expr, i, f"segment bound {text!r} is not a number of seconds")) from None
    if not math.isfinite(value) or value < 0:
        raise ExpressionError(_at(expr, i, f"segment bound {text!r} must be a non-negative number of seconds"))
    return value


def combine(
    vectors: NDArray[np.floating] | Sequence[NDArray[np.floating]], weights: Sequence[float]
) -> NDArray[np.float32]:
    """Normalise each row, sum with ``weights``, normalise the sum: (D,) float32 unit.

    Raises:
        InputError: a zero or non-finite vector, mismatched counts, or a zero-length sum.
    """
    v = np.asarray(vectors, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != w.shape[0] or v.shape[0] == 0:
        raise InputError(f"combine: {v.shape} vectors for {w.shape[0]} weights; expected (K, D) and K weights")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms <= 1e-12) or not np.all(np.isfinite(w)):
        raise InputError("combine: a zero or non-finite embedding or weight; check the encoder and the weights")
    total = (w[:, None] * (v / norms)).sum(axis=0)
    length = float(np.linalg.norm(total))
    if length < _MIN_NORM:
        raise InputError("combine: the weighted terms cancel out (sum of length ~0); change the weights or terms")
    return (total / length).astype(np.float32)


EmbedText = Callable[[list[str]], NDArray[np.float32]]
EmbedExample = Callable[[ExampleRef, Path], NDArray[np.float32]]


def compose(
    expression: str | Sequence[Term],
    embed_fns: Mapping[str, Any],
    base_dir: str | Path | None = None,
) -> NDArray[np.float32]:
    """The unit vector of an expression.

    Args:
        expression: the expression text or parsed terms.
        embed_fns: ``{"text": texts -> (N, D), "example": (ExampleRef, resolved path) -> (D,)}``;
            ``"example"`` is only needed when the expression has example terms.
        base_dir: where relative example paths resolve (the prompt file's directory).

    Returns:
        (D,) float32 L2-normalised weighted sum of the normalised terms.
    """
    terms = parse_expression(expression) if isinstance(expression, str) else tuple(expression)
    vectors = term_vectors(terms, embed_fns, base_dir)
    return combine(vectors, [t.weight for t in terms])


def term_vectors(
    terms: Sequence[Term], embed_fns: Mapping[str, Any], base_dir: str | Path | None = None
) -> NDArray[np.float64]:
    """(K, D) float64 embeddings (not normalised) of the terms, texts in one encoder call."""
    texts = [t.text for t in terms if t.text is not None]
    text_vecs: NDArray[np.float64] = np.zeros((0, 0))
    if texts:
        text_vecs = np.asarray(embed_fns["text"](texts), dtype=np.float64)
        if text_vecs.ndim != 2 or text_vecs.shape[0] != len(texts):
            raise InputError(f"text encoder returned {text_vecs.shape} for {len(texts)} texts; expected (N, D)")
    rows: list[NDArray[np.float64]] = []
    k = 0
    for t in terms:
        if t.text is not None:
            rows.append(text_vecs[k])
            k += 1
        else:
            assert t.example is not None
            embed_example = embed_fns.get("example")
            if embed_example is None:
                raise InputError(f"{t.example.describe()}: example terms need the bundle's encoders (no embedder)")
            rows.append(np.asarray(embed_example(t.example, t.example.resolved(base_dir)), dtype=np.float64).ravel())
    dims = {r.shape[0] for r in rows}
    if len(dims) != 1:
        raise InputError(f"terms have different embedding widths {sorted(dims)}; use one bundle")
    return np.stack(rows)


def query_vector(
    expression_or_text: str,
    manifest: ModelManifest,
    embedder: Embedder,
    base_dir: str | Path | None = None,
) -> NDArray[np.float32]:
    """A search query as one unit vector: plain text, or an expression (module docstring).

    Args:
        expression_or_text: ``glass breaking`` (plain text) or ``"a dog" + 0.5*@audio:bark.wav``.
        manifest: the bundle (its tokenizer and modalities).
        embedder: runs the bundle's encoders.
        base_dir: where relative example paths resolve (default: the current directory).

    Returns:
        (D,) float32 unit vector.

    Raises:
        InputError: malformed expression, bad example file, missing modality (one line).
    """
    from runtime.prompt_examples import bundle_example_embed
    from runtime.prompts import bundle_text_embed

    del manifest  # the embedder carries it; kept in the signature for callers that have both
    fns = {"text": bundle_text_embed(embedder), "example": bundle_example_embed(embedder)}
    text = expression_or_text.strip()
    if not text:
        raise ExpressionError("empty query; give text or an expression")
    terms = parse_expression(text) if is_expression(text) else (Term(1.0, text=text),)
    return compose(terms, fns, base_dir if base_dir is not None else Path.cwd())
