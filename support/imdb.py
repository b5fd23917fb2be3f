"""IMDB: one loader, four sources (tfds, the official archive, a local copy, synthetic reviews).

`load_imdb(split, source, limit)` returns texts and 0/1 labels (1 = positive). Each source gives
labels 0/1 by construction (tfds' label, the archive's pos/neg folders, the generator), and the
subset keeps both classes; what the batching code needs of texts and labels in general,
helpers checks where it uses them.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tarfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# Published checksum of aclImdb_v1.tar.gz (84,125,825 bytes): a truncated or tampered download is
# caught here instead of surfacing later as a confusing tarfile error.
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
DEFAULT_CACHE_DIR = str(Path.home() / ".cache" / "smart_batching")  # where downloads go
DATA_SOURCES = ("auto", "tfds", "download", "synthetic")


SPLITS = ("train", "test")
_ACLIMDB_FILE = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")


def load_imdb(split: str = "train", source: str = "auto", limit: int | None = None, seed: int = 321,
              cache_dir: str | None = None, verbose: bool = True) -> tuple[list[str], np.ndarray]:
    """Texts and 0/1 labels (1 = positive) of an IMDB split.

    source: "tfds" (tensorflow_datasets, as the recipe), "download" (the official archive, cached,
    sha256-checked), a path to an aclImdb folder or .tar.gz, "synthetic" (generated, offline), or
    "auto": the first of tfds / a cached download / download that works, saying which it used.
    limit: a random subset of that many reviews, half of each class (seeded).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}")
    cache_dir = cache_dir or DEFAULT_CACHE_DIR
    if source == "auto":
        texts, labels, source = _load_auto(split, cache_dir)
    elif source == "tfds":
        texts, labels = _load_tfds(split)
    elif source == "download":
        texts, labels = _read_aclimdb(download_imdb(cache_dir), split)
    elif source == "synthetic":
        texts, labels = synthetic_reviews(25_000, seed=seed + (0 if split == "train" else 1))
    elif looks_like_path(source):
        texts, labels = _read_aclimdb(Path(source).expanduser(), split)
    else:
        raise ValueError(f"unknown data source {source!r}: use 'auto', 'tfds', 'download', "
                         "'synthetic' or a path to an aclImdb folder or .tar.gz archive")
    labels = np.asarray(labels, dtype=np.int64)  # 0 negative, 1 positive
    if limit is not None:
        texts, labels = balanced_subset(texts, labels, limit, seed)
    if verbose:
        print(f"IMDB {split}: {len(texts):,} reviews from {source} "
              f"({int(labels.sum()):,} positive, {int(len(labels) - labels.sum()):,} negative)")
    return texts, labels


def looks_like_path(source: str) -> bool:
    """Whether a data source names a file or folder rather than one of DATA_SOURCES."""
    return os.sep in source or source.endswith((".tar.gz", ".tgz")) or os.path.exists(source)


def _load_auto(split, cache_dir):
    errors = []
    for source in ("tfds", "download"):
        try:
            if source == "tfds":
                return (*_load_tfds(split), "tfds")
            return (*_read_aclimdb(download_imdb(cache_dir), split), "download")
        except Exception as error:  # noqa: BLE001 - we report every failure below
            errors.append(f"{source}: {type(error).__name__}: {error}")
    raise RuntimeError("could not load IMDB from any source:\n  " + "\n  ".join(errors) +
                       "\nOffline? In the settings cell pass profile=\"tiny\", or data_source= a local "
                       "aclImdb folder or aclImdb_v1.tar.gz (headless: SMART_BATCHING_PROFILE / "
                       "SMART_BATCHING_DATA).")


def _load_tfds(split):
    import tensorflow_datasets as tfds  # Colab has it; elsewhere this ImportError is reported
    import tensorflow as tf

    # TensorFlow only reads the data here, but when it starts it reserves nearly all the memory of
    # every GPU it sees, which leaves PyTorch little to train with on the same GPU. So hide the
    # GPUs from TensorFlow before tfds.load starts it. If TensorFlow is already running
    # with a GPU (something earlier in this process used it), the list can't change any more
    # (RuntimeError): load anyway, since the data is the same either way.
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass
    dataset = tfds.load("imdb_reviews/plain_text", split=split, as_supervised=True)
    texts, labels = [], []
    for text, label in tfds.as_numpy(dataset):
        texts.append(text.decode("utf-8"))
        labels.append(int(label))
    return texts, labels


def balanced_subset(texts, labels, limit: int, seed: int = 321):
    """`limit` reviews chosen at random, half from each class (the extra one, if odd, positive)."""
    labels = np.asarray(labels)
    if limit < 2:
        raise ValueError(f"limit must be at least 2 to keep both classes, got {limit}")
    if limit > len(texts):
        raise ValueError(f"limit {limit:,} is more than the {len(texts):,} reviews available")
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    n_pos = (limit + 1) // 2
    n_pos = min(max(n_pos, limit - len(neg)), len(pos))
    if n_pos in (0, limit):
        raise ValueError(f"cannot keep both classes: the data has {len(pos):,} positive and "
                         f"{len(neg):,} negative reviews")
    chosen = np.concatenate([rng.choice(pos, n_pos, replace=False),
                             rng.choice(neg, limit - n_pos, replace=False)])
    rng.shuffle(chosen)
    return [texts[i] for i in chosen], labels[chosen]


