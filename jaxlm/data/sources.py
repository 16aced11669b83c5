"""Known corpora, their resolution to local files, and document reading.

A corpus is given by name (looked up in `CORPORA`) or by a path/glob. Named
corpora are read from `$JAXLM_DATA_DIR` when present there, else downloaded
into the cache; either way every file is checked against its pinned sha256 so
that a run never silently trains on different bytes.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import pathlib
import tempfile
import urllib.request
from collections.abc import Iterable, Iterator

from jaxlm.errors import UserError

DATA_DIR_ENV = "JAXLM_DATA_DIR"
CACHE_DIR_ENV = "JAXLM_CACHE_DIR"
_CORPUS_SUFFIXES = (".txt", ".jsonl", ".json")
_MAX_EXAMPLES = 10  # problems quoted in stats['examples']; counts are always complete
_DOWNLOAD_TIMEOUT_S = 60


class DataError(UserError, ValueError):
    """A corpus that is absent, unreachable or corrupt; the message names it and the fix."""


class CorpusNotFoundError(DataError, FileNotFoundError):
    """A corpus file that is neither in the data directory nor downloadable."""


@dataclasses.dataclass(frozen=True)
class CorpusFile:
    """One file of a registered corpus, relative to the data/cache dir."""

    path: str
    sha256: str
    url: str | None  # None: not downloadable byte-for-byte, must come from JAXLM_DATA_DIR


def _gh(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


def _mix(path: str, sha256: str, url: str | None = None) -> CorpusFile:
    return CorpusFile(f"text_corpus_mix/{path}", sha256, url)


# Hashes and sources from the SOURCE.md next to each corpus. Files that were
# converted (re-encoded, unpacked from zip/TFRecord) have no URL.
CORPORA: dict[str, tuple[CorpusFile, ...]] = {
    "tiny_shakespeare": (
        CorpusFile(
            "tiny_shakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            _gh("karpathy/char-rnn", "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e",
                "data/tinyshakespeare/input.txt"),
        ),
    ),
    "text_corpus_mix": (
        _mix("gutenberg/pg11_alice_in_wonderland.txt",
             "49a0b2726606e1290ac03a63978fa1dd1bd38a8d805704d98265f393533ea094",
             _gh("GITenberg/Alice-s-Adventures-in-Wonderland_11",
                 "7f18748e114b994d5d9454d5793581bc0b9cf9d7", "11-0.txt")),
        _mix("gutenberg/pg132_art_of_war.txt",
             "7d97b653a5e458d3023c8da65efc0805eeff62c20937a55b92d6dc6bff705b4e",
             _gh("GITenberg/The-Art-of-War_132",
                 "20f54ddcd9792348e59b3e87e1e694f76e19fb53", "132.txt")),
        _mix("gutenberg/pg1342_pride_and_prejudice.txt",
             "48e0522844402a86a3ea98f0947ba85ea54838db3c59022299298ed968a5a163",
             _gh("GITenberg/Pride-and-Prejudice_1342",
                 "81db45c9c48c592f0b77f01fc59e677ad0a5634e", "1342-0.txt")),
        _mix("gutenberg/pg1661_sherlock_holmes.txt",
             "08472247092da56f194e6be4c35af1b203083fa325f363a1fc8e7e5ae012d0ff"),
        _mix("gutenberg/pg17474_how_to_listen_to_music.txt",
             "c502f3ec009edf8c54717e66fee129cc9702987e42525bdf8ce31309e98ddc4e"),
        _mix("gutenberg/pg20866_infantry_drill_regulations.txt",
             "f3a759858ac995ecfb06c365ac1cfc7cf4a915bbdca6d454f19725181a1da685"),
        _mix("gutenberg/pg2701_moby_dick.txt",
             "baf9b04fcf6e0008f30eaaa6697277751448c1070b20175e0082f28cbb161fd3",
             _gh("GITenberg/Moby-Dick--Or-The-Whale_2701",
                 "bdf1948e6cd00963730971e5624e764a35f238c3", "2701-0.txt")),
        _mix("gutenberg/pg3261_news_from_nowhere.txt",
             "e5182ca7efdcfdb806cc6c981df49e0d40a1b578ad1c22beb9db1e69872da914",
             _gh("GITenberg/News-from-Nowhere--Or-An-Epoch-of-Rest--13-Being-Some-"
                 "Chapters-from-a-Utopian-Romance_3261",
                 "79bd67b0ae225cd64f7bbc25c0449850b3131069", "3261.txt")),
        _mix("gutenberg/pg345_dracula.txt",
             "2cba5d53c0ee11742eec4b60b9433a48d344e2779cc8434ff044b6370093d432"),
        _mix("gutenberg/pg52834_guernsey_folk_lore.txt",
             "a4aba4bbde7f373f79105d1754503d1a0c5ac6b89f737b0b228454cab243e8b3",
             _gh("GITenberg/Guernsey-Folk-Lore-a-collection-of-popular-superstitions-"
                 "legendary-tales-peculiar-customs-pro__52834",
                 "9cde4452b41d2b14c7cdb7356967c556db2cff80", "52834-0.txt")),
        _mix("gutenberg/pg76_huckleberry_finn.txt",
             "cd9931183257a850178225bd5e25e4f2df0cbac544dfe9a49cd0ea5a210c24d9",
             _gh("GITenberg/Adventures-of-Huckleberry-Finn_76",
                 "8494afff3a26f95f37376f7a79a014cf818ccaba", "76-0.txt")),
        _mix("gutenberg/pg84_frankenstein.txt",
             "c29a4f56dd91aa894a3f17d5f96b356ccb499e3e2c5a27964de911845e39efab",
             _gh("GITenberg/Frankenstein_84",
                 "c98a483bd1f34e7366126b81bcedd1a6faee636e", "84-0.txt")),
        _mix("gutenberg/pg9198_complete_angler.txt",
             "bf9e69ebb0a0d1fdde60996f70cd0ed9fca6b4295360cb5c65fca0c142f5c390"),
        _mix("gutenberg/pg972_devils_dictionary.txt",
             "f61a70f08650fd2b87101cb276b4d6cf12c4714d4bbd0a8a45a27501ffc8fea3",
             _gh("GITenberg/The-Devil-s-Dictionary_972",
                 "fcea6b9736136ae4bd6bb76b398d56b7cd62e3c8", "972.txt")),
        _mix("gutenberg/pg98_tale_of_two_cities.txt",
             "2fcfa071498b30724bd1bd714ba89e38477d632b86d74e87559f6259d3917e36",
             _gh("GITenberg/A-Tale-of-Two-Cities_98",
                 "0f6111bc7237af7375295ec1754c2e57e19f67f1", "98-0.txt")),
        _mix("reviews/movie_reviews.jsonl",
             "27ce17cf5ca31b0142c7c3b2a4aa66d22bfd1a30017683ddca87426423373632"),
        _mix("speeches/inaugural.jsonl",
             "71618a92a05fbe3afa50a6556fc87c3455b2bfccd9af575ea2bb395e1277d0c5"),
        _mix("speeches/state_union.jsonl",
             "260205f4e6122f549f0272cd8d1c1cafbadd346388a2d7ba69fc20b59b42b636"),
        _mix("web/c4_en_train_sample.jsonl",
             "37a3e14376a0fe5c2a07068b64decbacee289cba3154def2c33305d85f78486d"),
        _mix("web/c4_en_validation_sample.jsonl",
             "acd63b47cda011172c4b8253b39b821f75476506fedf3723b0b0c6389cab0a67"),
        _mix("web/dolma_cc_en_head-0091.jsonl",
             "46a22f8aa42aaa50d9ddf11d0502800827f4b78d784fe09fbed848bae8fbeba8",
             _gh("allenai/dolma", "669f534823b08d266a8fff01f8a1c916a5a56576",
                 "tests/data/multiple_files/cc_en_head-0091.jsonl")),
        _mix("web/dolma_cc_en_head-0174.jsonl",
             "48a7174591620f19193344aa4c5474e686de93cc25142dd56c103ef2e6abc1c4",
             _gh("allenai/dolma", "669f534823b08d266a8fff01f8a1c916a5a56576",
                 "tests/data/multiple_files/cc_en_head-0174.jsonl")),
    ),
}


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """`cache_dir` if given, else $JAXLM_CACHE_DIR, else ~/.cache/jaxlm."""
    chosen = cache_dir or os.environ.get(CACHE_DIR_ENV) or "~/.cache/jaxlm"
    return pathlib.Path(chosen).expanduser()


def sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_sha256(path: pathlib.Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"sha256 mismatch for {path}: expected {expected}, got {actual}. "
            "The file is corrupt or a different version; replace it."
        )


def _download(url: str, dest: pathlib.Path, expected_sha256: str) -> None:
    """Downloads to a temp file next to `dest`, verifies, then renames atomically.

    Atomic rename means a crash or a concurrent reader never sees a partial file.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = pathlib.Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(
            url, timeout=_DOWNLOAD_TIMEOUT_S
        ) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                h.update(block)
                out.write(block)
        actual = h.hexdigest()
        if actual != expected_sha256:
            raise DataError(
                f"sha256 mismatch for {dest.name} downloaded from {url}: "
                f"expected {expected_sha256}, got {actual}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _resolve_registered(
    name: str, data_dir: str | None, cache_dir: str | None
) -> list[pathlib.Path]:
    data_root = data_dir or os.environ.get(DATA_DIR_ENV)
    cache_root = default_cache_dir(cache_dir)
    paths = []
    for entry in CORPORA[name]:
        local = pathlib.Path(data_root).expanduser() / entry.path if data_root else None
        if local is not None and local.exists():
            _check_sha256(local, entry.sha256)
            paths.append(local)
            continue
        if entry.url is None:
            raise CorpusNotFoundError(
                f"corpus {name!r}: file {entry.path} not found"
                + (f" under {data_root}" if data_root else "")
                + f" and it has no download URL; set {DATA_DIR_ENV} to a directory "
                f"containing {entry.path}"
            )
        cached = cache_root / entry.path
        # A cached file with the wrong hash (e.g. truncated by hand) is re-fetched.
        if not (cached.exists() and sha256_file(cached) == entry.sha256):
            try:
                _download(entry.url, cached, entry.sha256)
            except OSError as e:  # urllib's URLError too: no network, DNS, HTTP errors
                raise CorpusNotFoundError(
                    f"corpus {name!r}: {entry.path} is not under "
                    f"{data_root or f'${DATA_DIR_ENV} (unset)'} and downloading {entry.url} "
                    f"failed ({getattr(e, 'reason', e)}); set {DATA_DIR_ENV} to a directory "
                    f"containing {entry.path}") from e
        paths.append(cached)
    return paths


