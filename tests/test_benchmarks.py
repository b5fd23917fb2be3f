"""The benchmark scripts keep working: run them small and check what they write, never how fast."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import batching_speed, compare_strategies, epoch, measuring, report, strategies

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"name", "label", "processed_tokens", "real_tokens", "efficiency", "train_seconds",
            "train_steps", "eval_seconds", "eval_processed_tokens", "eval_real_tokens", "accuracy",
            "peak_mem_mb", "start_mem_mb", "ratios", "sequences_per_step_mean", "sequences_per_step_max",
            "largest_batch_tokens", "distinct_widths", "train_counters", "eval_counters", "process_id"}
TRAIN_SIZE, TEST_SIZE, BATCH_SIZE, MAX_LEN = 40, 24, 8, 64
NAMES = [*compare_strategies.DEFAULT_STRATEGIES, "smart_x16"]


def script_env():
    """Only the tiny profile's environment (no other SMART_BATCHING_*), one thread per process."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SMART_BATCHING_") or k == "SMART_BATCHING_PROFILE"}
    return dict(env, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def run_script(name, *args, timeout=600):
    """Run a benchmark command line (python -m benchmarks.<name>) in a fresh interpreter."""
    completed = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *map(str, args)],
                               capture_output=True, text=True, timeout=timeout, env=script_env(), cwd=ROOT)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark")
    stdout = run_script("compare_strategies", "--quick", "--train-size", TRAIN_SIZE, "--test-size", TEST_SIZE,
                        "--batch-size", BATCH_SIZE, "--max-len", MAX_LEN, "--rounding", 16, "--seed", 5,
                        "--warmup-steps", 1, "--quiet", "--out", out)
    return json.loads((out / "results.json").read_text()), out, stdout


def by_name(results):
    return {s["name"]: s for s in results["strategies"]}


def test_quick_run_writes_json_markdown_and_charts(quick_run):
    results, out, _ = quick_run
    assert (out / "results.png").stat().st_size > 1000 and (out / "step_costs.png").stat().st_size > 1000
    text = (out / "results.md").read_text()
    assert all(s["label"] in text for s in results["strategies"])
    assert "each strategy in a fresh process of its own" in text


def test_every_strategy_ran_in_a_fresh_process_of_its_own(quick_run):
    results, _, _ = quick_run
    assert [s["name"] for s in results["strategies"]] == NAMES
    assert results["metadata"]["setup"]["fresh_processes"] is True
    processes = {s["process_id"] for s in results["strategies"]}
    assert len(processes) == len(NAMES) and os.getpid() not in processes
    for s in results["strategies"]:
        assert REQUIRED <= set(s), REQUIRED - set(s)
        assert s["train_seconds"] > 0 and s["eval_seconds"] > 0 and 0 <= s["accuracy"] <= 1
        assert s["peak_mem_mb"] >= s["start_mem_mb"] > 0  # the process's own peak, after its start
        for phase in ("train", "eval"):  # the counters span the epoch (its batch building too)
            counters = s[f"{phase}_counters"]
            assert counters["wall_seconds"] >= s[f"{phase}_seconds"] and counters["cpu_seconds"] > 0
            assert counters["page_faults"] >= 0
    assert by_name(results)["fixed"]["ratios"]["train_seconds"] == 1


def test_the_job_holds_one_initial_model_and_the_tokenized_reviews(tmp_path):
    """What every strategy's process starts from: the same weights (the new head included) and
    the same token ids, labels and [PAD] id as the parent's."""
    import helpers

    settings = helpers.get_settings("tiny", train_size=24, test_size=16, max_len=32, seed=9)
    data = helpers.prepare_data(settings, verbose=False)
    epoch.save_job(tmp_path, settings, data, max_tokens=64, device="cpu", amp=False, warmup_steps=0, verbose=False)
    loaded, train, test, pad_id, job = epoch.load_job(tmp_path)
    assert loaded.model_name == str(tmp_path / "model") and loaded.seed == 9 and loaded.max_len == 32
    assert (job["max_tokens"], job["device"], pad_id) == (64, "cpu", data.pad_id)
    for mine, theirs in ((data.train, train), (data.test, test)):
        assert theirs.input_ids == [list(ids) for ids in mine.input_ids]
        assert np.array_equal(theirs.labels, mine.labels)
    original, saved = helpers.load_model(settings).state_dict(), helpers.load_model(loaded).state_dict()
    assert original.keys() == saved.keys()
    assert all(__import__("torch").equal(original[k], saved[k]) for k in original)


