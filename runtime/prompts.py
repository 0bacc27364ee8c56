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
- Example prompts: a template ``@audio:examples/glass.wav`` (``@imu:``, ``@depth:``, ``@thermal:``,
  ``@vision:``; or a recording segment ``@imu:rec.npz#imu[12.0:17.0]``) is embedded by the
  bundle's encoder of that modality, windowed like live streams (:mod:`runtime.prompt_examples`);
  paths are relative to the prompt file. ``glass_break: glass breaks | @audio:glass.wav``
  averages the text and the example like any two templates.
- Embedding arithmetic: a template that starts with ``"``, ``@``, ``+``, ``-`` or ``<number>*`` is an
  expression, ``dogbark: "a dog" + 0.5*@audio:bark.wav`` or ``standing: "a person" - "sitting"``
  (:mod:`runtime.prompt_math`): each term normalised, weighted sum, re-normalised.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from runtime.errors import InputError
from runtime.prompt_math import ExampleRef, ExpressionError, Term, is_expression, parse_expression

if TYPE_CHECKING:
    from runtime.embedder import Embedder

EmbedText = Callable[[list[str]], NDArray[np.float32]]
EmbedExample = Callable[[ExampleRef, Path], NDArray[np.float32]]
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
        base_dir: where relative example paths of the templates resolve (the prompt file's
            directory; None: the current directory). Not part of equality.
        source: ``file:line`` the prompt came from, for error messages. Not part of equality.
    """

    label: str
    templates: tuple[str, ...]
    background: bool = False
    threshold: float | None = None
    base_dir: str | None = field(default=None, compare=False)
    source: str = field(default="", compare=False)

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
        for template in self.templates:
            template_terms(template, self.label)

    @property
    def examples(self) -> tuple[ExampleRef, ...]:
        """Every example file the templates name, in order."""
        return tuple(t.example for tpl in self.templates for t in template_terms(tpl, self.label) if t.example)

    def example_paths(self) -> tuple[Path, ...]:
        """The examples' files, resolved against ``base_dir``."""
        return tuple(ref.resolved(self.base_dir) for ref in self.examples)


def template_terms(template: str, label: str = "") -> tuple[Term, ...]:
    """A template as weighted terms: an expression's terms, or one text term for plain text.

    Raises:
        PromptError: a malformed expression (one line).
    """
    if not is_expression(template):
        return (Term(1.0, text=template),)
    try:
        return parse_expression(template)
    except ExpressionError as exc:
        raise PromptError(f"prompt {label!r}: {exc}") from None


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
        prompt = _parse_line(stripped, where, str(path.parent))
        if prompt.label in seen:
            raise PromptError(f"{where}: duplicate label {prompt.label!r} (first on line {seen[prompt.label]}); "
                              "give each label once with all its templates")  # fmt: skip
        seen[prompt.label] = number
        prompts.append(prompt)
    if not any(not p.background for p in prompts):
        what = "only background prompts" if prompts else "no prompts, only comments and blank lines"
        raise PromptError(f"{path}:{len(lines)}: {what}; add at least one 'label: template' line")
    return tuple(prompts)


def parse_prompt_lines(lines: Sequence[str], where: str, base_dir: str | Path | None = None) -> tuple[Prompt, ...]:
    """Parse prompt-file lines (control ``prompts.set``), examples relative to ``base_dir``.

    Raises:
        PromptError: one line naming ``where:N`` (N counts the given lines from 1).
    """
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    base = str(base_dir) if base_dir is not None else str(Path.cwd())
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        prompt = _parse_line(stripped, f"{where}:{number}", base)
        if prompt.label in seen:
            first = seen[prompt.label]
            raise PromptError(f"{where}:{number}: duplicate label {prompt.label!r} (first on line {first})")
        seen[prompt.label] = number
        prompts.append(prompt)
    if not any(not p.background for p in prompts):
        raise PromptError(f"{where}: no prompts (only background, comments or blank lines); add 'label: template'")
    return tuple(prompts)


def _parse_line(line: str, where: str, base_dir: str | None = None) -> Prompt:
    """Parse one non-comment line ``[!]label [opts]: t1 | t2`` or ``label [opts]``."""
    bare = line.lstrip("!").lstrip()
    if bare.startswith(("@", '"')) or (is_expression(bare) and not bare.startswith(("+", "-"))):
        raise PromptError(f"{where}: an example or expression prompt needs a label; write 'label: {line}'")
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
        prompt = Prompt(head, templates, background=background, threshold=threshold, base_dir=base_dir, source=where)
    except PromptError as exc:
        raise PromptError(f"{where}: {exc}") from None
    _check_examples(prompt, where)
    return prompt


def _check_examples(prompt: Prompt, where: str) -> None:
    """Missing example files and files of the wrong kind are errors at parse time."""
    from runtime.prompt_examples import check_example_file

    for ref in prompt.examples:
        try:
            check_example_file(ref, ref.resolved(prompt.base_dir))
        except InputError as exc:
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