def resolve_corpus(
    name_or_path: str, data_dir: str | None = None, cache_dir: str | None = None
) -> list[pathlib.Path]:
    """Returns the sorted list of files making up a corpus.

    `name_or_path` is an existing file, a directory (all *.txt/*.jsonl/*.json
    below it, recursively), a glob, or a name in `CORPORA`.
    """
    path = pathlib.Path(name_or_path).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix in _CORPUS_SUFFIXES
        )
        if not files:
            raise DataError(f"directory {path} has no {'/'.join(_CORPUS_SUFFIXES)} files")
        return files
    if glob.has_magic(name_or_path):
        matches = sorted(pathlib.Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in matches if p.is_file()]
        if files:
            return files
    if name_or_path in CORPORA:
        return _resolve_registered(name_or_path, data_dir, cache_dir)
    raise DataError(
        f"corpus {name_or_path!r} is neither an existing file/directory/glob nor a "
        f"known corpus (known: {', '.join(sorted(CORPORA))}). Known corpora are read "
        f"from ${DATA_DIR_ENV} or downloaded."
    )


def _init_stats(stats: dict) -> None:
    for key in ("documents", "empty", "invalid_utf8", "malformed_json", "missing_field"):
        stats.setdefault(key, 0)
    stats.setdefault("examples", [])


