"""load_imdb's sources: an aclImdb folder, a .tar.gz, the download path (against a local HTTP
server), synthetic reviews, and `auto` when nothing works. tfds, and `auto` through tfds, are in
test_tfds_source.py (TensorFlow, in a process of its own)."""
import hashlib
import http.server
import io
import tarfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from support import imdb

# (split, class folder, id, rating) -> text; ratings follow IMDB (neg <= 4, pos >= 7)
FAKE_REVIEWS = {
    ("train", "pos", 0, 9): "A wonderful film, train positive zero.",
    ("train", "pos", 12, 7): "Loved it: train positive twelve.",
    ("train", "neg", 3, 1): "Dull. Train negative three.",
    ("train", "neg", 4, 2): "Awful, train negative four. Ünïcödé survives.",
    ("train", "neg", 10, 4): "Weak; train negative ten.",
    ("test", "pos", 5, 10): "Superb, test positive five.",
    ("test", "neg", 6, 3): "Boring, test negative six.",
}
# files that are not reviews and must be ignored
UNRELATED = {
    "aclImdb/README": "Large Movie Review Dataset",
    "aclImdb/imdb.vocab": "the\nand\n",
    "aclImdb/train/pos/notes.txt": "not a review",
    "aclImdb/train/unsup/99_0.txt": "unlabelled review",
    "aclImdb/train/urls_pos.txt": "http://www.imdb.com/title/tt0000000/usercomments",
}


def expected(split):
    return Counter((text, int(folder == "pos"))
                   for (s, folder, _, _), text in FAKE_REVIEWS.items() if s == split)


def write_folder(root: Path) -> Path:
    for (split, folder, rid, rating), text in FAKE_REVIEWS.items():
        path = root / "aclImdb" / split / folder / f"{rid}_{rating}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for name, text in UNRELATED.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root / "aclImdb"


def tarball_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        members = {f"aclImdb/{s}/{f}/{i}_{r}.txt": t for (s, f, i, r), t in FAKE_REVIEWS.items()}
        for name, text in {**members, **UNRELATED}.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def aclimdb_folder(tmp_path):
    return write_folder(tmp_path)


@pytest.fixture
def aclimdb_tarball(tmp_path):
    path = tmp_path / "aclImdb_v1.tar.gz"
    path.write_bytes(tarball_bytes())
    return path


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("kind", ["folder", "parent folder", "tarball"])
def test_local_sources_give_the_right_texts_and_labels(kind, split, aclimdb_folder, aclimdb_tarball):
    source = {"folder": aclimdb_folder, "parent folder": aclimdb_folder.parent,
              "tarball": aclimdb_tarball}[kind]
    texts, labels = imdb.load_imdb(split, source=str(source), verbose=False)
    assert labels.dtype == np.int64
    assert Counter(zip(texts, labels.tolist())) == expected(split)
    # same call, same order
    again, _ = imdb.load_imdb(split, source=str(source), verbose=False)
    assert again == texts


def test_folder_and_tarball_agree(aclimdb_folder, aclimdb_tarball):
    for split in ("train", "test"):
        a = imdb.load_imdb(split, source=str(aclimdb_folder), verbose=False)
        b = imdb.load_imdb(split, source=str(aclimdb_tarball), verbose=False)
        assert a[0] == b[0] and np.array_equal(a[1], b[1])


def test_load_imdb_reports_what_it_loaded(aclimdb_tarball, capsys):
    imdb.load_imdb("train", source=str(aclimdb_tarball))
    out = capsys.readouterr().out
    assert "5 reviews" in out and "2 positive" in out and "3 negative" in out


def test_limit_on_a_local_source(aclimdb_folder):
    texts, labels = imdb.load_imdb("train", source=str(aclimdb_folder), limit=4, verbose=False)
    assert len(texts) == 4 and sorted(labels.tolist()) == [0, 0, 1, 1]


# -- download, against a local server ----------------------------------------------------------------

@pytest.fixture
def archive_server():
    """Serves the fake tarball at http://127.0.0.1:<port>/aclImdb_v1.tar.gz and counts requests."""
    payload = tarball_bytes()
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):  # keep the test output quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05),
                              daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/aclImdb_v1.tar.gz"
    yield url, hashlib.sha256(payload).hexdigest(), hits
    server.shutdown()
    server.server_close()


def test_download_checks_the_sha256_and_caches(tmp_path, archive_server):
    url, sha256, hits = archive_server
    cache = tmp_path / "cache"
    path = imdb.download_imdb(str(cache), url=url, sha256=sha256)
    assert path == cache / "aclImdb_v1.tar.gz" and imdb.file_sha256(path) == sha256
    assert len(hits) == 1
    again = imdb.download_imdb(str(cache), url=url, sha256=sha256)
    assert again == path and len(hits) == 1  # served from the cache
    assert sorted(p.name for p in cache.iterdir()) == ["aclImdb_v1.tar.gz"]
    texts, labels = imdb.load_imdb("test", source=str(path), verbose=False)
    assert Counter(zip(texts, labels.tolist())) == expected("test")


