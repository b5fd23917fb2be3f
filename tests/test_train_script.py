"""train.py for real: two processes under torchrun (gloo, CPU, the tiny profile) train on a CSV of
their own through the Trainer, on their shares of the smart batches; they end with the same
weights, gather predictions that a single-process evaluation of the saved model reproduces, save
the label names with the model, and leave together; killed after its first checkpoint, a run
resumes to the very weights and predictions of a run never killed. One process without torchrun
(IMDB in the aclImdb layout), accelerate launch, and options named when they are wrong.

The data: small files written here (120 training, 40 validation, 40 test rows), read in a moment.
The runs' processes read a sitecustomize.py written here (first on their PYTHONPATH), which can
make rank 0's final save slow and record when each process exits, or hold every process after
its first checkpoint so that the test can kill the run at a known point.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import helpers
from support.data_files import read_table
from support.imdb import synthetic_reviews

import train

REPO = Path(helpers.__file__).resolve().parent

N_TRAIN, N_VALIDATION, N_TEST, EPOCHS, SAVE_STEPS = 120, 40, 40, 2, 3
NAMES = ["negative", "positive"]
SLOW_SAVE_SECONDS = 4

pytestmark = pytest.mark.skipif(not torch.distributed.is_available()
                                or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend")

SITECUSTOMIZE = textwrap.dedent('''
    """Test hooks for train.py's processes (tests/test_train_script.py); inert without RANK."""
    import atexit, os, time
    from pathlib import Path

    RANK, RECORD = os.environ.get("RANK"), os.environ.get("TRAIN_TEST_RECORD")
    if RANK is not None and RECORD:
        RECORD = Path(RECORD)
        (RECORD / f"pid{RANK}").write_text(str(os.getpid()))
        # Registered first, so it runs last: the process is leaving. Did rank 0 finish saving?
        atexit.register(lambda: (RECORD / f"left{RANK}").write_text(str((RECORD / "saved").exists())))
        import transformers

        if os.environ.get("SLOW_FINAL_SAVE") and RANK == "0":
            save = transformers.PreTrainedModel.save_pretrained

            def slow_save(self, folder, *args, **kwargs):
                saved = save(self, folder, *args, **kwargs)
                if Path(folder).name == "model":  # train.py's final save, not a checkpoint
                    time.sleep(float(os.environ["SLOW_FINAL_SAVE"]))
                    (RECORD / "saved").write_text("")
                return saved

            transformers.PreTrainedModel.save_pretrained = slow_save
        if os.environ.get("HOLD_AFTER_CHECKPOINT"):
            checkpoint = transformers.Trainer._save_checkpoint

            def hold(self, *args, **kwargs):
                checkpoint(self, *args, **kwargs)
                (RECORD / f"checkpoint{RANK}").write_text("")
                time.sleep(600)  # until the test kills the run

            transformers.Trainer._save_checkpoint = hold
