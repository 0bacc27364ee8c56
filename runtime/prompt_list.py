"""The command-line prompt list ``--prompts "a dog;glass: glass breaks | @audio:glass.wav"``.

Items are ``;``-separated (a ``;`` inside a quoted expression text, ``"a; b"``, does not split)
and blank items are skipped. Each item is one prompt-file line (:mod:`runtime.prompt_file`):
``label: template | template``, ``label [threshold=0.3]: ...``, ``!background: ...``, example
templates ``@audio:clip.wav`` / ``@imu:rec.npz#imu[12:17]`` and expressions
``"a dog" + 0.5*@audio:bark.wav``. Relative example paths resolve against ``base_dir``
(default: the current directory), as a prompt file's resolve against the file's directory.

Labels of items without one:

- plain text (``a dog barking``): the text itself, as a one-template prompt.
- an example or expression: derived from its terms, texts unquoted, examples by file name
  with the segment as ``(12s-17s)``, weights kept, e.g. ``@audio:sounds/bark.wav`` ->
  ``bark.wav``, ``@imu:rec.npz#imu[12:17]`` -> ``rec.npz#imu(12s-17s)``,
  ``"a dog" + 0.5*@audio:bark.wav`` -> ``a dog + 0.5*bark.wav``, ``"a person" - "sitting"`` ->
  ``a person - sitting``; the characters ``| [ ] : ; "`` are removed (and a leading ``!``,
  ``#`` or ``@`` of a term) so the label can be written back as ``label: ...`` in a prompt
  file or a list.

Labels are unique: two items with the same (given or derived) label are an error; name one
with ``label: ...``.
"""

from __future__ import annotations

from pathlib import Path

from runtime.prompt_file import parse_prompt_line
from runtime.prompt_math import ExampleRef, ExpressionError, parse_expression
from runtime.prompt_types import Prompt, PromptError

_LABEL_DROP = str.maketrans("", "", '|[]:;"')


def parse_prompt_list(text: str, base_dir: str | Path | None = None) -> tuple[Prompt, ...]:
    """Parse a command-line list ``"a dog;glass: glass breaks | @audio:glass.wav"`` (module docstring).

    Args:
        text: ``;``-separated items, each one prompt-file line.
        base_dir: where relative example paths resolve (default: the current directory).

    Returns:
        The prompts, in list order.

    Raises:
        PromptError: one line naming the item and the fix: a malformed item, a missing or
            wrong example file, a duplicate label, no prompts or only background prompts.
    """
    base = str(base_dir) if base_dir is not None else str(Path.cwd())
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in split_items(text))):
        number = len(prompts) + 1
        where = f"prompt list item {number} {item!r}"
        prompt = parse_prompt_line(item, where, base, derived_label)
        if prompt.label in seen:
            raise PromptError(f"{where}: duplicate prompt label {prompt.label!r} (item {seen[prompt.label]}); "
                              "list each prompt once, or name one 'label: ...'")  # fmt: skip
        seen[prompt.label] = number
        prompts.append(prompt)
    if not prompts:
        raise PromptError(f"prompt list {text!r}: no prompts; give texts separated by ';', e.g. 'a dog;a cat'")
    if all(p.background for p in prompts):
        raise PromptError(f"prompt list {text!r}: only background prompts; add one without '!', e.g. 'a dog;!silence'")
    return tuple(prompts)


def split_items(text: str) -> list[str]:
    """``text`` split at every ``;`` outside ``"..."`` (``\\"`` escapes inside); at every ``;`` when
    the quotes do not balance (``5" screen;a dog``)."""
    items: list[str] = []
    start, in_quote, i = 0, False, 0
    while i < len(text):
        c = text[i]
        if in_quote and c == "\\":
            i += 2
            continue
        if c == '"':
            in_quote = not in_quote
        elif c == ";" and not in_quote:
            items.append(text[start:i])
            start = i + 1
        i += 1
    if in_quote:
        return text.split(";")
    items.append(text[start:])
    return items


def derived_label(expression: str, where: str) -> str:
    """The label of an unlabelled example or expression item (module docstring).

    Raises:
        PromptError: a malformed expression, or nothing left to name it by.
    """
    try:
        terms = parse_expression(expression)
    except ExpressionError as exc:
        raise PromptError(f"{where}: {exc}") from None
    out = ""
    for i, t in enumerate(terms):
        raw = t.text if t.example is None else example_name(t.example)
        name = " ".join((raw or "").translate(_LABEL_DROP).split()).lstrip("!#@").strip()
        if not name:
            raise PromptError(f"{where}: cannot derive a label from {expression!r}; write 'label: {expression}'")
        weight = abs(t.weight)
        term = f"{weight:g}*{name}" if weight != 1.0 else name
        sign = "-" if t.weight < 0 else "+"
        out += f" {sign} {term}" if i else (f"-{term}" if sign == "-" else term)
    return out


def example_name(ref: ExampleRef) -> str:
    """``bark.wav``, ``rec.npz#imu(12s-17s)``: the file name, the stream and the segment of an example."""
    name = Path(ref.path).name or ref.path
    if ref.stream:
        name += f"#{ref.stream}"
    if ref.start_s is not None or ref.end_s is not None:
        end = "end" if ref.end_s is None else f"{ref.end_s:g}s"
        name += f"({ref.start_s or 0:g}s-{end})"
    return name
