"""load_imdb's tfds source, the recipe's own, and the `auto` chain that tries it first, through
TensorFlow Datasets' own mock (tfds.testing.mock_data): texts, labels, what it reports, subsets,
the fall-back to the download, and TensorFlow kept off the GPU.

Importing TensorFlow takes seconds and hundreds of MB, so these tests run in a process of their
own: in the main test run this module holds one test, which runs this module again in a fresh
`python -m pytest` with SMART_BATCHING_TFDS_PROCESS=1, where the tests themselves are defined. The
rest of the suite never imports TensorFlow. `python -m pytest tests/test_tfds_source.py` runs them
the same way.
"""
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from support import imdb

ROOT = Path(__file__).resolve().parent.parent
OWN_PROCESS = "SMART_BATCHING_TFDS_PROCESS"

if os.environ.get(OWN_PROCESS) != "1":

    def tfds_import_error() -> str | None:
        """None where TensorFlow Datasets imports, else its error's last line. (With the versions in
        Colab's published package list, tensorflow-metadata's protos need a newer protobuf than the
        list's, and tfds does not import: CI's Colab leg meets that.)"""
        probe = subprocess.run([sys.executable, "-c", "import tensorflow_datasets.public_api"],
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True,
                               text=True, timeout=300)
        lines = probe.stderr.strip().splitlines()
        return None if probe.returncode == 0 else (lines[-1] if lines else f"exit {probe.returncode}")

    def test_the_tfds_tests_pass_in_a_process_of_their_own():
        reason = tfds_import_error()
        if reason:  # then what a reader meets is auto's fall-back: check that instead
            check_auto_falls_back_when_tfds_does_not_import(reason)
            return
        env = {**os.environ, OWN_PROCESS: "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"]
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        output = run.stdout + run.stderr
        summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
        assert run.returncode == 0, output[-8000:]
        # every test ran: none skipped (tensorflow_datasets missing: pip install -r requirements.txt)
        assert re.search(r"\b\d+ passed\b", summary) and "skipped" not in summary, output[-8000:]

    def check_auto_falls_back_when_tfds_does_not_import(reason: str) -> None:
        import warnings
        from test_data_sources import expected, tarball_bytes
        from unittest import mock

        with tempfile.TemporaryDirectory() as folder, mock.patch.object(imdb, "download_imdb") as download:
            archive = Path(folder) / "aclImdb_v1.tar.gz"
            archive.write_bytes(tarball_bytes())
            download.return_value = archive
            texts, labels = imdb.load_imdb("test", source="auto", verbose=False)
        assert Counter(zip(texts, labels.tolist())) == expected("test") and download.called
        warnings.warn(f"tensorflow_datasets does not import here ({reason}): its tests could not run; "
                      "load_imdb's auto source fell back to the download, as checked")