''')


def write_csv(path: Path, n: int, seed: int, labels: bool = True) -> Path:
    texts, ids = synthetic_reviews(n, seed=seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"] if labels else ["text"])
        for text, label in zip(texts, ids):
            writer.writerow([text, NAMES[label]] if labels else [text])
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("csv")
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return dict(train=write_csv(root / "train.csv", N_TRAIN, 1),
                validation=write_csv(root / "validation.csv", N_VALIDATION, 2),
                test=write_csv(root / "test.csv", N_TEST, 3), site=root / "site")


def env(site: Path | None = None, **hooks) -> dict:
    extra = dict(OMP_NUM_THREADS="1", SMART_BATCHING_PROFILE="tiny", HF_HUB_OFFLINE="1",
                 TOKENIZERS_PARALLELISM="false",
                 PYTHONPATH=os.pathsep.join(map(str, filter(None, [site, REPO]))), **hooks)
    if Path("/sys/class/net/lo").exists():
        extra["GLOO_SOCKET_IFNAME"] = "lo"  # stay on the loopback interface
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SMART_BATCHING_MODEL")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def run(launcher: list[str], *options, timeout=240, environment=None) -> subprocess.CompletedProcess:
    return subprocess.run([*launcher, str(REPO / "train.py"), *map(str, options)],
                          env=environment or env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def on_files(files, out, *more):
    return ["--train_file", files["train"], "--validation_file", files["validation"], "--test_file",
            files["test"], "--num_train_epochs", EPOCHS, "--save_steps", SAVE_STEPS, "--save_batches",
            "--disable_tqdm", "true", "--output_dir", out, *more]


def outcome(done) -> str:
    return done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def two_processes(files, tmp_path_factory) -> dict:
    """The reference run; rank 0's final save made slow, each process's exit recorded."""
    out, record = tmp_path_factory.mktemp("torchrun"), tmp_path_factory.mktemp("record")
    done = run(TORCHRUN, *on_files(files, out), environment=env(
        files["site"], TRAIN_TEST_RECORD=str(record), SLOW_FINAL_SAVE=str(SLOW_SAVE_SECONDS)))
    assert done.returncode == 0, outcome(done)
    return dict(out=out, record=record, done=done, results=json.loads((out / "results.json").read_text()))


@pytest.fixture(scope="module")
def train_lengths(files):
    tokenizer = helpers.load_tokenizer(helpers.get_settings("tiny"))
    table = read_table(files["train"], "text", "label")
    return helpers.sequence_lengths(train.as_dataset(table, tokenizer, 128, None))


def test_every_training_example_once_per_epoch_across_the_processes(two_processes, train_lengths):
    used = [json.loads((two_processes["out"] / "batches" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(used[0]) == len(used[1]) == EPOCHS
    for epoch in range(EPOCHS):
        assert len(used[0][epoch]) == len(used[1][epoch]) == 4, "8 batches of 16 in 120 rows, split in two"
        seen = sorted(i for rank in used for batch in rank[epoch] for i in batch)
        assert seen == list(range(N_TRAIN)), f"epoch {epoch}: not every row exactly once"
        for rank in (0, 1):  # what the loop received is the sampler's share for that rank
            sampler = helpers.SmartBatchSampler(train_lengths, 16, seed=321, num_replicas=2, rank=rank)
            sampler.set_epoch(epoch)
            assert used[rank][epoch] == [list(map(int, b)) for b in sampler]
    assert used[0][0] != used[0][1], "the second epoch repeated the first one's batches"


def test_both_processes_end_with_the_weights_rank_0_saved_and_its_label_names(two_processes):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    results, out = two_processes["results"], two_processes["out"]
    assert results["world_size"] == 2 and results["backend"] == "gloo"
    assert results["steps"] == 8 and results["label_names"] == NAMES
    rank0, rank1 = results["weights_sha256"]
    assert rank0 == rank1 and results["weights_identical"]
    assert train.weights_fingerprint(AutoModelForSequenceClassification.from_pretrained(out / "model")) == rank0
    config = AutoConfig.from_pretrained(out / "model")
    assert config.id2label == dict(enumerate(NAMES)) and config.label2id == {"negative": 0, "positive": 1}
    assert 0 <= results["validation"]["eval_accuracy"] <= 1


def test_gathered_predictions_equal_a_single_process_evaluation(two_processes, files):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    results, out = two_processes["results"]["test"], two_processes["out"] / "model"
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    table = read_table(files["test"], "text", "label")
    dataset = helpers.TokenizedDataset(helpers.tokenize_without_padding(table.texts, tokenizer, 128, verbose=False),
                                       [NAMES.index(label) for label in table.labels])
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=helpers.SmartBatchSampler(dataset.lengths, 16, shuffle=False),
        collate_fn=helpers.PadCollator(tokenizer.pad_token_id))
    single = helpers.evaluate(model, loader, torch.device("cpu"), verbose=False)
    assert results["rows"] == N_TEST
    assert results["predictions"] == single["predictions"].tolist()  # in the file's order
    np.testing.assert_allclose(results["logits"], single["logits"].numpy(), atol=1e-5)
    assert results["accuracy"] == pytest.approx(single["accuracy"])
    assert results["predicted_labels"] == [NAMES[i] for i in results["predictions"]]
    said = pipeline("text-classification", model=str(out), device="cpu")(table.texts[:3])
    assert [s["label"] for s in said] == results["predicted_labels"][:3]  # the names, not LABEL_0


def test_every_process_leaves_only_after_rank_0_has_saved(two_processes):
    """Rank 0's final save is made slow: a process that does not wait for its peers exits (and
    tears the process group down) while rank 0 still saves, which can abort it."""
    record, done = two_processes["record"], two_processes["done"]
    for rank in (0, 1):
        assert f"train.py: process {rank} done" in done.stdout
        assert (record / f"left{rank}").read_text() == "True", f"rank {rank} left before rank 0 had saved"


def test_a_run_killed_after_its_first_checkpoint_resumes_to_the_same_end(two_processes, files, tmp_path):
    """SIGKILL to every process of the run once each has written its first checkpoint; resumed,
    it ends with the weights and test predictions of the run never killed, bit for bit (CPU,
    the same batches: the Trainer skips the ones done and restores every RNG)."""
    out, record = tmp_path / "run", tmp_path / "record"
    record.mkdir()
    killed = subprocess.Popen([*TORCHRUN, str(REPO / "train.py"), *map(str, on_files(files, out))],
                              env=env(files["site"], TRAIN_TEST_RECORD=str(record), HOLD_AFTER_CHECKPOINT="1"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                              start_new_session=True)
    deadline = time.monotonic() + 240
    while not all((record / f"checkpoint{rank}").exists() for rank in (0, 1)):
        assert killed.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)  # the launcher, then each worker (each in its own session)
    for rank in (0, 1):
        os.killpg(int((record / f"pid{rank}").read_text()), signal.SIGKILL)
    killed.wait(timeout=60)
    assert sorted(p.name for p in out.iterdir()) == [f"checkpoint-{SAVE_STEPS}"]
    resumed = run(TORCHRUN, *on_files(files, out, "--resume_from_checkpoint", out / f"checkpoint-{SAVE_STEPS}"))
    assert resumed.returncode == 0, outcome(resumed)
    results, reference = json.loads((out / "results.json").read_text()), two_processes["results"]
    assert results["steps"] == reference["steps"]
    assert results["weights_sha256"] == reference["weights_sha256"]
    assert results["test"]["logits"] == reference["test"]["logits"]
    assert results["test"]["predictions"] == reference["test"]["predictions"]


@pytest.fixture(scope="module")
def imdb_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imdb")
    for split, n, seed in (("train", 120, 1), ("test", 80, 2)):
        texts, labels = synthetic_reviews(n, seed=seed)
        for i, (text, label) in enumerate(zip(texts, labels)):
            folder = root / "aclImdb" / split / ("pos" if label else "neg")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}_{8 if label else 2}.txt").write_text(text, encoding="utf-8")
    return root


def on_imdb(imdb_folder, out, *more):
    return ["--profile", "tiny", "--data", imdb_folder, "--train-size", "all", "--test-size", "all",
            "--num_train_epochs", 1, "--disable_tqdm", "true", "--output_dir", out, *more]


def test_one_process_runs_imdb_without_torchrun_and_saves(imdb_folder, tmp_path):
    done = run([sys.executable], *on_imdb(imdb_folder, tmp_path, "--max_tokens", "auto"))
    assert done.returncode == 0, outcome(done)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["world_size"] == 1 and results["backend"] is None and results["max_tokens"] >= 128
    assert results["label_names"] == ["neg", "pos"] and len(results["test"]["predictions"]) == 80
    assert (tmp_path / "model" / "config.json").exists()


def test_accelerate_launch_runs_it_on_two_processes(imdb_folder, tmp_path):
    """`accelerate launch --multi_gpu` starts train.py through torchrun: the same processes, the
    same environment (on a machine without a GPU, gloo)."""
    pytest.importorskip("accelerate")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(free_port())]
    done = run(launcher, *on_imdb(imdb_folder, tmp_path, "--save_batches"))
    assert done.returncode == 0, outcome(done)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["world_size"] == 2 and results["weights_identical"]
    used = [json.loads((tmp_path / "batches" / f"rank{rank}.json").read_text())[0] for rank in (0, 1)]
    assert sorted(i for rank in used for batch in rank for i in batch) == list(range(120))


def test_an_impossible_set_up_stops_every_process_before_training(imdb_folder, tmp_path):
    # 16 reviews of batch 16: one batch an epoch, for two processes
    done = run(TORCHRUN, *on_imdb(imdb_folder, tmp_path, "--train-size", 16,
                                  "--per_device_train_batch_size", 16), timeout=180)
    assert done.returncode != 0
    message = "argument --per_device_train_batch_size: 16 training texts make 1 batch an epoch"
    assert message in done.stderr and done.stderr.count(message) == 1  # rank 0 says it, once
    assert "train_runtime" not in done.stdout and not (tmp_path / "results.json").exists()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# Options, in this process: nothing trains.
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, named", [
    (["--num_train_epochs", "0"], "--num_train_epochs"), (["--num_train_epochs", "1.5"], "--num_train_epochs"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size"),
    (["--per_device_train_batch_size", "many"], "--per_device_train_batch_size"),
    (["--train-size", "0"], "--train-size"), (["--max_tokens", "0"], "--max_tokens"),
    (["--learning_rate", "0"], "--learning_rate"), (["--learning_rate", "nan"], "--learning_rate"),
    (["--profile", "huge"], "--profile"), (["--data", "nowhere"], "--data"),
    (["--max-len", "1"], "--max-len"), (["--seed", "-1"], "--seed"),
    (["--profile", "tiny", "--model", "bert-base-uncased"], "--profile"),
    (["--train_file", "a.csv", "--train-size", "10"], "--train-size"),
    (["--test_file", "a.csv"], "--train_file"),
    (["--max_tokens", "4000", "--per_device_train_batch_size", "8"], "--per_device_train_batch_size"),
])
def test_a_bad_value_stops_with_a_message_naming_its_option(options, named, capsys):
    with pytest.raises(SystemExit) as stop:
        train.parse_args(options)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {named}:" in err or f"argument {named}/" in err, err


def test_an_option_not_given_keeps_the_profile_and_one_given_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("SMART_BATCHING_EPOCHS", "2")
    args, _, settings = train.parse_args(["--output_dir", str(tmp_path)])
    assert (settings.profile, args.learning_rate, args.num_train_epochs) == ("tiny", 2e-3, 2)
    assert (args.per_device_train_batch_size, args.seed, args.warmup_steps) == (16, 321, 15)
    args, _, settings = train.parse_args(["--output_dir", str(tmp_path), "--learning-rate", "1e-3",
                                          "--seed=7", "--num_train_epochs", "3"])
    assert (args.learning_rate, settings.learning_rate, args.seed, settings.epochs) == (1e-3, 1e-3, 7, 3)


def test_a_model_named_on_the_command_line_trains_with_the_recipe_not_the_tiny_profile(tmp_path, monkeypatch):
    args, _, settings = train.parse_args(["--model", "bert-base-uncased", "--output_dir", str(tmp_path)])
    assert settings.profile == "full" and settings.model_name == "bert-base-uncased"
    assert (args.learning_rate, settings.max_len, args.warmup_steps) == (5e-5, 400, 0)
    args, _, _ = train.parse_args(["--model", "bert-base-uncased", "--learning_rate", "3e-5",
                                   "--output_dir", str(tmp_path)])
    assert args.learning_rate == 3e-5
    monkeypatch.setenv("SMART_BATCHING_MODEL", "bert-base-uncased")  # named in the environment
    args, _, settings = train.parse_args(["--output_dir", str(tmp_path)])
    assert settings.profile == "full" and args.learning_rate == 5e-5


def test_an_output_folder_that_holds_a_run_is_not_overwritten(files, tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}")
    options = ["--train_file", str(files["train"]), "--output_dir", str(tmp_path)]
    assert train.main(options) == 2
    assert f"argument --output_dir: {tmp_path} already holds a run (results.json)" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_text() == "{}"


def test_a_budget_below_the_longest_text_names_max_tokens():
    lengths = np.random.default_rng(0).integers(5, 129, 120)
    settings = helpers.get_settings("tiny")
    options = train.ScriptOptions(max_tokens="100")
    with pytest.raises(train.SetupError) as error:
        train.check_setup(options, settings, lengths, world_size=1)
    assert error.value.args[0] == "--max_tokens" and "longest text" in error.value.args[1]
    assert train.check_setup(train.ScriptOptions(max_tokens="auto"), settings, lengths, 1)[1] >= 128
    train.check_setup(train.ScriptOptions(), settings, lengths, world_size=8)  # 120 texts: 8 batches
    with pytest.raises(train.SetupError, match="fewer than the 9 processes"):
        train.check_setup(train.ScriptOptions(), settings, lengths, world_size=9)


def test_sentence_pairs_with_a_regression_label_train_and_predict(tmp_path):
    """JSON lines of two texts and a number: token_type_ids reach the model, the labels stay
    floats (one output, mean squared error), and the predictions are numbers in the file's order;
    into a folder that holds a run, since --overwrite_output_dir asks for it."""
    texts, _ = synthetic_reviews(60, seed=4)
    rows = [dict(premise=text, hypothesis=texts[-i - 1], score=round(i / 59, 3)) for i, text in enumerate(texts)]
    for name, part in (("train", rows[:40]), ("test", rows[40:])):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(row) for row in part))
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")  # an earlier run's, trained over as asked
    assert train.main(["--train_file", str(tmp_path / "train.jsonl"), "--test_file", str(tmp_path / "test.jsonl"),
                       "--text_column", "premise", "--text_pair_column", "hypothesis", "--label_column", "score",
                       "--regression", "--num_train_epochs", "1", "--disable_tqdm", "true",
                       "--output_dir", str(out), "--overwrite_output_dir"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["label_names"] is None and len(results["test"]["predictions"]) == 20
    assert all(isinstance(p, float) for p in results["test"]["predictions"]) and "mse" in results["test"]
    assert json.loads((out / "model" / "config.json").read_text())["problem_type"] == "regression"
    table = read_table(tmp_path / "test.jsonl", "premise", "score", "hypothesis")
    encoded = train.as_dataset(table, helpers.load_tokenizer(helpers.get_settings("tiny")), 128, None)
    assert set(encoded[0]["token_type_ids"]) == {0, 1}  # the pair's second text marked as such
