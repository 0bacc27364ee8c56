"""Prompt lists, prompt files, template averaging, the bank cache, and a real text encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from runtime.embedder import Embedder
from runtime.errors import InputError
from runtime.manifest import load_manifest
from runtime.prompts import (
    Prompt,
    PromptBank,
    PromptError,
    build_prompt_bank,
    bundle_text_embed,
    load_prompt_file,
    parse_prompt_list,
)
from sensors.sim_world import EVENT_CLASSES

DEMO_PROMPTS = Path(__file__).parent / "fixtures" / "prompts_demo.txt"


class CountingEmbed:
    """A deterministic fake text encoder: a seeded random (scaled) vector per text; counts calls."""

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.calls = 0
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> NDArray[np.float32]:
        self.calls += 1
        self.texts.extend(texts)
        rows = [np.random.default_rng(sum(t.encode())).normal(size=self.dim) * 7.0 for t in texts]
        return np.asarray(rows, dtype=np.float32)


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "prompts.txt"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_parse_prompt_list() -> None:
    prompts = parse_prompt_list(" a dog ;glass breaking;; ")
    assert prompts == (Prompt("a dog", ("a dog",)), Prompt("glass breaking", ("glass breaking",)))
    with pytest.raises(PromptError, match="duplicate"):
        parse_prompt_list("a;b;a")
    with pytest.raises(PromptError, match="no prompts"):
        parse_prompt_list(" ; ;")


def test_prompt_file_syntax(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# a comment\n\n"
        "glass: glass breaking |  shattering glass \n"
        "  a dog barking  \n"
        "fall [threshold=0.3]: a person falls | someone falling\n"
        "beep [ threshold = -0.1 ]\n"
        "  # indented comment\n"
        "!background: an empty room | silence\n"
        "! nothing: random noise\n"
        "note: a #hash inside text\n",
    )
    prompts = load_prompt_file(path)
    assert prompts == (
        Prompt("glass", ("glass breaking", "shattering glass")),
        Prompt("a dog barking", ("a dog barking",)),
        Prompt("fall", ("a person falls", "someone falling"), threshold=0.3),
        Prompt("beep", ("beep",), threshold=-0.1),
        Prompt("background", ("an empty room", "silence"), background=True),
        Prompt("nothing", ("random noise",), background=True),
        Prompt("note", ("a #hash inside text",)),
    )


def test_label_colon_skips_quotes_and_examples(tmp_path: Path) -> None:
    path = write(tmp_path, 'say "hi: there" loudly\n- a dog: x\n2*x: y\n5" screen: a tv\n')
    assert load_prompt_file(path) == (
        Prompt('say "hi: there" loudly', ('say "hi: there" loudly',)),
        Prompt("- a dog", ("x",)),
        Prompt("2*x", ("y",)),
        Prompt('5" screen', ("a tv",)),
    )


def test_prompt_file_bom_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffa: x | y\r\nb\r\n".encode())
    assert load_prompt_file(path) == (Prompt("a", ("x", "y")), Prompt("b", ("b",)))


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("", 1, "empty prompt file"),
        ("  \n\n", 1, "empty prompt file"),
        ("# only\n\n# comments\n", 3, "no prompts"),
        ("!bg: silence\n", 1, "only background"),
        ("a: x\nb: y\na: z\n", 3, "duplicate label 'a'"),
        ("a: x || y\n", 1, "empty template"),
        ("a: x |\n", 1, "empty template"),
        ("a:\n", 1, "empty template"),
        (": x\n", 1, "missing label"),
        ("a [threshold=0.3: x\n", 1, "malformed options"),
        ("a threshold=0.3]: x\n", 1, "malformed options"),
        ("a [threshold=0.3] b: x\n", 1, "malformed options"),
        ("a [gain=2]: x\n", 1, "unknown option"),
        ("a [threshold]: x\n", 1, "unknown option"),
        ("a [threshold=high]: x\n", 1, "not a number"),
        ("a [threshold=1.5]: x\n", 1, r"must be in \[-1, 1\]"),
        ("a: x\n!bg [threshold=0.2]: y\n", 2, "takes no threshold"),
        ("a | b: x\n", 1, "must be non-empty without"),
        ("a: x\nglass @audio:x.wav\n", 2, "example inside plain text"),
        ("a: x\nb: glass | the @IMU : x.npy\n", 2, "example inside plain text"),
        ('a: x\n-"x" + "y"\n', 2, "needs a label"),
        ("a: x\n0.5 * @audio:x.wav\n", 2, "needs a label"),
    ],
)
def test_prompt_file_errors(tmp_path: Path, text: str, line: int, what: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PromptError, match=what) as info:
        load_prompt_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ")
    assert "\n" not in message
    assert isinstance(info.value, InputError)


def test_prompt_file_undecodable_and_missing(tmp_path: Path) -> None:
    path = write(tmp_path, b"a: x\nb: caf\xe9\n")
    with pytest.raises(PromptError, match=r"prompts.txt:2: not UTF-8 \(byte 0xe9\)"):
        load_prompt_file(path)
    with pytest.raises(PromptError, match="cannot read prompt file"):
        load_prompt_file(tmp_path / "missing.txt")


def test_demo_file_covers_sim_classes() -> None:
    prompts = load_prompt_file(DEMO_PROMPTS)
    events = [p for p in prompts if not p.background]
    assert [p.label for p in events] == [c.label for c in EVENT_CLASSES]
    assert all(2 <= len(p.templates) <= 3 for p in events)
    assert any(p.background for p in prompts)
    assert any(p.threshold is not None for p in prompts)


def test_template_average_is_normalised_mean_of_unit_vectors() -> None:
    embed = CountingEmbed()
    prompts = (Prompt("a", ("x", "yy", "zzz")), Prompt("b", ("w",)), Prompt("bg", ("q", "r"), background=True))
    bank = build_prompt_bank(prompts, embed, "model-1")
    assert embed.calls == 1 and embed.texts == ["x", "yy", "zzz", "w", "q", "r"]
    raw = CountingEmbed()(embed.texts).astype(np.float64)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    for row, rows in zip(bank.vectors, (unit[0:3], unit[3:4], unit[4:6]), strict=True):
        mean = rows.mean(axis=0)
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)
    assert bank.vectors.dtype == np.float32 and bank.vectors.shape == (3, 8)
    assert bank.labels == ("a", "b", "bg") and bank.model_id == "model-1"
    assert not bank.vectors.flags.writeable
    cos = bank.cosine(bank.vectors)
    assert cos.shape == (3, 3) and cos.dtype == np.float32
    np.testing.assert_allclose(np.diag(cos), 1.0, rtol=1e-5)
    with pytest.raises(InputError, match="expected"):
        bank.cosine(np.zeros((2, 5), np.float32))


def test_bank_cache_hit_miss_and_model_id(tmp_path: Path) -> None:
    prompts = parse_prompt_list("a dog;a cat")
    embed = CountingEmbed()
    first = build_prompt_bank(prompts, embed, "model-1", cache_dir=tmp_path / "cache")
    assert embed.calls == 1 and len(list((tmp_path / "cache").glob("prompts-*.npz"))) == 1
    again = build_prompt_bank(prompts, embed, "model-1", cache_dir=tmp_path / "cache")
    assert embed.calls == 1
    np.testing.assert_array_equal(first.vectors, again.vectors)
    build_prompt_bank(prompts, embed, "model-2", cache_dir=tmp_path / "cache")
    assert embed.calls == 2
    changed = (prompts[0], Prompt("a cat", ("a cat", "a kitten")))
    build_prompt_bank(changed, embed, "model-1", cache_dir=tmp_path / "cache")
    assert embed.calls == 3
    flagged = (prompts[0], Prompt("a cat", ("a cat",), background=True))
    build_prompt_bank(flagged, embed, "model-1", cache_dir=tmp_path / "cache")
    assert embed.calls == 4
    assert len(list((tmp_path / "cache").glob("prompts-*.npz"))) == 4


def test_corrupt_cache_is_reencoded(tmp_path: Path) -> None:
    prompts = parse_prompt_list("a dog;a cat")
    embed = CountingEmbed()
    build_prompt_bank(prompts, embed, "m", cache_dir=tmp_path)
    (cache_file,) = tmp_path.glob("prompts-*.npz")
    cache_file.write_bytes(b"not an npz")
    bank = build_prompt_bank(prompts, embed, "m", cache_dir=tmp_path)
    assert embed.calls == 2 and bank.vectors.shape == (2, 8)
    build_prompt_bank(prompts, embed, "m", cache_dir=tmp_path)
    assert embed.calls == 2


def test_bank_rejects_bad_inputs() -> None:
    with pytest.raises(PromptError, match="no prompts"):
        build_prompt_bank((), CountingEmbed(), "m")
    with pytest.raises(PromptError, match=r"returned \(1, 8\) for 2 texts"):
        build_prompt_bank(parse_prompt_list("a;b"), lambda texts: np.ones((1, 8), np.float32), "m")
    with pytest.raises(PromptError, match="zero"):
        build_prompt_bank(parse_prompt_list("a"), lambda texts: np.zeros((1, 8), np.float32), "m")
    with pytest.raises(PromptError, match="duplicate"):
        PromptBank((Prompt("a", ("x",)), Prompt("a", ("y",))), np.eye(2, dtype=np.float32), "m")
    with pytest.raises(PromptError, match="do not match"):
        PromptBank((Prompt("a", ("x",)),), np.eye(2, dtype=np.float32), "m")


def test_bank_from_real_text_encoder(tiny_bundle: Path, tmp_path: Path) -> None:
    manifest = load_manifest(tiny_bundle)
    prompts = load_prompt_file(DEMO_PROMPTS)
    with Embedder(manifest) as embedder:
        embed = bundle_text_embed(embedder)
        bank = build_prompt_bank(prompts, embed, manifest.model_id, cache_dir=tmp_path)
        cached = build_prompt_bank(prompts, _fail_embed, manifest.model_id, cache_dir=tmp_path)
        single = embed(list(prompts[0].templates))
    assert bank.vectors.shape == (len(prompts), manifest.embed_dim)
    assert bank.labels == tuple(p.label for p in prompts)
    np.testing.assert_allclose(np.linalg.norm(bank.vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(cached.vectors, bank.vectors)
    unit = single / np.linalg.norm(single, axis=1, keepdims=True)
    mean = unit.mean(axis=0)
    np.testing.assert_allclose(bank.vectors[0], mean / np.linalg.norm(mean), atol=1e-5)
    scores = bank.cosine(bank.vectors[:2])
    assert scores.shape == (2, len(prompts)) and np.all(np.abs(scores) <= 1.0 + 1e-5)


def _fail_embed(texts: list[str]) -> NDArray[np.float32]:
    raise AssertionError(f"cache miss: embed_text called for {len(texts)} texts")