def test_download_with_the_wrong_sha256_raises_and_leaves_nothing(tmp_path, archive_server):
    url, sha256, hits = archive_server
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="checksum mismatch"):
        imdb.download_imdb(str(cache), url=url, sha256="0" * 64)
    assert len(hits) == 1
    assert list(cache.iterdir()) == []


def test_a_cached_file_with_the_wrong_checksum_is_downloaded_again(tmp_path, archive_server):
    url, sha256, hits = archive_server
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "aclImdb_v1.tar.gz").write_bytes(b"truncated")
    path = imdb.download_imdb(str(cache), url=url, sha256=sha256)
    assert imdb.file_sha256(path) == sha256 and len(hits) == 1


# -- synthetic -------------------------------------------------------------------------------------

def test_synthetic_reviews_are_deterministic_balanced_and_long_tailed():
    texts, labels = imdb.synthetic_reviews(2000, seed=3)
    again, again_labels = imdb.synthetic_reviews(2000, seed=3)
    other, _ = imdb.synthetic_reviews(2000, seed=4)
    assert texts == again and np.array_equal(labels, again_labels)
    assert texts != other
    assert labels.sum() == 1000  # both classes, balanced
    words = np.array([len(t.split()) for t in texts])
    median = np.median(words)
    assert words.mean() > median  # skewed to the right
    assert np.percentile(words, 99) > 3 * median  # a long tail
    assert words.min() >= 4


def test_synthetic_reviews_carry_a_learnable_signal():
    texts, labels = imdb.synthetic_reviews(400, seed=0)
    positive = set(imdb._POSITIVE)
    share = [np.mean([w.strip(".") in positive for w in t.split()]) for t in texts]
    share = np.array(share)
    assert share[labels == 1].mean() > 2 * share[labels == 0].mean()


def test_load_imdb_synthetic_with_limit():
    texts, labels = imdb.load_imdb("train", source="synthetic", limit=101, seed=5, verbose=False)
    assert len(texts) == len(labels) == 101
    assert labels.sum() == 51  # the odd one positive
    test, _ = imdb.load_imdb("test", source="synthetic", limit=101, seed=5, verbose=False)
    assert not set(test) & set(texts)  # the test split is other reviews


@pytest.mark.parametrize("limit", [2, 3, 50, 999])
def test_balanced_subset_keeps_both_classes_and_the_exact_size(limit):
    _, labels = imdb.synthetic_reviews(1000, seed=1)
    texts = [f"review {i}" for i in range(1000)]
    sub_texts, sub_labels = imdb.balanced_subset(texts, labels, limit, seed=2)
    assert len(sub_texts) == len(sub_labels) == limit
    assert len(set(sub_texts)) == limit  # no review twice
    assert set(sub_labels.tolist()) == {0, 1}
    assert abs(2 * int(sub_labels.sum()) - limit) <= 1
    lookup = dict(zip(texts, labels.tolist()))
    assert all(lookup[t] == y for t, y in zip(sub_texts, sub_labels.tolist()))


def test_balanced_subset_of_a_lopsided_set_still_has_the_exact_size():
    texts = [f"t{i}" for i in range(10)]
    labels = np.array([1] * 8 + [0] * 2)
    _, sub = imdb.balanced_subset(texts, labels, 9)
    assert len(sub) == 9 and set(sub.tolist()) == {0, 1}


# -- auto ------------------------------------------------------------------------------------------

def test_auto_says_what_it_tried_when_nothing_works(monkeypatch, tmp_path):
    def no_tfds(split):
        raise ImportError("No module named 'tensorflow_datasets'")

    def no_network(cache_dir, *args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(imdb, "_load_tfds", no_tfds)
    monkeypatch.setattr(imdb, "download_imdb", no_network)
    with pytest.raises(RuntimeError, match="could not load IMDB") as info:
        imdb.load_imdb("train", source="auto", cache_dir=str(tmp_path))
    message = str(info.value)
    assert "tfds: ImportError" in message and "tensorflow_datasets" in message
    assert "download: OSError" in message and "network unreachable" in message
    assert "SMART_BATCHING_DATA" in message  # and what to do about it


def test_auto_falls_back_to_the_download(monkeypatch, tmp_path):
    archive = tmp_path / "aclImdb_v1.tar.gz"
    archive.write_bytes(tarball_bytes())

    def no_tfds(split):
        raise ImportError("No module named 'tensorflow_datasets'")

    monkeypatch.setattr(imdb, "_load_tfds", no_tfds)
    monkeypatch.setattr(imdb, "download_imdb", lambda cache_dir, *a, **k: archive)
    texts, labels = imdb.load_imdb("test", source="auto", verbose=False)
    assert Counter(zip(texts, labels.tolist())) == expected("test")
