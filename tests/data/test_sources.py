"""Tests for corpus resolution (local, download, hashes) and document reading."""

import functools
import hashlib
import http.server
import json
import threading

import pytest

from jaxlm.data import sources


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def http_dir(tmp_path):
    """Serves tmp_path/'srv' on 127.0.0.1; yields (base_url, dir, request log)."""
    root = tmp_path / "srv"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _register(monkeypatch, *files):
    monkeypatch.setitem(sources.CORPORA, "test_corpus", tuple(files))


def test_registered_corpora_resolve_in_shared_dir(shared_data_dir):
    paths = sources.resolve_corpus("tiny_shakespeare", data_dir=str(shared_data_dir))
    assert paths == [shared_data_dir / "tiny_shakespeare" / "input.txt"]
    mix = sources.resolve_corpus("text_corpus_mix", data_dir=str(shared_data_dir))
    names = {p.name for p in mix}
    assert len(mix) == 22 and "PROJECT_GUTENBERG_LICENSE.txt" not in names
    assert not any(n.endswith("README.txt") for n in names)
    assert "pg1342_pride_and_prejudice.txt" in names and "inaugural.jsonl" in names


def test_data_dir_from_env(monkeypatch, shared_data_dir):
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(shared_data_dir))
    assert sources.resolve_corpus("tiny_shakespeare")[0].is_file()


def test_local_sha_mismatch_raises(tmp_path, monkeypatch):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_bytes(b"tampered")
    _register(monkeypatch, sources.CorpusFile("c/a.txt", _sha(b"original"), None))
    with pytest.raises(ValueError) as err:
        sources.resolve_corpus("test_corpus", data_dir=str(tmp_path))
    msg = str(err.value)
    assert "a.txt" in msg and _sha(b"original") in msg and _sha(b"tampered") in msg


def test_download_verifies_and_caches(tmp_path, monkeypatch, http_dir):
    base, root, requests = http_dir
    payload = "hello\n\nworld ünïcode\n".encode()
    (root / "f.txt").write_bytes(payload)
    _register(monkeypatch, sources.CorpusFile("c/f.txt", _sha(payload), f"{base}/f.txt"))
    cache = tmp_path / "cache"
    paths = sources.resolve_corpus("test_corpus", data_dir=str(tmp_path / "none"),
                                   cache_dir=str(cache))
    assert paths == [cache / "c" / "f.txt"]
    assert paths[0].read_bytes() == payload
    assert sorted(p.name for p in (cache / "c").iterdir()) == ["f.txt"]  # no temp left
    # Second call uses the verified cache: no new request.
    assert sources.resolve_corpus("test_corpus", cache_dir=str(cache)) == paths
    assert requests == ["/f.txt"]
    assert list(sources.read_documents(paths)) == ["hello", "world ünïcode"]


def test_download_sha_mismatch_leaves_no_file(tmp_path, monkeypatch, http_dir):
    base, root, _ = http_dir
    (root / "f.txt").write_bytes(b"served bytes")
    _register(monkeypatch, sources.CorpusFile("c/f.txt", _sha(b"pinned"), f"{base}/f.txt"))
    cache = tmp_path / "cache"
    with pytest.raises(ValueError) as err:
        sources.resolve_corpus("test_corpus", cache_dir=str(cache))
    msg = str(err.value)
    assert "f.txt" in msg and _sha(b"pinned") in msg and _sha(b"served bytes") in msg
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_missing_file_without_url(tmp_path, monkeypatch):
    _register(monkeypatch, sources.CorpusFile("c/gone.jsonl", _sha(b""), None))
    with pytest.raises(FileNotFoundError, match=r"c/gone\.jsonl.*JAXLM_DATA_DIR"):
        sources.resolve_corpus("test_corpus", data_dir=str(tmp_path), cache_dir=str(tmp_path))


def test_unknown_name(monkeypatch):
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    with pytest.raises(ValueError, match="tiny_shakespeare.*JAXLM_DATA_DIR"):
        sources.resolve_corpus("no_such_corpus")


def test_paths_dirs_and_globs(tmp_path):
    for name in ["b.jsonl", "a.txt", "sub/c.json", "notes.md"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    expected = [tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "sub" / "c.json"]
    assert sources.resolve_corpus(str(tmp_path)) == expected
    assert sources.resolve_corpus(str(tmp_path / "a.txt")) == [tmp_path / "a.txt"]
    assert sources.resolve_corpus(str(tmp_path / "*.*l")) == [tmp_path / "b.jsonl"]


def test_text_paragraphs_and_bad_utf8(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(
        b"First:\nspeech one\n\n\n  \nSecond:\r\nspeech two\n\nbad \xff byte\nline\n\n"
        b"last\tpara"
    )
    stats = {}
    docs = list(sources.read_documents([path], stats=stats))
    assert docs == ["First:\nspeech one", "Second:\nspeech two", "last\tpara"]
    assert stats["documents"] == 3 and stats["invalid_utf8"] == 1
    assert stats["examples"] == [f"{path}:9: invalid_utf8"]


def test_jsonl_bad_records_are_counted(tmp_path):
    lines = [
        json.dumps({"text": "good one"}).encode(),
        b'{"text": "unterminated',
        json.dumps({"body": "no text field"}).encode(),
        json.dumps({"text": 5}).encode(),
        json.dumps(["not", "an", "object"]).encode(),
        json.dumps({"text": "  \n "}).encode(),
        b"",
        b'{"text": "caf\xe9"}',
        b'{"text": "lone \\ud800 surrogate"}',
        json.dumps({"text": "good two \U0001f600"}).encode(),
    ]
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    stats = {}
    docs = list(sources.read_documents([path, path], stats=stats))
    assert docs == ["good one", "good two \U0001f600"] * 2
    assert stats["documents"] == 4
    assert (stats["malformed_json"], stats["missing_field"], stats["empty"],
            stats["invalid_utf8"]) == (2, 6, 4, 4)
    assert stats["examples"][0] == f"{path}:2: malformed_json"
    assert len(stats["examples"]) == 10  # capped


def test_custom_text_field(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"body": "b", "text": "t"}) + "\n")
    assert list(sources.read_documents([path], text_field="body")) == ["b"]


def test_unreadable_file_raises_with_path(tmp_path):
    bad = tmp_path / "dir.txt"
    bad.mkdir()
    with pytest.raises(OSError, match="dir.txt"):
        list(sources.read_documents([bad]))
