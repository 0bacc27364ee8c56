"""One prompt: a label, its templates (texts, examples, expressions), background flag and threshold.

The syntax that produces prompts (prompt files, control lines, ``--prompts`` lists) is in
:mod:`runtime.prompt_file` and :mod:`runtime.prompt_list`; encoding them into vectors is
:mod:`runtime.prompts`. Everything here is importable from :mod:`runtime.prompts` too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from runtime.errors import InputError
from runtime.prompt_math import ExampleRef, ExpressionError, Term, is_expression, parse_expression

EmbedText = Callable[[list[str]], NDArray[np.float32]]
EmbedExample = Callable[[ExampleRef, Path], NDArray[np.float32]]
BANNED_LABEL_CHARS = "|[]"


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
        if not self.label.strip() or any(c in self.label for c in BANNED_LABEL_CHARS):
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
