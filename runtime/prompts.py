"""Text prompts and the prompt bank: labels, CLIP-style template ensembles, cached vectors.

A prompt is a label plus one or more templates (texts). Its vector is the mean of
the templates' unit text embeddings, re-normalised (the CLIP prompt ensemble).
Prompts are encoded on the device by the bundle's text encoder and tokenizer, so
changing prompts never needs a re-export; vectors are cached by a hash of the
model id and the prompt texts.

Prompt file format (UTF-8)::

    # comment lines (first non-blank character '#') and blank lines are ignored
    glass_break: glass breaking | the sound of shattering glass
    a dog barking
    fall [threshold=0.3]: a person falls down | someone falling to the floor
    !background: an empty room | silence

- ``label: template | template | ...``: the label and its templates, ``|``-separated.
- ``label``: a line without ``:`` uses the label as its single template.
- ``label [threshold=0.3]: ...``: an option list after the label; the only option is
  ``threshold`` (a number in [-1, 1]), the prompt's enter threshold overriding the
  matcher's (see :mod:`runtime.matching`).
- ``!label: ...``: a leading ``!`` marks a background ("none of these") prompt: it
  competes in scoring but is never emitted as an event; it takes no threshold.

Only whole lines are comments: a ``#`` after text is part of the text. Labels are
unique (exact text) and may not contain ``|``, ``[`` or ``]`` (nor, in a file, ``:``). Errors raise
:class:`PromptError` naming ``file:line`` and what to do.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from runtime.errors import InputError

if TYPE_CHECKING:
    from runtime.embedder import Embedder

EmbedText = Callable[[list[str]], NDArray[np.float32]]
CACHE_VERSION = 1  # bump when the cache layout or the averaging changes
_BANNED_LABEL_CHARS = "|[]"


class PromptError(InputError):
    """A prompt list or prompt file is malformed (one line naming file:line and the fix)."""


@dataclass(frozen=True)
class Prompt:
    """One prompt: a label and the templates whose embeddings are averaged.

    Attributes:
        label: the name reported in matches, unique within a bank.
        templates: one or more texts; their unit embeddings are averaged (CLIP prompt ensemble).
        background: a "none of these" prompt: competes in scoring, never emitted as an event.
        threshold: per-prompt enter threshold overriding ``MatchConfig.enter_threshold``.
    """

    label: str
    templates: tuple[str, ...]
    background: bool = False
    threshold: float | None = None

    def __post_init__(self) -> None:
        if not self.label.strip() or any(c in self.label for c in _BANNED_LABEL_CHARS):
            raise PromptError(f"prompt label {self.label!r}: must be non-empty without '|', '[' or ']'")
        if not self.templates or any(not t.strip() for t in self.templates):
            raise PromptError(f"prompt {self.label!r}: every template must be non-empty text")
        if self.threshold is not None:
            if self.background:
                raise PromptError(f"prompt {self.label!r}: a background prompt takes no threshold")
            if not (math.isfinite(self.threshold) and -1.0 <= self.threshold <= 1.0):
                raise PromptError(f"prompt {self.label!r}: threshold {self.threshold} must be in [-1, 1]")


def parse_prompt_list(text: str) -> tuple[Prompt, ...]:
    """Parse a command-line list ``"a dog;glass breaking"``: one prompt per item, label = text.

    Blank items are skipped. Raises PromptError when no prompt is left or a label repeats.
    """
    items = [item.strip() for item in text.split(";")]
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for item in filter(None, items):
        if item in seen:
            raise PromptError(f"prompt list {text!r}: duplicate prompt {item!r}; list each prompt once")
        seen.add(item)
        try:
            prompts.append(Prompt(item, (item,)))
        except PromptError as exc:
            raise PromptError(f"prompt list {text!r}: {exc}") from None
    if not prompts:
        raise PromptError(f"prompt list {text!r}: no prompts; give texts separated by ';', e.g. 'a dog;a cat'")
    return tuple(prompts)


def load_prompt_file(path: str | Path) -> tuple[Prompt, ...]:
    """Read a prompt file (format in the module docstring).

    Raises:
        PromptError: one line naming ``file:line`` for a missing, empty or undecodable
            file, no prompts, a duplicate label, an empty template or a malformed option.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PromptError(f"{path}: cannot read prompt file ({exc.strerror}); check the path") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PromptError(f"{path}:{line}: not UTF-8 (byte {raw[exc.start]:#04x}); save the file as UTF-8") from None
    if not text.strip():
        raise PromptError(f"{path}:1: empty prompt file; write one 'label: template | template' per line")
    lines = text.splitlines()
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{number}"
        prompt = _parse_line(stripped, where)
        if prompt.label in seen:
            raise PromptError(f"{where}: duplicate label {prompt.label!r} (first on line {seen[prompt.label]}); "
                              "give each label once with all its templates")  # fmt: skip
        seen[prompt.label] = number
        prompts.append(prompt)
    if not any(not p.background for p in prompts):
        what = "only background prompts" if prompts else "no prompts, only comments and blank lines"
        raise PromptError(f"{path}:{len(lines)}: {what}; add at least one 'label: template' line")
    return tuple(prompts)


