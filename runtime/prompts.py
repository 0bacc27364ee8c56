"""The prompt bank: prompts encoded into unit vectors (CLIP-style template ensembles), cached.

A prompt is a label plus one or more templates (texts, examples, expressions;
:class:`~runtime.prompt_types.Prompt`). Its vector is the mean of the templates' unit
embeddings, re-normalised (the CLIP prompt ensemble). Prompts are encoded on the device
by the bundle's text encoder and tokenizer (examples by the encoder of their modality),
so changing prompts never needs a re-export; vectors are cached by a hash of the model
id, the prompt texts and the example files.

Where prompts come from: prompt files and control lines (:mod:`runtime.prompt_file`, which
documents the syntax), ``--prompts "a;b"`` lists (:mod:`runtime.prompt_list`). Their names
are re-exported here, so ``from runtime.prompts import Prompt, load_prompt_file,
parse_prompt_list`` keeps working.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from runtime.errors import InputError
from runtime.prompt_file import load_prompt_file, parse_prompt_line, parse_prompt_lines
from runtime.prompt_list import parse_prompt_list
from runtime.prompt_math import is_expression
from runtime.prompt_types import EmbedExample, EmbedText, Prompt, PromptError, template_terms

if TYPE_CHECKING:
    from runtime.embedder import Embedder

__all__ = [
    "CACHE_VERSION",
    "EmbedExample",
    "EmbedText",
    "Prompt",
    "PromptBank",
    "PromptError",
    "build_prompt_bank",
    "bundle_text_embed",
    "load_prompt_file",
    "parse_prompt_line",
    "parse_prompt_lines",
    "parse_prompt_list",
    "prompt_cache_key",
    "template_terms",
]
CACHE_VERSION = 1  # bump when the cache layout or the averaging changes


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
    embed_example: EmbedExample | None = None,
) -> PromptBank:
    """Encode prompts into a bank, through an ``.npz`` cache when ``cache_dir`` is given.

    Args:
        prompts: the prompts (unique labels).
        embed_text: texts -> (N, D) embeddings (scaled or unit; rows are normalised here).
        model_id: the text encoder's model id; part of the cache key.
        cache_dir: where ``prompts-<sha256>.npz`` lives (created on demand); the key covers
            the model id and every label, template and background flag. A hit skips
            ``embed_text``; an unreadable cache file is re-encoded and rewritten. With example
            prompts the key also covers every example file's SHA-256 and segment.
        embed_example: ``(ExampleRef, path) -> (D,)`` for example terms; default: the one
            :func:`bundle_text_embed` carries (``embed_text.embed_example``).

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
        example_fn = embed_example if embed_example is not None else getattr(embed_text, "embed_example", None)
        vectors = _encode(prompts, embed_text, example_fn)
        if cache_path is not None:
            _write_cache(cache_path, key, prompts, vectors)
    return PromptBank(prompts, vectors, model_id)


def prompt_cache_key(prompts: Sequence[Prompt], model_id: str) -> str:
    """Hex SHA-256 of the model id and every label, template and background flag (not thresholds).

    Example prompts add each example's resolved path, segment and file SHA-256, so an edited
    example file is re-encoded.
    """
    doc: dict[str, object] = {
        "version": CACHE_VERSION,
        "model_id": model_id,
        "prompts": [[p.label, list(p.templates), p.background] for p in prompts],
    }
    examples = [(p, ref) for p in prompts for ref in p.examples]
    if examples:
        from runtime.prompt_examples import example_file_hash

        rows = []
        for p, ref in examples:
            path = ref.resolved(p.base_dir)
            try:
                digest = example_file_hash(path)
            except OSError as exc:
                where = p.source or p.label
                raise PromptError(f"{where}: {ref.describe()}: cannot read {path} ({exc.strerror})") from None
            rows.append([p.label, ref.describe(), str(path.resolve()), digest])
        doc["examples"] = rows
    return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode("utf-8")).hexdigest()


def _encode(
    prompts: tuple[Prompt, ...], embed_text: EmbedText, embed_example: EmbedExample | None = None
) -> NDArray[np.float32]:
    """Embed every template and average per prompt: (P, D) float32 unit.

    Plain-text prompts take one text-encoder call (as before); prompts with expressions or
    examples compose each template (:func:`runtime.prompt_math.compose`) and average the results.
    """
    if any(is_expression(t) for p in prompts for t in p.templates):
        return _encode_composite(prompts, embed_text, embed_example)
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


def _encode_composite(
    prompts: tuple[Prompt, ...], embed_text: EmbedText, embed_example: EmbedExample | None
) -> NDArray[np.float32]:
    from runtime.prompt_math import combine, term_vectors

    # all texts in one encoder call, examples one call each
    all_texts = list(dict.fromkeys(t.text for p in prompts for tpl in p.templates
                                   for t in template_terms(tpl, p.label) if t.text is not None))  # fmt: skip
    text_vecs: dict[str, NDArray[np.float64]] = {}
    if all_texts:
        emb = np.asarray(embed_text(all_texts), dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] != len(all_texts):
            raise PromptError(f"prompt bank: text encoder returned {emb.shape} for {len(all_texts)} texts; "
                              "expected (N, D)")  # fmt: skip
        text_vecs = dict(zip(all_texts, emb, strict=True))

    def cached_text(texts: list[str]) -> NDArray[np.float64]:
        return np.stack([text_vecs[t] for t in texts])

    fns: dict[str, object] = {"text": cached_text}
    if embed_example is not None:
        fns["example"] = embed_example
    rows = []
    for p in prompts:
        units = []
        for tpl in p.templates:
            terms = template_terms(tpl, p.label)
            try:
                units.append(combine(term_vectors(terms, fns, p.base_dir), [t.weight for t in terms]))
            except PromptError:
                raise
            except InputError as exc:
                raise PromptError(f"{p.source or 'prompt ' + repr(p.label)}: {' '.join(str(exc).split())}") from None
        mean = np.mean(np.asarray(units, dtype=np.float64), axis=0)
        norm = float(np.linalg.norm(mean))
        if norm < 1e-6:
            raise PromptError(f"{p.source or 'prompt ' + repr(p.label)}: the templates of {p.label!r} cancel out")
        rows.append(mean / norm)
    return np.asarray(rows, dtype=np.float32)


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

    from runtime.prompt_examples import bundle_example_embed

    embed_text.embed_example = bundle_example_embed(embedder)  # type: ignore[attr-defined]  # build_prompt_bank uses it
    return embed_text
