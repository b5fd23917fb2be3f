"""train.py for real: two processes under torchrun (gloo, CPU, the tiny profile) train on their
shares of the smart batches, end with the same weights and gather predictions that a
single-process evaluation of the saved model reproduces; bad options stop before training.

The data is a small aclImdb folder written here (train.py's --data takes one): 120 + 80 generated
reviews, read in a moment, where the synthetic source would generate 25,000 per split.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import helpers
from support.imdb import synthetic_reviews

REPO = Path(helpers.__file__).resolve().parent
sys.path.insert(0, str(REPO))
import train  # noqa: E402

N_TRAIN, N_TEST, EPOCHS = 120, 80, 2

pytestmark = pytest.mark.skipif(not torch.distributed.is_available()
                                or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend")


@pytest.fixture(scope="module")
def imdb_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imdb")
    for split, n, seed in (("train", N_TRAIN, 1), ("test", N_TEST, 2)):
        texts, labels = synthetic_reviews(n, seed=seed)
        for i, (text, label) in enumerate(zip(texts, labels)):
            folder = root / "aclImdb" / split / ("pos" if label else "neg")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}_{8 if label else 2}.txt").write_text(text, encoding="utf-8")
    return root


def env() -> dict:
    extra = dict(OMP_NUM_THREADS="1", SMART_BATCHING_PROFILE="tiny", HF_HUB_OFFLINE="1",
                 TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    if Path("/sys/class/net/lo").exists():
        extra["GLOO_SOCKET_IFNAME"] = "lo"  # stay on the loopback interface
    return {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
            **extra}


def run(launcher: list[str], *options, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([*launcher, str(REPO / "train.py"), *map(str, options)], env=env(),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def tiny(imdb_folder, out, *more):
    return ["--profile", "tiny", "--data", imdb_folder, "--train-size", "all", "--test-size", "all",
            "--epochs", EPOCHS, "--out", out, *more]


@pytest.fixture(scope="module")
def two_processes(imdb_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torchrun")
    done = run(TORCHRUN, *tiny(imdb_folder, out, "--save-batches"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def data(imdb_folder):
    settings = helpers.get_settings("tiny", data_source=str(imdb_folder), train_size=None, test_size=None)
    return helpers.prepare_data(settings, verbose=False)


def test_every_training_example_once_per_epoch_across_the_processes(two_processes, data):
    used = [json.loads((two_processes / "batches" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for epoch in map(str, range(EPOCHS)):
        assert len(used[0][epoch]) == len(used[1][epoch]), "the processes took different step counts"
        seen = sorted(i for rank in used for batch in rank[epoch] for i in batch)
        assert seen == list(range(N_TRAIN)), f"epoch {epoch}: not every review exactly once"
        for rank in (0, 1):  # what the loop received is the sampler's share for that rank
            sampler = helpers.SmartBatchSampler(data.train.lengths, 16, seed=321, num_replicas=2, rank=rank)
            sampler.set_epoch(int(epoch))
            assert used[rank][epoch] == list(sampler)
    assert used[0]["0"] != used[0]["1"], "the second epoch repeated the first one's batches"


def test_both_processes_end_with_the_weights_rank_0_saved(two_processes):
    from transformers import AutoModelForSequenceClassification

    results = json.loads((two_processes / "results.json").read_text())
    assert results["world_size"] == 2 and results["backend"] == "gloo"
    assert [e["steps_per_process"] for e in results["epochs"]] == [4, 4]  # 8 batches of 16 in 120, split
    rank0, rank1 = results["weights_sha256"]
    assert rank0 == rank1 and results["weights_identical"]
    saved = AutoModelForSequenceClassification.from_pretrained(two_processes / "model")
    assert train.weights_fingerprint(saved) == rank0


def test_gathered_predictions_equal_a_single_process_evaluation(two_processes, imdb_folder):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    results = json.loads((two_processes / "results.json").read_text())["test"]
    model = AutoModelForSequenceClassification.from_pretrained(two_processes / "model")
    tokenizer = AutoTokenizer.from_pretrained(two_processes / "model")
    texts, labels = helpers.load_imdb("test", str(imdb_folder), verbose=False)
    dataset = helpers.TokenizedDataset(helpers.tokenize_without_padding(texts, tokenizer, 128), labels)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=helpers.SmartBatchSampler(dataset.lengths, 16, shuffle=False),
        collate_fn=helpers.PadCollator(tokenizer.pad_token_id))
    single = helpers.evaluate(model, loader, torch.device("cpu"), verbose=False)
    assert results["reviews"] == N_TEST
    assert results["predictions"] == single["predictions"].tolist()  # in the dataset's order
    np.testing.assert_allclose(results["logits"], single["logits"].numpy(), atol=1e-5)
    assert results["accuracy"] == pytest.approx(single["accuracy"])


def test_an_impossible_set_up_stops_every_process_before_training(imdb_folder, tmp_path):
    # 16 reviews of batch 16: one batch an epoch, for two processes
    done = run(TORCHRUN, *tiny(imdb_folder, tmp_path, "--train-size", 16, "--batch-size", 16), timeout=180)
    assert done.returncode != 0
    assert "argument --batch-size: 16 training reviews make 1 batch an epoch" in done.stderr
    assert done.stderr.count("argument --batch-size") == 1  # rank 0 says it, once
    assert "Epoch 1" not in done.stdout and not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("options, named", [
    (["--epochs", "0"], "--epochs"), (["--batch-size", "-3"], "--batch-size"),
    (["--batch-size", "many"], "--batch-size"), (["--train-size", "0"], "--train-size"),
    (["--max-tokens", "0"], "--max-tokens"), (["--lr", "0"], "--lr"), (["--lr", "nan"], "--lr"),
    (["--profile", "huge"], "--profile"), (["--data", "nowhere"], "--data"),
    (["--max-len", "1"], "--max-len"), (["--seed", "-1"], "--seed"),
])
def test_a_bad_value_stops_with_a_message_naming_its_option(options, named, capsys):
    with pytest.raises(SystemExit) as stop:
        train.parse_args(options)
    assert stop.value.code == 2
    assert f"argument {named}:" in capsys.readouterr().err


@pytest.fixture(scope="module")
def lengths():
    rng = np.random.default_rng(0)
    return rng.integers(5, 129, 120), rng.integers(5, 129, 80)


def test_a_budget_below_the_longest_review_names_max_tokens(lengths):
    settings = helpers.get_settings("tiny")
    with pytest.raises(train.SetupError) as error:
        train.check_setup(train.parse_args(["--max-tokens", "100"]), settings, *lengths, world_size=1)
    assert error.value.args[0] == "--max-tokens" and "longest review" in error.value.args[1]


def test_more_processes_than_batches_names_the_batching_option(lengths):
    settings = helpers.get_settings("tiny")
    train.check_setup(train.parse_args([]), settings, *lengths, world_size=8)  # 120 reviews: 8 batches
    with pytest.raises(train.SetupError, match="fewer than the 9 processes") as error:
        train.check_setup(train.parse_args([]), settings, *lengths, world_size=9)
    assert error.value.args[0] == "--batch-size"
    batches = min(len(helpers.smart_batch_indices(lengths[0], None, 321 + epoch, 4000)) for epoch in (0, 1, 2))
    with pytest.raises(train.SetupError) as error:
        train.check_setup(train.parse_args(["--max-tokens", "4000"]), settings, *lengths, batches + 1)
    assert error.value.args[0] == "--max-tokens"
    assert train.check_setup(train.parse_args(["--max-tokens", "auto"]), settings, *lengths, 1)[1] >= 128


def test_one_process_runs_without_torchrun_and_saves(imdb_folder, tmp_path):
    done = run([sys.executable], *tiny(imdb_folder, tmp_path, "--epochs", 1, "--max-tokens", "auto"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["world_size"] == 1 and results["backend"] is None and results["max_tokens"] >= 128
    assert len(results["test"]["predictions"]) == N_TEST and (tmp_path / "model" / "config.json").exists()


def test_accelerate_launch_runs_it_on_two_processes(imdb_folder, tmp_path):
    """`accelerate launch --multi_gpu` starts train.py through torchrun: the same processes, the
    same environment (on a machine without a GPU, gloo). train.py uses no Accelerator, so none of
    prepare()'s pitfalls (tests/test_accelerate.py) apply."""
    pytest.importorskip("accelerate")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(train_port())]
    done = run(launcher, *tiny(imdb_folder, tmp_path, "--epochs", 1, "--save-batches"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["world_size"] == 2 and results["weights_identical"]
    used = [json.loads((tmp_path / "batches" / f"rank{rank}.json").read_text())["0"] for rank in (0, 1)]
    assert sorted(i for rank in used for batch in rank for i in batch) == list(range(N_TRAIN))


def train_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