def download_imdb(cache_dir: str, url: str = IMDB_URL, sha256: str = IMDB_SHA256,
                  filename: str = "aclImdb_v1.tar.gz") -> Path:
    """The official archive in `cache_dir`, downloaded once with a progress bar and sha256-checked."""
    target = Path(cache_dir).expanduser() / filename
    if target.exists():
        if file_sha256(target) == sha256:
            return target
        print(f"{target} has the wrong checksum; downloading it again")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {filename}") as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    actual = file_sha256(partial)
    if actual != sha256:
        partial.unlink()
        raise ValueError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}; "
                         "the download is corrupt or not the official archive")
    partial.replace(target)
    return target


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_aclimdb(path: Path, split: str):
    """Reviews of one split from an aclImdb folder or a .tar.gz in that layout, in file-id order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no aclImdb folder or archive at {path}")
    rows = []  # (label, id, text)
    if path.is_dir():
        root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
        for label_name, label in (("neg", 0), ("pos", 1)):
            for file in (root / split / label_name).glob("*.txt"):
                match = re.fullmatch(r"(\d+)_(\d+)\.txt", file.name)
                if match:
                    rows.append((label, int(match[1]), file.read_text(encoding="utf-8")))
    else:
        try:
            # Stream the archive member by member: no extraction to disk, one pass.
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    match = _ACLIMDB_FILE.search(member.name)
                    if member.isfile() and match and match[1] == split:
                        text = archive.extractfile(member).read().decode("utf-8")
                        rows.append((int(match[2] == "pos"), int(match[3]), text))
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            raise ValueError(f"{path} is not a readable aclImdb archive ({type(error).__name__}: "
                             f"{error}); delete it and download it again") from error
    if not rows:
        raise FileNotFoundError(f"no reviews for split {split!r} in {path}: expected files like "
                                f"aclImdb/{split}/pos/<id>_<rating>.txt")
    rows.sort(key=lambda row: (row[0], row[1]))
    # Interleave the classes reproducibly, as tfds does, so that the first reviews a reader
    # looks at are not all negative.
    order = np.random.default_rng(0).permutation(len(rows))
    return [rows[i][2] for i in order], [rows[i][0] for i in order]


# -- synthetic reviews: IMDB-like lengths, a learnable label, no network -----------------------

_NEUTRAL = ("the movie film story plot actor actress director scene scenes character characters "
            "cast script camera music score ending beginning time one two first last really just "
            "this that it was is were a an of in on to and but with as for by at about from "
            "watch watched watching saw see seen think thought people audience everyone nothing "
            "something little much more most some very also even still again never ever").split()
_POSITIVE = ("great excellent wonderful brilliant superb moving beautiful funny charming "
             "masterpiece delightful touching enjoyable perfect loved memorable gripping").split()
_NEGATIVE = ("terrible awful boring dull bad worst waste poor stupid horrible mess "
             "disappointing weak pointless annoying forgettable tedious").split()


def synthetic_reviews(n: int, seed: int = 0, median_words: float = 60.0,
                      sentiment_rate: float = 0.12) -> tuple[list[str], np.ndarray]:
    """`n` movie-review-like texts and balanced 0/1 labels, deterministic by seed.

    Word counts are log-normal with a long right tail (a few words to several hundred), shaped like
    IMDB's but about 3x shorter, so that the tiny profile's max_len of 128 cuts a share of them
    like the share max_len 400 cuts on IMDB, and batching behaves as on real reviews. About
    `sentiment_rate` of the words are sentiment words, 85 % of them matching the label: a signal
    a small model learns within an epoch or two.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    n_words = np.clip(rng.lognormal(math.log(median_words), 0.75, n), 4, 1000).astype(int)
    # dtype=object: a fixed-width str array would cut longer sentiment words to the neutral
    # words' width ("masterpiece" -> "masterpiec").
    neutral, positive, negative = (np.array(w, dtype=object) for w in (_NEUTRAL, _POSITIVE, _NEGATIVE))
    texts = []
    for label, count in zip(labels, n_words):
        words = neutral[rng.integers(0, len(neutral), count)]
        is_sentiment = rng.random(count) < sentiment_rate
        agrees = rng.random(count) < 0.85
        use_positive = is_sentiment & (agrees == bool(label))
        use_negative = is_sentiment & ~use_positive
        words[use_positive] = positive[rng.integers(0, len(positive), use_positive.sum())]
        words[use_negative] = negative[rng.integers(0, len(negative), use_negative.sum())]
        texts.append(" ".join(words) + ".")
    return texts, labels