def test_token_counts(quick_run):
    strategies_run = by_name(quick_run[0])
    fixed = strategies_run["fixed"]
    assert fixed["processed_tokens"] == TRAIN_SIZE * MAX_LEN  # one epoch, everything padded to max_len
    assert fixed["eval_processed_tokens"] == TEST_SIZE * MAX_LEN
    # Every strategy trains on every review once and evaluates on every test review once.
    assert len({s["real_tokens"] for s in strategies_run.values()}) == 1
    assert len({s["eval_real_tokens"] for s in strategies_run.values()}) == 1
    for s in strategies_run.values():
        assert 0 < s["efficiency"] <= 1 and s["processed_tokens"] <= fixed["processed_tokens"]
        assert math.isclose(s["efficiency"], s["real_tokens"] / s["processed_tokens"])
        assert math.isclose(s["ratios"]["processed_tokens"], s["processed_tokens"] / fixed["processed_tokens"])
    assert strategies_run["smart"]["processed_tokens"] <= strategies_run["dynamic"]["processed_tokens"]


def test_rounded_widths_and_their_table(quick_run):
    results, out, _ = quick_run
    smart, rounded = by_name(results)["smart"], by_name(results)["smart_x16"]
    assert rounded["pad_to_multiple_of"] == 16 and smart["pad_to_multiple_of"] is None
    assert rounded["processed_tokens"] >= smart["processed_tokens"] and rounded["processed_tokens"] % 16 == 0
    assert rounded["distinct_widths"] <= MAX_LEN // 16 and rounded["real_tokens"] == smart["real_tokens"]
    text = (out / "results.md").read_text()
    assert "next to the same strategy unrounded" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {rounded['label']} | 16 |"))
    assert f"{rounded['processed_tokens'] / smart['processed_tokens']:.2f}" in row