def _skip(stats: dict, reason: str, path: pathlib.Path, line: int) -> None:
    stats[reason] += 1
    if len(stats["examples"]) < _MAX_EXAMPLES:
        stats["examples"].append(f"{path}:{line}: {reason}")


def _text_records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yields (first line number, paragraph bytes); paragraphs split on blank lines."""
    start, lines = 0, []
    for i, line in enumerate(data.splitlines(), start=1):
        if line.strip():
            if not lines:
                start = i
            lines.append(line)
        elif lines:
            yield start, b"\n".join(lines)
            lines = []
    if lines:
        yield start, b"\n".join(lines)


def _read_file(path: pathlib.Path, text_field: str, stats: dict) -> Iterator[str]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OSError(f"cannot read corpus file {path}: {e}") from e
    is_json = path.suffix in (".jsonl", ".json")
    records = enumerate(data.splitlines(), start=1) if is_json else _text_records(data)
    for line_no, raw in records:
        try:
            text = raw.decode("utf-8")  # strict: bad bytes skip the record, not the file
        except UnicodeDecodeError:
            _skip(stats, "invalid_utf8", path, line_no)
            continue
        if is_json:
            if not text.strip():
                _skip(stats, "empty", path, line_no)
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                _skip(stats, "malformed_json", path, line_no)
                continue
            text = obj.get(text_field) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                _skip(stats, "missing_field", path, line_no)
                continue
            try:
                text.encode("utf-8")  # JSON escapes can encode lone surrogates
            except UnicodeEncodeError:
                _skip(stats, "invalid_utf8", path, line_no)
                continue
        if not text.strip():
            _skip(stats, "empty", path, line_no)
            continue
        stats["documents"] += 1
        yield text


def read_documents(
    paths: Iterable[str | os.PathLike],
    text_field: str = "text",
    stats: dict | None = None,
) -> Iterator[str]:
    """Yields documents from .txt (blank-line separated paragraphs) and .jsonl/.json
    (one JSON object per line, document in `text_field`) files.

    Bad records are skipped and counted in `stats` (see `_init_stats` for keys);
    only an unreadable file raises.
    """
    stats = {} if stats is None else stats
    _init_stats(stats)
    for p in paths:
        path = pathlib.Path(p)
        if path.suffix not in _CORPUS_SUFFIXES:
            raise DataError(
                f"unsupported corpus file {path}: expected one of {_CORPUS_SUFFIXES}"
            )
        yield from _read_file(path, text_field, stats)
