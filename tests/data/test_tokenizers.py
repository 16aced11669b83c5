"""Tests for the byte and SentencePiece tokenizers and their cache."""

import random

import pytest
import sentencepiece as spm

from jaxlm.data import tokenizers

_TEXTS = [
    "Hello world, this is a tiny corpus.",
    "  Leading spaces,  double spaces\nand a newline.",
    "Numbers 12345 and 2024-01-01 are split into digits.",
    "Unicode: héllo, naïve café, 日本語, emoji 🙂.",
]


def _corpus(n: int = 300) -> list[str]:
    rng = random.Random(0)
    words = "the quick brown fox jumps over lazy dog king queen speak thou art".split()
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(n)]
    return docs + _TEXTS


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory):
    return tokenizers.train_sentencepiece(_corpus(), 320, tmp_path_factory.mktemp("cache"))


def test_byte_tokenizer_round_trips_unicode():
    tok = tokenizers.ByteTokenizer()
    assert (tok.vocab_size, tok.pad_id, tok.eos_id, tok.bos_id) == (259, 0, 1, 2)
    for text in _TEXTS + ["", "\x00\xff"]:
        ids = tok.encode(text)
        assert all(3 <= i < 259 for i in ids)
        assert tok.decode(ids) == text
    assert tok.encode("A") == [ord("A") + 3]
    assert tok.decode([2, *tok.encode("ok"), 1, 0, 0]) == "ok"
    assert tok.decode(tok.encode("é")[:1]) == "\ufffd"  # broken UTF-8 is replaced
    assert isinstance(tok, tokenizers.Tokenizer)


def test_sentencepiece_round_trip_and_special_ids(spm_path):
    tok = tokenizers.SentencePieceTokenizer(spm_path)
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.vocab_size) == (0, 1, 2, 320)
    for text in _TEXTS + ["unseen: ßø Ω ∑ 🚀\n\n\tend"]:
        ids = tok.encode(text)
        assert all(3 <= i < 320 for i in ids)
        assert tok.decode(ids) == text
    ids = tok.encode("the king")
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == "the king"
    # split_digits: every digit is its own piece.
    assert len(tok.encode("12345")) >= 5


def test_sentencepiece_cache_hit_does_not_retrain(spm_path, monkeypatch):
    mtime = spm_path.stat().st_mtime_ns
    assert spm_path.parent.name == "tokenizers" and spm_path.name.startswith("spm-")

    def fail(**kwargs):
        raise AssertionError("retrained despite cache hit")

    monkeypatch.setattr(spm.SentencePieceTrainer, "train", fail)
    again = tokenizers.train_sentencepiece(iter(_corpus()), 320, spm_path.parent.parent)
    assert again == spm_path and spm_path.stat().st_mtime_ns == mtime
    assert [p.name for p in spm_path.parent.iterdir()] == [spm_path.name]  # no temp files


def test_sentencepiece_key_depends_on_data_and_vocab(spm_path, tmp_path):
    cache = spm_path.parent.parent
    assert tokenizers.train_sentencepiece(_corpus(), 330, cache) != spm_path
    assert tokenizers.train_sentencepiece(_corpus()[:-1], 320, cache) != spm_path


def test_sentencepiece_training_is_deterministic(spm_path, tmp_path):
    other = tokenizers.train_sentencepiece(_corpus(), 320, tmp_path)
    assert other != spm_path and other.name == spm_path.name
    assert other.read_bytes() == spm_path.read_bytes()


def test_build_tokenizer(spm_path):
    def no_docs():
        raise AssertionError("documents must not be read")

    assert isinstance(tokenizers.build_tokenizer("byte", 0, no_docs, None),
                      tokenizers.ByteTokenizer)
    loaded = tokenizers.build_tokenizer("sentencepiece", 999, no_docs, None, str(spm_path))
    assert loaded.vocab_size == 320
    trained = tokenizers.build_tokenizer("sentencepiece", 320, _corpus, spm_path.parent.parent)
    assert trained.model_path == spm_path
    with pytest.raises(ValueError, match="data.tokenizer.kind"):
        tokenizers.build_tokenizer("wordpiece", 320, no_docs, None)


@pytest.mark.parametrize('kind', ['sentencepiece', 'hf'])
def test_missing_tokenizer_path_is_a_config_error(kind, tmp_path):
    from jaxlm.errors import ConfigError

    with pytest.raises(ConfigError, match='does not exist'):
        tokenizers.build_tokenizer(kind, 512, list, None, str(tmp_path / 'missing.model'))