def _parse_line(line: str, where: str) -> Prompt:
    """Parse one non-comment line ``[!]label [opts]: t1 | t2`` or ``label [opts]``."""
    head, sep, body = line.partition(":")
    head = head.strip()
    background = head.startswith("!")
    if background:
        head = head[1:].strip()
    threshold = None
    if "[" in head or "]" in head:
        head, threshold = _parse_options(head, where)
    if not head:
        raise PromptError(f"{where}: missing label; write 'label: template | template'")
    templates = tuple(t.strip() for t in body.split("|")) if sep else (head,)
    if any(not t for t in templates):
        raise PromptError(f"{where}: empty template in {line!r}; remove the extra '|' or write the text")
    if background and threshold is not None:
        raise PromptError(f"{where}: background prompt {head!r} takes no threshold; remove '[threshold=...]'")
    try:
        return Prompt(head, templates, background=background, threshold=threshold)
    except PromptError as exc:
        raise PromptError(f"{where}: {exc}") from None


def _parse_options(head: str, where: str) -> tuple[str, float | None]:
    """Split ``label [threshold=0.3]`` into the label and the threshold."""
    label, bracket, rest = head.partition("[")
    if not bracket or not rest.endswith("]") or "[" in rest or "]" in rest[:-1]:
        raise PromptError(f"{where}: malformed options in {head!r}; write 'label [threshold=0.3]: ...'")
    threshold = None
    for option in filter(None, (o.strip() for o in rest[:-1].split(","))):
        key, eq, value = (s.strip() for s in option.partition("="))
        if key != "threshold" or not eq:
            raise PromptError(f"{where}: unknown option {option!r}; the only option is 'threshold=<number>'")
        try:
            threshold = float(value)
        except ValueError:
            raise PromptError(f"{where}: threshold {value!r} is not a number; write e.g. threshold=0.3") from None
        if not (math.isfinite(threshold) and -1.0 <= threshold <= 1.0):
            raise PromptError(f"{where}: threshold {value} must be in [-1, 1]")
    return label.strip(), threshold


@dataclass(frozen=True)
class PromptBank:
    """Prompts and their unit vectors; immutable, swapped whole on reload.

    Attributes:
        prompts: the prompts, in scoring order.
        vectors: (P, D) float32 unit vectors, one per prompt (template mean, re-normalised); read-only.
        model_id: the bundle model id the vectors were encoded with.
    """

    prompts: tuple[Prompt, ...]
    vectors: NDArray[np.float32]
    model_id: str

    def __post_init__(self) -> None:
        vectors = np.array(self.vectors, dtype=np.float32)  # private copy
        if vectors.ndim != 2 or vectors.shape[0] != len(self.prompts) or not self.prompts:
            raise PromptError(f"prompt bank: vectors {vectors.shape} do not match {len(self.prompts)} prompts")
        labels = [p.label for p in self.prompts]
        if len(set(labels)) != len(labels):
            raise PromptError(f"prompt bank: duplicate labels in {labels}; give each label once")
        vectors.setflags(write=False)
        object.__setattr__(self, "vectors", vectors)

    @property
    def labels(self) -> tuple[str, ...]:
        """The prompt labels, in bank order."""
        return tuple(p.label for p in self.prompts)

    @property
    def dim(self) -> int:
        """D, the embedding width."""
        return int(self.vectors.shape[1])

    def cosine(self, unit: NDArray[np.float32]) -> NDArray[np.float32]:
        """Cosine similarity of unit embeddings against every prompt.

        Args:
            unit: (B, D) float32 L2-normalised embeddings.

        Returns:
            (B, P) float32 cosine similarities, prompts in bank order.
        """
        unit = np.asarray(unit, dtype=np.float32)
        if unit.ndim != 2 or unit.shape[1] != self.dim:
            raise InputError(f"prompt bank: embeddings of shape {unit.shape}; expected (B, {self.dim})")
        return (unit @ self.vectors.T).astype(np.float32)


