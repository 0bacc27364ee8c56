"""The prompt-file syntax: files, control lines and the one-line parser the ``--prompts`` list shares.

Prompt file format (UTF-8)::

    # comment lines (first non-blank character '#') and blank lines are ignored
    glass_break: glass breaking | the sound of shattering glass
    a dog barking
    fall [threshold=0.3]: a person falls down | someone falling to the floor
    !background: an empty room | silence

- ``label: template | template | ...``: the label and its templates, ``|``-separated.
- ``label``: a line without a label ``:`` uses the label as its single template.
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

The label ends at the first ``:`` that is neither inside a quoted text nor the ``:`` of
``@audio:``. A line that is itself an example or expression (``@audio:x.wav``,
``"a dog" + @audio:bark.wav``) has no label: an error in a file, a derived label in a
``--prompts`` list (:mod:`runtime.prompt_list`). ``@audio:`` inside plain text
(``glass @audio:x.wav``) is an error: an example is a template of its own.

Only whole lines are comments: a ``#`` after text is part of the text. Labels are
unique (exact text) and may not contain ``|``, ``[`` or ``]`` (nor, in a file, ``:``). Errors raise
:class:`PromptError` naming ``file:line`` and what to do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from runtime.errors import InputError
from runtime.prompt_math import EXAMPLE_MODALITIES, is_expression
from runtime.prompt_types import Prompt, PromptError

DeriveLabel = Callable[[str, str], str]  # (unlabelled example/expression, where) -> label
_MODS = "|".join(EXAMPLE_MODALITIES)
_EXAMPLE_BEFORE = re.compile(rf"@\s*(?:{_MODS})\s*$", re.IGNORECASE)  # text ending in '@audio' (before ':')
_EXAMPLE_IN_TEXT = re.compile(rf"@\s*(?:{_MODS})\s*:", re.IGNORECASE)
_LEAD = re.compile(r"\s*[+-]?\s*(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?\s*\*)?\s*")  # sign and weight of a term


def load_prompt_file(path: str | Path) -> tuple[Prompt, ...]:
    """Read a prompt file (format in the module docstring); examples resolve next to the file.

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
    prompts = _parse_numbered(lines, str(path), str(path.parent), " with all its templates")
    if not any(not p.background for p in prompts):
        what = "only background prompts" if prompts else "no prompts, only comments and blank lines"
        raise PromptError(f"{path}:{len(lines)}: {what}; add at least one 'label: template' line")
    return prompts


def parse_prompt_lines(lines: Sequence[str], where: str, base_dir: str | Path | None = None) -> tuple[Prompt, ...]:
    """Parse prompt-file lines (control ``prompts.set``), examples relative to ``base_dir``.

    Raises:
        PromptError: one line naming ``where:N`` (N counts the given lines from 1).
    """
    base = str(base_dir) if base_dir is not None else str(Path.cwd())
    prompts = _parse_numbered(lines, where, base, "")
    if not any(not p.background for p in prompts):
        raise PromptError(f"{where}: no prompts (only background, comments or blank lines); add 'label: template'")
    return prompts


def _parse_numbered(lines: Iterable[str], where: str, base_dir: str, fix: str) -> tuple[Prompt, ...]:
    """Non-comment lines as prompts (``where:N`` in errors); labels unique."""
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        prompt = parse_prompt_line(stripped, f"{where}:{number}", base_dir)
        if prompt.label in seen:
            raise PromptError(f"{where}:{number}: duplicate label {prompt.label!r} (first on line {seen[prompt.label]})"
                              + (f"; give each label once{fix}" if fix else ""))  # fmt: skip
        seen[prompt.label] = number
        prompts.append(prompt)
    return tuple(prompts)


def parse_prompt_line(
    line: str, where: str, base_dir: str | None = None, derive_label: DeriveLabel | None = None
) -> Prompt:
    """Parse one stripped non-comment line ``[!]label [opts]: t1 | t2``, ``[!]label [opts]`` or an
    unlabelled example/expression (an error unless ``derive_label`` names it).

    Raises:
        PromptError: one line starting with ``where``.
    """
    background = line.startswith("!")
    bare = line[1:].strip() if background else line
    threshold = None
    if is_unlabelled(bare):
        if derive_label is None:
            raise PromptError(f"{where}: an example or expression prompt needs a label; write 'label: {line}'")
        head, templates = derive_label(bare, where), (bare,)
    else:
        colon = label_colon(bare)
        head = (bare[:colon] if colon >= 0 else bare).strip()
        if "[" in head or "]" in head:
            head, threshold = _parse_options(head, where)
        if not head:
            raise PromptError(f"{where}: missing label; write 'label: template | template'")
        templates = tuple(t.strip() for t in bare[colon + 1 :].split("|")) if colon >= 0 else (head,)
    if any(not t for t in templates):
        raise PromptError(f"{where}: empty template in {line!r}; remove the extra '|' or write the text")
    for t in templates:
        if not is_expression(t) and _EXAMPLE_IN_TEXT.search(t):
            raise PromptError(f"{where}: example inside plain text {t!r}; an example is a template of its own, "
                              "'label: text | @audio:FILE' or 'label: \"text\" + @audio:FILE'")  # fmt: skip
    if background and threshold is not None:
        raise PromptError(f"{where}: background prompt {head!r} takes no threshold; remove '[threshold=...]'")
    try:
        prompt = Prompt(head, templates, background=background, threshold=threshold, base_dir=base_dir, source=where)
    except PromptError as exc:
        raise PromptError(f"{where}: {exc}") from None
    _check_examples(prompt, where)
    return prompt


def is_unlabelled(text: str) -> bool:
    """Whether a line (without its ``!``) is an example or expression with no ``label:`` in front:
    its first term, after an optional sign and ``<number>*``, starts with ``"`` or ``@``.

    ``- a dog: x`` and ``2*x: y`` are labelled lines (labels ``- a dog`` and ``2*x``).
    """
    lead = _LEAD.match(text)  # always matches (every part is optional)
    return is_expression(text) and lead is not None and text[lead.end() :].startswith(("@", '"'))


def label_colon(line: str) -> int:
    """Index of the ``:`` ending the label, or -1: the first one outside ``"..."`` and not ``@audio:``.

    With an unbalanced quote (``5" screen: a tv``) quotes are ignored.
    """
    in_quote, i, found = False, 0, -1
    while i < len(line):
        c = line[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == ":" and found < 0 and not _EXAMPLE_BEFORE.search(line, 0, i):
            found = i
        i += 1
    if in_quote:  # not a quoted text: the first plain colon
        return next((j for j, c in enumerate(line) if c == ":" and not _EXAMPLE_BEFORE.search(line, 0, j)), -1)
    return found


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
