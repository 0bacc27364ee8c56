"""Embedding arithmetic: the expression grammar, exact results on known vectors, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.prompt_math import (
    ExampleRef,
    ExpressionError,
    Term,
    combine,
    compose,
    is_expression,
    parse_expression,
)
from runtime.prompts import Prompt, PromptError, build_prompt_bank, load_prompt_file, prompt_cache_key

E = np.eye(4)
TEXT = {"a dog": 3.0 * E[0], "a person": 2.0 * E[1], "sitting": E[1] + E[2], "x": E[3]}


def embed_text(texts: list[str]) -> np.ndarray:
    return np.stack([TEXT[t] for t in texts]).astype(np.float32)


def embed_example(ref: ExampleRef, path: Path) -> np.ndarray:
    return np.array([0.0, 0.0, 5.0, 0.0], np.float32) if ref.modality == "audio" else E[3].astype(np.float32)


FNS = {"text": embed_text, "example": embed_example}


def test_parse_terms() -> None:
    terms = parse_expression('"a dog" + 0.5*@audio:bark.wav - 2 * "sit \\"down\\"" + @imu:rec.npz#imu[12.0:17.5]')
    assert terms == (
        Term(1.0, text="a dog"),
        Term(0.5, example=ExampleRef("audio", "bark.wav")),
        Term(-2.0, text='sit "down"'),
        Term(1.0, example=ExampleRef("imu", "rec.npz", "imu", 12.0, 17.5)),
    )
    assert parse_expression('-"x"') == (Term(-1.0, text="x"),)
    assert parse_expression('@depth:"my frame.png"')[0].example == ExampleRef("depth", "my frame.png")
    assert parse_expression("@imu:r.npz[:3]")[0].example == ExampleRef("imu", "r.npz", None, None, 3.0)
    assert parse_expression(".25*@thermal:t.png")[0].weight == 0.25


def test_is_expression() -> None:
    for text in ('"a dog"', "@audio:x.wav", "-\"x\"", "0.5*\"x\"", "  2 * @depth:d.png"):
        assert is_expression(text), text
    for text in ("a dog", "a well-known dog", "2 dogs", "glass breaks", "email a@b.c"):
        assert not is_expression(text), text


def test_arithmetic_exact() -> None:
    # "a dog" + 0.5*audio: e0 + 0.5*e2, normalised
    v = compose('"a dog" + 0.5*@audio:bark.wav', FNS)
    np.testing.assert_allclose(v, np.array([1.0, 0.0, 0.5, 0.0]) / np.sqrt(1.25), atol=1e-7)
    # "a person" - "sitting": e1 - (e1 + e2)/sqrt2, normalised
    w = np.array([0.0, 1.0 - 1 / np.sqrt(2), -1 / np.sqrt(2), 0.0])
    np.testing.assert_allclose(compose('"a person" - "sitting"', FNS), w / np.linalg.norm(w), atol=1e-7)
    # the weight scales the normalised term, not the raw one (3*e0 is normalised first)
    np.testing.assert_allclose(compose('2*"a dog" + 2*"x"', FNS), np.array([1, 0, 0, 1]) / np.sqrt(2), atol=1e-7)
    np.testing.assert_allclose(compose('-"x"', FNS), -E[3], atol=1e-7)
    assert compose('"a dog"', FNS).dtype == np.float32
    np.testing.assert_allclose(combine([E[0] * 7, E[1]], [1.0, -1.0]), np.array([1, -1, 0, 0]) / np.sqrt(2))


@pytest.mark.parametrize(
    "expr, words",
    [
        ('"a dog" +', "missing term"),
        ('"a dog" "x"', "expected '+' or '-'"),
        ('"a dog', "unterminated quote"),
        ("0.5 @audio:x.wav", "expected '*'"),
        ("@smell:x.wav", "unknown modality 'smell'"),
        ("@audio:", "needs a file"),
        ("@audio:x.wav#a[1:2]", "segment of a .npz"),
        ("@imu:r.npz#imu[5:2]", "empty segment"),
        ("@imu:r.npz#imu[a:2]", "not a number"),
        ('""', "empty text term"),
        ("", "missing term"),
        ("+ * x", "unexpected '*'"),
    ],
)
def test_parse_errors_one_line(expr: str, words: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_expression(expr)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_cancelling_sum_and_missing_example_fn() -> None:
    with pytest.raises(InputError, match="cancel out"):
        compose('"x" - "x"', FNS)
    with pytest.raises(InputError, match="need the bundle's encoders"):
        compose("@audio:x.wav", {"text": embed_text})


def test_bank_mixes_text_and_expressions(tmp_path: Path) -> None:
    (tmp_path / "bark.wav").write_bytes(b"RIFF\0\0\0\0WAVE")
    f = tmp_path / "p.txt"
    f.write_text('dog: a dog\ndogbark: "a dog" + 0.5*@audio:bark.wav\nstanding: "a person" - "sitting" | x\n')
    prompts = load_prompt_file(f)
    assert prompts[1].base_dir == str(tmp_path) and prompts[1].examples == (ExampleRef("audio", "bark.wav"),)
    bank = build_prompt_bank(prompts, embed_text, "m", embed_example=embed_example)
    np.testing.assert_allclose(bank.vectors[0], E[0], atol=1e-7)
    np.testing.assert_allclose(bank.vectors[1], np.array([1.0, 0.0, 0.5, 0.0]) / np.sqrt(1.25), atol=1e-6)
    w = np.array([0.0, 1.0 - 1 / np.sqrt(2), -1 / np.sqrt(2), 0.0])
    mean = w / np.linalg.norm(w) + E[3]
    np.testing.assert_allclose(bank.vectors[2], mean / np.linalg.norm(mean), atol=1e-6)
    # the cache key covers the example file's bytes
    key = prompt_cache_key(prompts, "m")
    (tmp_path / "bark.wav").write_bytes(b"RIFF\0\0\0\1WAVE")
    assert prompt_cache_key(prompts, "m") != key
    # text-only keys are unchanged by the example support
    assert prompt_cache_key((Prompt("a", ("a",)),), "m") == prompt_cache_key((Prompt("a", ("a",)),), "m")


@pytest.mark.parametrize(
    "line, words",
    [
        ('x: "a dog" +', "missing term"),
        ("x: @audio:missing.wav", "no such file"),
        ("x: @smell:a.wav", "unknown modality"),
        ("@audio:a.wav", "needs a label"),
        ('"a dog" + "x"', "needs a label"),
    ],
)
def test_prompt_file_errors_name_the_line(tmp_path: Path, line: str, words: str) -> None:
    (tmp_path / "a.wav").write_bytes(b"RIFF\0\0\0\0WAVE")
    f = tmp_path / "p.txt"
    f.write_text(f"ok: fine\n{line}\n")
    with pytest.raises(PromptError) as info:
        load_prompt_file(f)
    msg = str(info.value)
    assert f"{f}:2:" in msg and words in msg and "\n" not in msg
