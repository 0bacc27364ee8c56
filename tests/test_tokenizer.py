"""CLIP BPE tokenizer against the official ImageBind tokens (fixtures pre/text_tokens.npy)."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import BundleError, InputError
from runtime.tokenizer import (
    N_MERGES,
    VOCAB_FILENAME,
    VOCAB_SHA256,
    ClipTokenizer,
    bytes_to_unicode,
    eot_positions,
    find_clip_vocab,
    read_merges,
)

pytest.importorskip("ftfy")
pytest.importorskip("regex")


@pytest.fixture(scope="module")
def vocab_path(tiny_bundle: Path) -> Path:
    """The vocabulary as a device gets it: the copy inside a bundle (export took it from open-clip-torch)."""
    return tiny_bundle / VOCAB_FILENAME


@pytest.fixture(scope="module")
def tokenizer(vocab_path: Path) -> ClipTokenizer:
    return ClipTokenizer.from_file(vocab_path)


@pytest.fixture(scope="module")
def texts(official_dir: Path) -> list[str]:
    return json.loads((official_dir / "raw" / "texts.json").read_text(encoding="utf-8"))


def test_matches_official_tokens(tokenizer: ClipTokenizer, texts: list[str], official_dir: Path) -> None:
    golden = np.load(official_dir / "pre" / "text_tokens.npy")
    tokens = tokenizer.encode(texts)
    assert tokens.dtype == np.int64 and tokens.shape == (4, 77)
    for row in range(len(texts)):
        np.testing.assert_array_equal(tokens[row], golden[row], err_msg=f"row {row}: {texts[row][:30]!r}")


def test_truncated_row_keeps_eot_last(tokenizer: ClipTokenizer, texts: list[str]) -> None:
    row = tokenizer.encode(texts[3:])[0]
    assert row[0] == tokenizer.sot and row[76] == tokenizer.eot
    assert np.count_nonzero(row == tokenizer.eot) == 1 and np.all(row != tokenizer.pad)


def test_eot_positions(tokenizer: ClipTokenizer, texts: list[str], official_dir: Path) -> None:
    golden = np.load(official_dir / "pre" / "text_tokens.npy")
    positions = eot_positions(tokenizer.encode(texts))
    assert positions.dtype == np.int64
    np.testing.assert_array_equal(positions, np.argmax(golden, axis=1))
    np.testing.assert_array_equal(positions, [7, 15, 34, 76])


def test_eot_positions_rejects_rows_without_eot() -> None:
    with pytest.raises(InputError, match="row 1"):
        eot_positions(np.array([[49406, 49407], [49406, 5]]))
    with pytest.raises(InputError):
        eot_positions(np.zeros(77, dtype=np.int64))


def test_empty_string(tokenizer: ClipTokenizer) -> None:
    row = tokenizer.encode(["", "   \t\n"])
    expected = np.zeros(77, dtype=np.int64)
    expected[:2] = [tokenizer.sot, tokenizer.eot]
    np.testing.assert_array_equal(row, [expected, expected])
    assert tokenizer.encode([]).shape == (0, 77)


def test_300_words_keep_eot_at_76(tokenizer: ClipTokenizer) -> None:
    words = " ".join(f"word{i % 7} and" for i in range(150))
    row = tokenizer.encode([words])[0]
    assert row[76] == tokenizer.eot and eot_positions(row[None])[0] == 76
    assert np.count_nonzero(row == tokenizer.eot) == 1


def test_cleaning_and_special_tokens(tokenizer: ClipTokenizer) -> None:
    assert tokenizer.clean("  A &amp;amp;  B\t\nC ") == "a & b c"
    np.testing.assert_array_equal(tokenizer.encode(["Hello  World"]), tokenizer.encode(["hello world"]))
    assert tokenizer.text_ids("<|endoftext|>") == [tokenizer.eot]


def test_rejects_bare_string_and_non_strings(tokenizer: ClipTokenizer) -> None:
    with pytest.raises(InputError, match="single string"):
        tokenizer.encode("a dog")
    with pytest.raises(InputError, match="text 1"):
        tokenizer.encode(["a", 3])  # type: ignore[list-item]


def test_byte_table_order() -> None:
    table = bytes_to_unicode()
    symbols = list(table.values())
    assert len(set(symbols)) == 256
    assert symbols[0] == "!" and symbols[93] == "~" and symbols[94] == "¡"
    assert table[0] == chr(256) and table[32] == chr(256 + 32) and symbols[-1] == chr(256 + 67)


def test_constants_and_vocab_size(tokenizer: ClipTokenizer) -> None:
    assert (tokenizer.context_length, tokenizer.sot, tokenizer.eot, tokenizer.pad) == (77, 49406, 49407, 0)
    assert tokenizer.vocab_size == 49408


def test_vocab_hash(vocab_path: Path) -> None:
    import hashlib

    assert hashlib.sha256(vocab_path.read_bytes()).hexdigest() == VOCAB_SHA256
    assert len(read_merges(vocab_path)) == N_MERGES


def test_vocab_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt.gz"
    with pytest.raises(BundleError, match=r"nope\.txt\.gz"):
        ClipTokenizer.from_file(missing)


def test_vocab_hash_mismatch(tmp_path: Path, vocab_path: Path) -> None:
    altered = tmp_path / "vocab.txt.gz"
    text = gzip.decompress(vocab_path.read_bytes()).decode("utf-8").replace("i n\n", "n i\n", 1)
    altered.write_bytes(gzip.compress(text.encode("utf-8")))
    with pytest.raises(BundleError, match="SHA-256 mismatch"):
        ClipTokenizer.from_file(altered)
    # Skipping the check loads it: well-formed, just a different table.
    assert ClipTokenizer.from_file(altered, sha256=None).vocab_size == 49408


def test_vocab_corrupt(tmp_path: Path) -> None:
    not_gzip = tmp_path / "bad.txt.gz"
    not_gzip.write_bytes(b"this is not gzip")
    with pytest.raises(BundleError, match="not a gzip"):
        read_merges(not_gzip, sha256=None)
    short = tmp_path / "short.txt.gz"
    short.write_bytes(gzip.compress(b"#version: 0.2\ni n\nt h\n"))
    with pytest.raises(BundleError, match="merge lines"):
        read_merges(short, sha256=None)
    malformed = tmp_path / "malformed.txt.gz"
    malformed.write_bytes(gzip.compress(("#version\n" + "a b c\n" * N_MERGES).encode()))
    with pytest.raises(BundleError, match="line 2"):
        read_merges(malformed, sha256=None)


def test_find_clip_vocab_missing_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def absent(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(BundleError, match="pip install --no-deps open-clip-torch"):
        find_clip_vocab()


def test_hundred_prompts_are_fast(vocab_path: Path) -> None:
    start = time.perf_counter()
    tokenizer = ClipTokenizer.from_file(vocab_path)
    tokens = tokenizer.encode([f"a photo of a {i}-legged creature, number {i * 7}" for i in range(100)])
    assert tokens.shape == (100, 77)
    assert time.perf_counter() - start < 2.0  # load ~0.1 s + encode ~0.05 s on a laptop CPU