else:
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from test_data_sources import tarball_bytes, expected

    # what the mocked tfds.load("imdb_reviews/plain_text", split=...) holds: (text, label 1 = positive)
    REVIEWS = {
        "train": [("A wonderful film.", 1), ("Dull, dull, dull.", 0), ("Ünïcödé <br />survives ❤", 1),
                  ("Awful.", 0), ("Loved it.", 1), ("Weak plot.", 0), ("Superb cast.", 1),
                  ("Boring.", 0)],
        "test": [("Brilliant.", 1), ("Tedious.", 0), ("Fine film, fine cast.", 1)],
    }

    @pytest.fixture
    def imdb_mock():
        """tfds.load gives REVIEWS[split] as tfds does: a tf.data.Dataset of UTF-8 bytes and int64."""
        def as_dataset(builder, split, **kwargs):
            assert builder.name == "imdb_reviews"
            texts, labels = zip(*REVIEWS[split])
            return tf.data.Dataset.from_tensor_slices(
                {"text": [t.encode("utf-8") for t in texts], "label": np.array(labels, np.int64)})

        with tfds.testing.mock_data(as_dataset_fn=as_dataset):
            yield

    @pytest.mark.parametrize("split", ["train", "test"])
    def test_tfds_gives_the_texts_and_labels_decoded(imdb_mock, split):
        texts, labels = imdb.load_imdb(split, source="tfds", verbose=False)
        assert all(type(t) is str for t in texts)  # bytes decoded, non-ASCII included
        assert texts == [t for t, _ in REVIEWS[split]]
        assert labels.dtype == np.int64 and labels.tolist() == [y for _, y in REVIEWS[split]]

    def test_tfds_reports_each_splits_size_and_classes(imdb_mock, capsys):
        imdb.load_imdb("train", source="tfds")
        imdb.load_imdb("test", source="tfds")
        out = capsys.readouterr().out
        assert "IMDB train: 8 reviews from tfds (4 positive, 4 negative)" in out
        assert "IMDB test: 3 reviews from tfds (2 positive, 1 negative)" in out

    def test_tfds_with_its_random_mock_examples(capsys):
        with tfds.testing.mock_data(num_examples=7):
            texts, labels = imdb.load_imdb("train", source="tfds")
        assert len(texts) == len(labels) == 7 and all(type(t) is str for t in texts)
        assert set(labels.tolist()) <= {0, 1}
        assert f"7 reviews from tfds ({labels.sum()} positive, {7 - labels.sum()} negative)" in \
            capsys.readouterr().out

    @pytest.mark.parametrize("limit", [4, 5])
    def test_tfds_with_a_limit_gives_a_balanced_seeded_subset(imdb_mock, limit):
        texts, labels = imdb.load_imdb("train", source="tfds", limit=limit, seed=3, verbose=False)
        assert len(texts) == len(set(texts)) == limit
        assert abs(2 * int(labels.sum()) - limit) <= 1 and set(labels.tolist()) == {0, 1}
        assert set(zip(texts, labels.tolist())) <= set(REVIEWS["train"])
        again = imdb.load_imdb("train", source="tfds", limit=limit, seed=3, verbose=False)
        assert again[0] == texts and np.array_equal(again[1], labels)

    def test_auto_takes_tfds_first(imdb_mock, monkeypatch, capsys):
        def no_download(*args, **kwargs):
            raise AssertionError("auto downloaded although tfds works")

        monkeypatch.setattr(imdb, "download_imdb", no_download)
        texts, labels = imdb.load_imdb("test", source="auto", limit=2, seed=0)
        assert "IMDB test: 2 reviews from tfds (1 positive, 1 negative)" in capsys.readouterr().out
        assert set(zip(texts, labels.tolist())) <= set(REVIEWS["test"])
        # The trip-wire is live: with tfds failing, auto reaches it (and reports what it raised).
        monkeypatch.setattr(tfds, "load", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
        with pytest.raises(RuntimeError, match="auto downloaded although tfds works"):
            imdb.load_imdb("test", source="auto")

    def test_auto_falls_back_to_the_download_when_tfds_fails(imdb_mock, monkeypatch, tmp_path,
                                                             capsys):
        def offline(*args, **kwargs):  # what tfds.load raises here after its retries, offline
            raise ConnectionError("Failed to resolve 'ai.stanford.edu'")

        archive = tmp_path / "aclImdb_v1.tar.gz"
        archive.write_bytes(tarball_bytes())
        monkeypatch.setattr(tfds, "load", offline)
        monkeypatch.setattr(imdb, "download_imdb", lambda cache_dir, *a, **k: archive)
        texts, labels = imdb.load_imdb("test", source="auto")
        assert Counter(zip(texts, labels.tolist())) == expected("test")
        assert "reviews from download" in capsys.readouterr().out

    def test_tfds_hides_the_gpus_from_tensorflow_before_loading(imdb_mock, monkeypatch):
        calls = []
        hide, load = tf.config.set_visible_devices, tfds.load

        def recording_hide(devices, device_type=None):
            calls.append(("set_visible_devices", devices, device_type))
            return hide(devices, device_type)

        def recording_load(*args, **kwargs):
            calls.append(("load",))
            return load(*args, **kwargs)

        monkeypatch.setattr(tf.config, "set_visible_devices", recording_hide)
        monkeypatch.setattr(tfds, "load", recording_load)
        texts, _ = imdb.load_imdb("train", source="tfds", verbose=False)
        assert len(texts) == len(REVIEWS["train"])
        assert calls == [("set_visible_devices", [], "GPU"), ("load",)]
        assert tf.config.get_visible_devices("GPU") == []

    def test_tfds_still_loads_when_tensorflow_already_holds_a_gpu(imdb_mock, monkeypatch):
        def too_late(devices, device_type=None):  # what TensorFlow raises once it is initialised
            raise RuntimeError("Visible devices cannot be modified after being initialized")

        monkeypatch.setattr(tf.config, "set_visible_devices", too_late)
        texts, labels = imdb.load_imdb("test", source="tfds", verbose=False)
        assert texts == [t for t, _ in REVIEWS["test"]] and len(labels) == 3