def test_steps_sequences_and_metadata(quick_run):
    """Why accuracies can differ: the budget takes fewer, larger steps; the others batch_size each."""
    results = quick_run[0]
    s = by_name(results)
    for name in ("fixed", "smart", "dynamic", "length_grouped"):
        assert s[name]["train_steps"] == -(-TRAIN_SIZE // BATCH_SIZE)
        assert s[name]["sequences_per_step_max"] == BATCH_SIZE
        assert s[name]["largest_batch_tokens"] <= BATCH_SIZE * MAX_LEN
    assert s["fixed"]["distinct_widths"] == 1
    budget, meta = s["token_budget"], results["metadata"]
    assert budget["sequences_per_step_mean"] == pytest.approx(TRAIN_SIZE / budget["train_steps"])
    assert budget["largest_batch_tokens"] <= meta["setup"]["max_tokens"]
    # the default budget: batch size x the mean training length (helpers.token_budget)
    assert meta["setup"]["max_tokens"] == math.ceil(BATCH_SIZE * meta["data"]["train_mean_tokens"])
    assert meta["setup"]["train_size"] == TRAIN_SIZE and meta["setup"]["test_size"] == TEST_SIZE
    assert meta["setup"]["quick"] and meta["setup"]["epochs"] == 1 and meta["setup"]["seed"] == 5 and meta["data"]["source"] == "synthetic"
    assert {"cpu", "cores", "torch", "device_name"} <= set(meta["machine"])
    assert meta["command"].startswith("python -m benchmarks.compare_strategies --quick")
    loop = meta["setup"]["loop"]
    assert "CUDNN_ATTENTION" not in loop["attention_backends"] and loop["compile"] is False


def test_predicted_times_from_the_step_cost_curve(quick_run):
    results, out, _ = quick_run
    curve = results["step_costs"]
    assert curve["widths"] == compare_strategies.step_cost.default_widths(MAX_LEN)
    assert curve["batch_size"] == BATCH_SIZE and results["metadata"]["setup"]["curve_widths"] == curve["widths"]
    for s in results["strategies"]:
        assert s["predicted_train_seconds"] > 0 and s["predicted_eval_seconds"] > 0
    # Fixed padding: every step max_len wide, batch_size rows: the curve's last point, per step.
    fixed = by_name(results)["fixed"]
    assert fixed["predicted_train_seconds"] == pytest.approx(fixed["train_steps"] * curve["train_seconds"][-1])
    text = (out / "results.md").read_text()
    assert "Train time, predicted" in text and "Step-cost curve" in text


def test_strategy_names_and_rounding():
    assert strategies.get_strategy("smart") is strategies.STRATEGIES["smart"]
    rounded = strategies.get_strategy("token_budget_x32")
    assert rounded.pad_to_multiple_of == 32 and rounded.train_indices is strategies.budget_batches
    assert strategies.get_strategy("length_grouped_x8").name == "length_grouped_x8"
    assert rounded.padding(400, 8) == (None, 32) and strategies.STRATEGIES["fixed"].padding(400, 8) == (400, 8)
    for bad in ("smart_x0", "nothing", "nothing_x8", "smart_x"):
        with pytest.raises(KeyError):
            strategies.get_strategy(bad)


def test_options_parse_and_bad_ones_are_refused():
    args = compare_strategies.parse_args(["--rounding", "8,32", "--strategies", "fixed,smart,smart_x8"])
    assert args.strategies == ["fixed", "smart", "smart_x8", "smart_x32"]  # each once
    assert args.curve_widths == "auto" and args.curve_repeats == 3
    assert compare_strategies.parse_args(["--quick"]).curve_repeats == 1
    assert compare_strategies.parse_args(["--curve-widths", "none"]).curve_widths is None
    assert compare_strategies.parse_args(["--curve-widths", "200,50"]).curve_widths == [50, 200]
    for bad in (["--curve-widths", "x"], ["--curve-widths", "64"], ["--strategies", "smart,bogus"],
                ["--rounding", "x"], ["--train-size", "0"], ["--train-size", "abc"], ["--seed", "-1"],
                ["--quick", "--profile", "full"], ["--rounding", "0"]):
        with pytest.raises(SystemExit):
            compare_strategies.parse_args(bad)


def test_an_option_not_given_never_overrides_the_profile_or_the_environment(monkeypatch):
    settings = lambda *argv: compare_strategies.make_settings(compare_strategies.parse_args(list(argv)))  # noqa: E731
    monkeypatch.delenv("SMART_BATCHING_PROFILE", raising=False)
    for name in ("EPOCHS", "TRAIN_SIZE", "TEST_SIZE", "COMPARISON_SIZE"):
        monkeypatch.delenv(f"SMART_BATCHING_{name}", raising=False)
    default = settings()
    assert default.profile == "full" and (default.train_size, default.test_size) == (2000, 2000)
    assert (default.epochs, default.seed, default.batch_size) == (1, 321, 16)  # the profile's
    given = settings("--train-size", "all", "--test-size", "300", "--seed", "7", "--epochs", "2")
    assert (given.train_size, given.test_size, given.seed, given.epochs) == (None, 300, 7, 2)
    monkeypatch.setenv("SMART_BATCHING_EPOCHS", "3")
    assert settings().epochs == 3 and settings("--quick").epochs == 3 and settings("--epochs", "2").epochs == 2
    monkeypatch.setenv("SMART_BATCHING_PROFILE", "tiny")
    tiny = settings()
    assert tiny.profile == "tiny" and tiny.max_len == 128 and tiny.epochs == 3
    monkeypatch.delenv("SMART_BATCHING_EPOCHS")
    quick = settings("--quick")
    assert (quick.profile, quick.train_size, quick.test_size, quick.epochs) == ("tiny", 256, 256, 1)


def test_ratios_and_report_without_fixed_padding(quick_run):
    results = json.loads(json.dumps(quick_run[0]))
    results["strategies"] = [s for s in results["strategies"] if s["name"] != "fixed"]
    compare_strategies.add_ratios(results["strategies"])
    first = results["strategies"][0]
    assert first["name"] == "dynamic" and first["ratios"]["train_seconds"] == 1
    assert "ratios are to Dynamic padding, random order" in report.markdown_report(results)


@pytest.mark.parametrize("record", ["2026-11-24_1000", "2026-11-26_2000", "2026-12-02_500_rounds",
                                    "2026-12-05_fixed_smart", "2026-12-02_2000"])
def test_the_recorded_runs_still_report_and_plot(record):
    """Records made before fresh processes (some with interleaved rounds, some before step costs)."""
    import matplotlib

    matplotlib.use("Agg")
    recorded = json.loads((ROOT / "docs" / "benchmark" / record / "results.json").read_text())
    text = report.markdown_report(recorded)
    assert all(s["label"] in text for s in recorded["strategies"])
    assert "one strategy after another in one process" in text
    assert ("Train time, predicted" in text) == all(s.get("predicted_train_seconds") for s in recorded["strategies"])
    fig = report.plot_results(recorded)
    __import__("matplotlib.pyplot").pyplot.close(fig)


@pytest.mark.parametrize("record, allocator", [(".", "glibc malloc"), ("2026-12-07_tcmalloc", "tcmalloc (preloaded)")])
def test_the_fresh_process_records_report_their_allocator_and_counters(record, allocator):
    """The recorded benchmark and its tcmalloc rerun: the allocator named, and where each epoch's
    time went (CPU and kernel seconds, page faults a step) beside its prediction."""
    recorded = json.loads((ROOT / "docs" / "benchmark" / record / "results.json").read_text())
    text = report.markdown_report(recorded)
    assert f"no GPU, {allocator};" in text and "each strategy in a fresh process of its own" in text
    for s in recorded["strategies"]:
        c = s["train_counters"]
        assert f"| {c['cpu_seconds']:,.0f} ({c['system_seconds']:,.0f}) | {c['page_faults'] / s['train_steps']:,.0f} |" in text
    assert len(recorded["step_costs"]["train_page_faults"]) == len(recorded["step_costs"]["widths"])


def test_the_epoch_runner_refuses_a_broken_job(tmp_path):
    (tmp_path / "job.json").write_text("{}")
    with pytest.raises(RuntimeError, match="benchmarks.epoch"):
        epoch.run_fresh(tmp_path, "smart")


def test_gpu_check_runs_small_and_reports_every_part(tmp_path):
    """The GPU check's --quick mode on this machine: every part runs and lands in its report."""
    run_script("gpu_check", "--quick", "--out", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    setups = [p["setup"] for p in results["probe"]]
    assert len(setups) == 3 and any("cuDNN allowed" in s for s in setups)
    widths = [w for p in results["probe"] for w in p["widths"]]
    assert len(set(widths)) == len(widths)  # every set-up meets widths never seen before
    for p in results["probe"]:
        assert p["train_first"] > 0 and p["train_seen"] > 0 and p["predict_seen"] > 0
    benchmark = results["benchmark"]
    assert [s["name"] for s in benchmark["strategies"]] == ["fixed", "smart", "smart_x8", "token_budget"]
    assert len({s["process_id"] for s in benchmark["strategies"]}) == 4
    assert {c["check"].split(" >=")[0].split(" <=")[0] for c in results["targets"]} >= {
        "smart batching trains", "the token budget trains", "sorted evaluation runs"}
    curve = benchmark["step_costs"]  # the benchmark's own step-cost curve at the tiny profile's max_len 128
    assert curve["widths"] == compare_strategies.step_cost.default_widths(128) and len(curve["train_seconds"]) == 5
    assert all(s["predicted_train_seconds"] > 0 for s in benchmark["strategies"])
    text = (tmp_path / "results.md").read_text()
    assert "Quick mode" in text and "cuDNN allowed" in text and "| Width | Train step |" in text
    assert "Train time, predicted" in text and "## Targets" in text
    assert (tmp_path / "results.png").stat().st_size > 1000


def test_gpu_check_refuses_to_measure_without_a_gpu():
    if __import__("torch").cuda.is_available():
        pytest.skip("there is a GPU here")
    completed = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--data", "aclImdb_v1.tar.gz"],
                               capture_output=True, text=True, cwd=ROOT, env=script_env())
    assert completed.returncode != 0 and "no CUDA device" in completed.stderr


def test_batching_speed_runs_small():
    stdout = run_script("batching_speed", "--n", 20_000, "--repeats", 1, "--max-recipe-n", 20_000)
    assert "identical batches: yes" in stdout and "identical batches: NO" not in stdout


def test_batching_speed_on_an_aclimdb_folder(tmp_path):
    """The --data path: a tiny folder in the aclImdb layout, tokenized by the offline tiny tokenizer."""
    rng = np.random.default_rng(0)
    for label in ("pos", "neg"):
        folder = tmp_path / "aclImdb" / "train" / label
        folder.mkdir(parents=True)
        for i in range(30):
            (folder / f"{i}_7.txt").write_text(" ".join(["a fine film"] * int(rng.integers(1, 60))))
    stdout = run_script("batching_speed", "--data", tmp_path, "--model", "tiny", "--max-len", 64,
                        "--n", 5000, "--repeats", 1)
    assert "IMDB train: 60 reviews" in stdout and " smart: " in stdout and " budget: " in stdout


def test_synthetic_lengths_and_token_comparison():
    lengths = batching_speed.synthetic_lengths(5000, max_len=400, seed=1)
    assert lengths.min() >= 1 and lengths.max() <= 400
    assert np.array_equal(lengths, batching_speed.synthetic_lengths(5000, max_len=400, seed=1))
    assert (lengths == 400).mean() > 0.05  # the long tail is truncated, as IMDB's is
    tokens = batching_speed.token_comparison(lengths, 16, 400)
    assert tokens["fixed"]["real_tokens"] == tokens["smart"]["real_tokens"] == lengths.sum()
    assert tokens["smart"]["processed_tokens"] < tokens["fixed"]["processed_tokens"] == 5000 * 400
    assert tokens["budget"]["largest_batch_tokens"] <= tokens["budget"]["max_tokens"] == 16 * 400


def test_process_counters_count_this_process_work():
    start = measuring.process_counters()
    assert set(start) == {"wall_seconds", "cpu_seconds", "system_seconds", "page_faults", "steal_seconds"}
    block = bytearray(64 * 2**20)  # 64 MiB, touched: the kernel must hand the process new pages
    block[::4096] = b"x" * len(block[::4096])
    sum(i * i for i in range(300_000))
    spent = measuring.counters_since(start)
    assert spent["wall_seconds"] > 0 and spent["cpu_seconds"] > 0 and spent["page_faults"] >= 8_000
    assert 0 <= spent["system_seconds"] <= spent["cpu_seconds"]  # the kernel's share: faulting those pages in
    assert spent["steal_seconds"] is None or spent["steal_seconds"] >= 0
    del block


def test_command_lines_name_the_module_and_hide_local_paths():
    assert measuring.command_line("gpu_check", ["--data", "/home/me/aclImdb_v1.tar.gz", "--quick"]) == \
        "python -m benchmarks.gpu_check --data aclImdb_v1.tar.gz --quick"


TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")  # Debian's libtcmalloc-minimal4


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("preload", [None, TCMALLOC])
def test_the_record_names_the_allocator_and_its_settings(preload):
    """Every record says which allocator the process ran with: on a CPU it moves a step's time."""
    if preload and not preload.exists():
        pytest.skip(f"{preload} is not installed")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("MALLOC_")}
    env.update(MALLOC_ARENA_MAX="2", **({"LD_PRELOAD": str(preload)} if preload else {}))
    said = subprocess.run([sys.executable, "-c", "from benchmarks.measuring import memory_allocator as m; print(m())"],
                          env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert said == ("tcmalloc (preloaded)" if preload else "glibc malloc") + " MALLOC_ARENA_MAX=2"
