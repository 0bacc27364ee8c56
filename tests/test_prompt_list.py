"""The ``--prompts "a;b"`` list: prompt-file syntax per item, derived labels, one-line errors, real banks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.prompt_list import split_items
from runtime.prompt_math import ExampleRef
from runtime.prompts import Prompt, PromptError, build_prompt_bank, parse_prompt_list

RATE = 16000


@pytest.fixture()
def clips(tmp_path: Path) -> Path:
    """tmp_path with bark.wav (0.5 s tone), sub/bark.wav (noise) and frame.png (PNG bytes)."""
    from runtime.preprocess.wav import write_wav

    t = np.arange(RATE // 2) / RATE
    write_wav(tmp_path / "bark.wav", 0.3 * np.sin(2 * np.pi * 440.0 * t), RATE)
    (tmp_path / "sub").mkdir()
    write_wav(tmp_path / "sub" / "bark.wav", 0.1 * np.random.default_rng(0).normal(size=RATE), RATE)
    (tmp_path / "frame.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return tmp_path


def test_plain_texts_are_unchanged() -> None:
    prompts = parse_prompt_list(" a dog ;glass breaking;; ;#hashtag;5\" screen")
    assert prompts == (Prompt("a dog", ("a dog",)), Prompt("glass breaking", ("glass breaking",)),
                       Prompt("#hashtag", ("#hashtag",)), Prompt('5" screen', ('5" screen',)))  # fmt: skip
    assert all(p.threshold is None and not p.background for p in prompts)


def test_items_take_the_prompt_file_syntax() -> None:
    prompts = parse_prompt_list(
        "glass: glass breaking | shattering glass;fall [threshold=0.3]: a person falls;"
        "beep [threshold=-0.1];!background: an empty room | silence;! quiet;time: 5pm"
    )
    assert prompts == (
        Prompt("glass", ("glass breaking", "shattering glass")),
        Prompt("fall", ("a person falls",), threshold=0.3),
        Prompt("beep", ("beep",), threshold=-0.1),
        Prompt("background", ("an empty room", "silence"), background=True),
        Prompt("quiet", ("quiet",), background=True),
        Prompt("time", ("5pm",)),
    )
    assert prompts[0].source == "prompt list item 1 'glass: glass breaking | shattering glass'"


def test_example_items(clips: Path) -> None:
    text = "glass: glass breaks | @audio:bark.wav;@audio:sub/bark.wav;!quiet: @audio:bark.wav"
    prompts = parse_prompt_list(text, base_dir=clips)
    assert [(p.label, p.templates, p.background) for p in prompts] == [
        ("glass", ("glass breaks", "@audio:bark.wav"), False),
        ("bark.wav", ("@audio:sub/bark.wav",), False),
        ("quiet", ("@audio:bark.wav",), True),
    ]
    assert prompts[1].examples == (ExampleRef("audio", "sub/bark.wav"),)
    (bg, _) = parse_prompt_list("!@audio:bark.wav;a", base_dir=clips)
    assert (bg.label, bg.background) == ("bark.wav", True)


def test_duplicate_derived_labels_and_base_dirs(clips: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dup = r"item 2 '@audio:sub/bark.wav': duplicate prompt label 'bark.wav' \(item 1\)"
    with pytest.raises(PromptError, match=dup):
        parse_prompt_list("@audio:bark.wav;@audio:sub/bark.wav", base_dir=clips)
    prompts = parse_prompt_list("glass: glass breaks | @audio:bark.wav;sub: @audio:sub/bark.wav", base_dir=clips)
    assert prompts[0].example_paths() == (clips / "bark.wav",)
    assert prompts[1].example_paths() == (clips / "sub" / "bark.wav",)
    monkeypatch.chdir(clips / "sub")  # default base: the current directory
    (only,) = parse_prompt_list("@audio:bark.wav")
    assert only.label == "bark.wav" and only.example_paths() == (clips / "sub" / "bark.wav",)
    with pytest.raises(PromptError, match="no such file"):
        parse_prompt_list("@audio:sub/bark.wav")  # not relative to the old base any more


@pytest.mark.parametrize(
    ("item", "label"),
    [
        ("@audio:bark.wav", "bark.wav"),
        ("@audio:sub/bark.wav", "bark.wav"),
        ('"a dog" + 0.5*@audio:bark.wav', "a dog + 0.5*bark.wav"),
        ('"a person" - "sitting"', "a person - sitting"),
        ('-0.3 * "an: empty [room]" + @audio:bark.wav', "-0.3*an empty room + bark.wav"),
        ('0.5*"a; b"', "0.5*a b"),
        ('"!loud" - 2*"x"', "loud - 2*x"),
        ("@imu:rec.npz#imu[12:17]", "rec.npz#imu(12s-17s)"),
        ("@imu:rec.npz[:4.5]", "rec.npz(0s-4.5s)"),
        ("@imu:rec.npz#imu[3:]", "rec.npz#imu(3s-end)"),
    ],
)
def test_derived_labels(clips: Path, item: str, label: str) -> None:
    (clips / "rec.npz").write_bytes(b"PK\x03\x04" + bytes(16))  # parse checks the kind only
    (prompt,) = parse_prompt_list(f"{item};other", base_dir=clips)[:1]
    assert prompt.label == label and prompt.templates == (item,)
    # a derived label can be written back as a prompt-file label
    again = parse_prompt_list(f"{label}: {item};other", base_dir=clips)[0]
    assert again == prompt


def test_labels_and_colons_inside_quotes_and_examples(clips: Path) -> None:
    prompts = parse_prompt_list('say "hi: there" loudly;dog: "a dog: barking" + @audio:bark.wav', base_dir=clips)
    assert prompts[0] == Prompt('say "hi: there" loudly', ('say "hi: there" loudly',))
    assert prompts[1].label == "dog" and prompts[1].examples == (ExampleRef("audio", "bark.wav"),)
    assert split_items('a;"x; y" + "z";b') == ["a", '"x; y" + "z"', "b"]
    assert split_items('"x \\"; y";b') == ['"x \\"; y"', "b"]
    assert split_items('5" tv;a') == ['5" tv', "a"]  # unbalanced quote: every ';' splits


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("a;b;a", "item 3 'a'", "duplicate prompt label 'a' (item 1)"),
        ("x;a: @audio:nope.wav", "item 2 'a: @audio:nope.wav'", "no such file"),
        ("x: @audio:frame.png", "item 1", "a PNG image is not audio"),
        ("glass @audio:bark.wav", "item 1", "example inside plain text"),
        ("@smell:bark.wav", "item 1", "unknown modality 'smell'"),
        ('"a dog" +', "item 1", "missing term"),
        ('"a dog" - "a dog"; x', None, None),  # cancels only when encoded, parses fine
        ('"unterminated + @audio:bark.wav', "item 1", "unterminated quote"),
        ("a [threshold=2]: x", "item 1", "must be in [-1, 1]"),
        ("a [gain=2]: x", "item 1", "unknown option"),
        ("!bg [threshold=0.2]: x;a", "item 1", "takes no threshold"),
        ("a: x || y", "item 1", "empty template"),
        (": x", "item 1", "missing label"),
        ('":"', "item 1", "cannot derive a label"),
        (" ; ;", "prompt list ' ; ;'", "no prompts"),
        ("!silence;!@audio:bark.wav", "prompt list", "only background prompts"),
    ],
)
def test_malformed_items_are_one_line_errors(clips: Path, text: str, where: str | None, words: str | None) -> None:
    if where is None:
        assert len(parse_prompt_list(text)) == 2
        return
    with pytest.raises(PromptError) as info:
        parse_prompt_list(text, base_dir=clips)
    message = str(info.value)
    assert where in message and words in message and "\n" not in message, message
    assert isinstance(info.value, InputError)


def test_list_bank_with_known_vectors(clips: Path) -> None:
    """Texts, an example and an expression from one list: exact vectors with known embeddings."""
    e = np.eye(4)
    texts = {"a dog": 3.0 * e[0], "glass breaks": 2.0 * e[1]}
    seen: list[tuple[ExampleRef, Path]] = []

    def embed_text(batch: list[str]) -> np.ndarray:
        return np.stack([texts[t] for t in batch]).astype(np.float32)

    def embed_example(ref: ExampleRef, path: Path) -> np.ndarray:
        seen.append((ref, path))
        return (5.0 * e[2]).astype(np.float32)

    prompts = parse_prompt_list('a dog;glass: glass breaks | @audio:bark.wav;"a dog" + 0.5*@audio:bark.wav', clips)
    bank = build_prompt_bank(prompts, embed_text, "m", cache_dir=clips / "cache", embed_example=embed_example)
    assert bank.labels == ("a dog", "glass", "a dog + 0.5*bark.wav")
    np.testing.assert_allclose(bank.vectors[0], e[0], atol=1e-7)
    np.testing.assert_allclose(bank.vectors[1], (e[1] + e[2]) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(bank.vectors[2], (e[0] + 0.5 * e[2]) / np.sqrt(1.25), atol=1e-6)
    assert {path for _, path in seen} == {clips / "bark.wav"}


def test_list_with_an_example_builds_a_bank_with_the_tiny_bundle(tiny_bundle: Path, clips: Path) -> None:
    from runtime.embedder import Embedder
    from runtime.manifest import load_manifest
    from runtime.prompt_examples import embed_example
    from runtime.prompts import bundle_text_embed

    manifest = load_manifest(tiny_bundle)
    prompts = parse_prompt_list("a dog barking;glass: glass breaks | @audio:bark.wav;@audio:sub/bark.wav", clips)
    with Embedder(manifest, threads=1) as embedder:
        embed_text = bundle_text_embed(embedder)
        bank = build_prompt_bank(prompts, embed_text, manifest.model_id, cache_dir=clips / "cache")
        text = embed_text(["glass breaks"])[0]
        tone = embed_example(ExampleRef("audio", "bark.wav"), clips / "bark.wav", embedder)
        noise = embed_example(ExampleRef("audio", "sub/bark.wav"), clips / "sub" / "bark.wav", embedder)
    assert bank.labels == ("a dog barking", "glass", "bark.wav")
    assert bank.vectors.shape == (3, manifest.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(bank.vectors, axis=1), 1.0, atol=1e-5)
    mean = text / np.linalg.norm(text) + tone
    np.testing.assert_allclose(bank.vectors[1], mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(bank.vectors[2], noise, atol=1e-5)
    assert not np.allclose(tone, noise, atol=1e-3)  # the two clips really differ