def build_prompt_bank(
    prompts: Sequence[Prompt],
    embed_text: EmbedText,
    model_id: str,
    cache_dir: Path | None = None,
) -> PromptBank:
    """Encode prompts into a bank, through an ``.npz`` cache when ``cache_dir`` is given.

    Args:
        prompts: the prompts (unique labels).
        embed_text: texts -> (N, D) embeddings (scaled or unit; rows are normalised here).
        model_id: the text encoder's model id; part of the cache key.
        cache_dir: where ``prompts-<sha256>.npz`` lives (created on demand); the key covers
            the model id and every label, template and background flag. A hit skips
            ``embed_text``; an unreadable cache file is re-encoded and rewritten.

    Returns:
        The bank: (P, D) float32 unit vectors, each the re-normalised mean of its
        templates' unit vectors.
    """
    prompts = tuple(prompts)
    if not prompts:
        raise PromptError("prompt bank: no prompts; give at least one")
    key = prompt_cache_key(prompts, model_id)
    cache_path = Path(cache_dir) / f"prompts-{key}.npz" if cache_dir is not None else None
    vectors = _read_cache(cache_path, key, len(prompts)) if cache_path is not None else None
    if vectors is None:
        vectors = _encode(prompts, embed_text)
        if cache_path is not None:
            _write_cache(cache_path, key, prompts, vectors)
    return PromptBank(prompts, vectors, model_id)


def prompt_cache_key(prompts: Sequence[Prompt], model_id: str) -> str:
    """Hex SHA-256 of the model id and every label, template and background flag (not thresholds)."""
    doc = {
        "version": CACHE_VERSION,
        "model_id": model_id,
        "prompts": [[p.label, list(p.templates), p.background] for p in prompts],
    }
    return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode("utf-8")).hexdigest()


def _encode(prompts: tuple[Prompt, ...], embed_text: EmbedText) -> NDArray[np.float32]:
    """Embed every template in one call and average per prompt: (P, D) float32 unit."""
    texts = [t for p in prompts for t in p.templates]
    emb = np.asarray(embed_text(texts), dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise PromptError(f"prompt bank: text encoder returned {emb.shape} for {len(texts)} texts; expected (N, D)")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms <= 1e-12):
        raise PromptError("prompt bank: text encoder returned a zero or non-finite embedding; check the bundle")
    unit = emb / norms
    out = np.empty((len(prompts), emb.shape[1]), dtype=np.float64)
    start = 0
    for i, p in enumerate(prompts):
        mean = unit[start : start + len(p.templates)].mean(axis=0)
        out[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        start += len(p.templates)
    return out.astype(np.float32)


def _read_cache(path: Path, key: str, n_prompts: int) -> NDArray[np.float32] | None:
    """The cached (P, D) vectors if ``path`` holds a valid entry for ``key``, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored_key = str(data["key"])
            vectors = np.asarray(data["vectors"], dtype=np.float32)
    except (OSError, ValueError, KeyError):
        return None
    norms = np.linalg.norm(vectors, axis=1) if vectors.ndim == 2 else np.zeros(0)
    if stored_key != key or vectors.shape[0] != n_prompts or not np.allclose(norms, 1.0, atol=1e-3):
        return None
    return vectors


def _write_cache(path: Path, key: str, prompts: tuple[Prompt, ...], vectors: NDArray[np.float32]) -> None:
    """Write the cache entry atomically (a temp file, then rename); strings as unicode arrays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    labels = np.array([p.label for p in prompts], dtype=np.str_)
    np.savez(tmp, key=np.array(key, dtype=np.str_), labels=labels, vectors=vectors)
    os.replace(tmp, path)


def bundle_text_embed(embedder: Embedder) -> EmbedText:
    """An ``embed_text`` for :func:`build_prompt_bank`: the bundle's tokenizer + text encoder.

    Returns:
        texts -> (N, D) float32 scaled text embeddings (normalised by the bank).
    """
    from runtime.errors import BundleError
    from runtime.inputs import tokenize
    from runtime.types import Modality

    manifest = embedder.manifest
    if not manifest.vocab:
        raise BundleError(f"bundle {manifest.root} has no tokenizer vocabulary; re-export it with text")
    vocab_path = manifest.path(manifest.vocab["file"])

    def embed_text(texts: list[str]) -> NDArray[np.float32]:
        return embedder.embed(Modality.TEXT, tokenize(texts, vocab_path)).vectors

    return embed_text
