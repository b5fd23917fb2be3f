"""The benchmark scripts keep working: run them small and check what they write, never how fast."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import batching_speed  # noqa: E402
import compare_strategies  # noqa: E402
import step_cost  # noqa: E402
import step_trace  # noqa: E402

REQUIRED = {"name", "label", "processed_tokens", "real_tokens", "efficiency", "train_seconds",
            "train_steps", "eval_seconds", "eval_processed_tokens", "eval_real_tokens", "accuracy",
            "peak_mem_mb", "ratios", "sequences_per_step_mean", "sequences_per_step_max",
            "largest_batch_tokens", "distinct_widths"}
TRAIN_SIZE, TEST_SIZE, BATCH_SIZE, MAX_LEN = 40, 24, 8, 64
ROUNDS, ROUND_STEPS = 3, 2  # 6 steps a strategy in all: the 5 of an epoch of 40 / 8, each once


def run_script(name, *args, timeout=300):
    """Run a benchmark script in a fresh interpreter, with only the tiny profile's environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SMART_BATCHING_") or k == "SMART_BATCHING_PROFILE"}
    completed = subprocess.run([sys.executable, str(BENCHMARKS / name), *map(str, args)],
                               capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark")
    stdout = run_script("compare_strategies.py", "--quick", "--train-size", TRAIN_SIZE,
                        "--test-size", TEST_SIZE, "--batch-size", BATCH_SIZE, "--max-len", MAX_LEN,
                        "--construction-sizes", "2000,5000", "--max-recipe-n", 2000, "--quiet",
                        "--rounds", ROUNDS, "--round-steps", ROUND_STEPS, "--out", out)
    return json.loads((out / "results.json").read_text()), out, stdout


def by_name(results):
    return {s["name"]: s for s in results["strategies"]}


def test_quick_run_writes_json_markdown_and_chart(quick_run):
    results, out, _ = quick_run
    assert (out / "results.png").stat().st_size > 1000
    report = (out / "results.md").read_text()
    for strategy in results["strategies"]:
        assert strategy["label"] in report


def test_all_five_strategies_with_the_required_keys(quick_run):
    results, _, _ = quick_run
    assert [s["name"] for s in results["strategies"]] == list(compare_strategies.DEFAULT_STRATEGIES)
    for strategy in results["strategies"]:
        assert REQUIRED <= set(strategy), REQUIRED - set(strategy)
        assert strategy["train_seconds"] > 0 and strategy["eval_seconds"] > 0
        assert strategy["peak_mem_mb"] > 0
        assert 0 <= strategy["accuracy"] <= 1
        # the counters span the epoch (its batch building too) and the evaluation
        for phase in ("train", "eval"):
            counters = strategy[f"{phase}_counters"]
            assert counters["wall_seconds"] >= strategy[f"{phase}_seconds"] and counters["cpu_seconds"] > 0
    assert by_name(results)["fixed"]["ratios"]["train_seconds"] == 1


def test_token_counts(quick_run):
    results, _, _ = quick_run
    strategies = by_name(results)
    fixed = strategies["fixed"]
    assert fixed["processed_tokens"] == TRAIN_SIZE * MAX_LEN  # one epoch, everything padded to max_len
    assert fixed["eval_processed_tokens"] == TEST_SIZE * MAX_LEN
    # Every strategy trains on every review once and evaluates on every test review once.
    assert len({s["real_tokens"] for s in strategies.values()}) == 1
    assert len({s["eval_real_tokens"] for s in strategies.values()}) == 1
    for s in strategies.values():
        assert 0 < s["efficiency"] <= 1 and s["processed_tokens"] <= fixed["processed_tokens"]
        assert math.isclose(s["efficiency"], s["real_tokens"] / s["processed_tokens"])
        assert math.isclose(s["ratios"]["processed_tokens"], s["processed_tokens"] / fixed["processed_tokens"])
    assert strategies["smart"]["processed_tokens"] <= strategies["dynamic"]["processed_tokens"]


def test_steps_and_metadata(quick_run):
    results, _, _ = quick_run
    steps = -(-TRAIN_SIZE // BATCH_SIZE)
    for name in ("fixed", "dynamic", "smart", "length_grouped"):
        assert by_name(results)[name]["train_steps"] == steps
    meta = results["metadata"]
    assert meta["setup"]["train_size"] == TRAIN_SIZE and meta["setup"]["test_size"] == TEST_SIZE
    assert meta["setup"]["quick"] and meta["data"]["source"] == "synthetic"
    assert {"cpu", "cores", "torch", "device_name"} <= set(meta["machine"])
    assert [row["n"] for row in results["construction"]] == [2000, 5000]
    assert results["construction"][0]["identical"] is True
    assert results["construction"][1]["recipe_seconds"] is None  # above --max-recipe-n


def test_steps_and_sequences_per_step(quick_run):
    """Why accuracies can differ: the budget takes fewer, larger steps; the others batch_size each."""
    strategies = by_name(quick_run[0])
    for name in ("fixed", "smart", "dynamic"):
        s = strategies[name]
        assert s["sequences_per_step_max"] == BATCH_SIZE
        assert s["sequences_per_step_mean"] == pytest.approx(TRAIN_SIZE / s["train_steps"])
        assert s["largest_batch_tokens"] <= BATCH_SIZE * MAX_LEN
    assert strategies["fixed"]["distinct_widths"] == 1
    budget = strategies["token_budget"]
    assert budget["sequences_per_step_mean"] == pytest.approx(TRAIN_SIZE / budget["train_steps"])
    meta = quick_run[0]["metadata"]
    assert budget["largest_batch_tokens"] <= meta["setup"]["max_tokens"]
    # the default budget: batch size x the mean training length (helpers.token_budget)
    assert meta["setup"]["max_tokens"] == math.ceil(BATCH_SIZE * meta["data"]["train_mean_tokens"])


def test_predicted_times_from_the_step_cost_curve(quick_run):
    results, out, _ = quick_run
    curve = results["step_costs"]
    assert curve["widths"] == step_cost.default_widths(MAX_LEN) and curve["batch_size"] == BATCH_SIZE
    assert results["metadata"]["setup"]["curve_widths"] == curve["widths"]
    for s in results["strategies"]:
        assert s["predicted_train_seconds"] > 0 and s["predicted_eval_seconds"] > 0
    # Fixed padding: every step max_len wide, batch_size rows: the curve's last point, per step.
    fixed = by_name(results)["fixed"]
    assert fixed["predicted_train_seconds"] == pytest.approx(fixed["train_steps"] * curve["train_seconds"][-1])
    assert (out / "step_costs.png").stat().st_size > 1000
    report = (out / "results.md").read_text()
    assert "Train time, predicted" in report and "Step-cost curve" in report


def test_interleaved_rounds_give_each_strategy_a_median_speedup_and_its_spread(quick_run):
    results, _, _ = quick_run
    assert results["metadata"]["setup"]["rounds"] == ROUNDS
    for s in results["strategies"]:
        low, high = s["train_speedup_spread"]
        assert low <= s["train_speedup"] <= high and len(s["round_speedups"]) == ROUNDS
        assert len(s["round_seconds"]) == len(s["round_epoch_seconds"]) == ROUNDS
        assert all(steps >= 1 for steps in s["round_steps"])
        assert s["train_seconds_interleaved"] > 0
    fixed = by_name(results)["fixed"]
    assert fixed["train_speedup"] == 1 and fixed["train_speedup_spread"] == [1, 1]
    # 3 rounds x 2 steps cover the 5 steps of an epoch: together the rounds run each batch once.
    assert sum(fixed["round_steps"]) == fixed["train_steps"]
    assert "interleaved, median (min-max)" in (quick_run[1] / "results.md").read_text()


def test_interleaved_schedule_runs_every_strategy_once_a_round_in_rotating_order():
    names = ["fixed", "dynamic", "smart", "length_grouped", "token_budget"]
    schedule = compare_strategies.interleaved_schedule(names, 10)
    assert len(schedule) == 10
    for r, order in enumerate(schedule):
        assert sorted(order) == sorted(names)  # every strategy once in every round
        assert order[0] == names[r % 5] and order == names[r % 5:] + names[:r % 5]
    for name in names:  # rounds a multiple of 5: each strategy in each position twice
        assert sorted(order.index(name) for order in schedule) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert compare_strategies.interleaved_schedule(["a", "b"], 3) == [["a", "b"], ["b", "a"], ["a", "b"]]
    assert compare_strategies.interleaved_schedule(names, 0) == []


def test_round_slices_are_alike_samples_of_the_epoch():
    rng = np.random.default_rng(0)
    tokens = rng.permutation(np.arange(1, 41) * 100)  # 40 batches, each a different cost
    slices = compare_strategies.round_slices(tokens, rounds=5, steps=8)  # 5 x 8: the whole epoch
    assert sorted(np.concatenate(slices).tolist()) == list(range(40))
    assert all(len(s) == 8 and list(s) == sorted(s) for s in slices)  # epoch order within a slice
    # Dealt in a snake, every round gets the same mean cost rank (even steps: exactly).
    ranks = np.argsort(np.argsort(tokens))
    assert len({ranks[s].sum() for s in slices}) == 1
    sample = compare_strategies.round_slices(tokens, rounds=4, steps=3)  # 12 of 40 batches
    assert [len(s) for s in sample] == [3] * 4
    assert len(set(np.concatenate(sample).tolist())) == 12  # no batch twice
    assert all(ranks[s].min() < 14 and ranks[s].max() > 26 for s in sample)  # cheap to costly each
    uneven = compare_strategies.round_slices(tokens[:7], rounds=3, steps=4)
    assert sorted(len(s) for s in uneven) == [2, 2, 3] and len(np.concatenate(uneven)) == 7
    few = compare_strategies.round_slices([5, 9], rounds=3, steps=4)  # fewer batches than rounds
    assert all(len(s) >= 1 for s in few) and set(np.concatenate(few).tolist()) == {0, 1}


def test_round_speedups_are_the_baselines_estimate_over_each_strategys():
    strategies = [dict(name="fixed"), dict(name="smart")]
    timings = {name: dict(round_steps=[2, 2, 2], round_seconds=seconds, round_epoch_seconds=epochs)
               for name, seconds, epochs in (("fixed", [1, 1, 1], [10.0, 12.0, 30.0]),
                                             ("smart", [1, 1, 1], [5.0, 8.0, 10.0]))}
    compare_strategies.add_round_speedups(strategies, timings, "fixed")
    smart = strategies[1]
    assert smart["round_speedups"] == [2.0, 1.5, 3.0]
    assert smart["train_speedup"] == 2.0 and smart["train_speedup_spread"] == [1.5, 3.0]
    assert smart["train_seconds_interleaved"] == 8.0
    compare_strategies.add_round_speedups(strategies, timings, "fixed", epochs=3)
    assert smart["train_seconds_interleaved"] == 24.0  # to set beside train_seconds, all epochs


def test_an_old_record_without_predictions_or_rounds_still_reports_and_plots():
    """The benchmark of 2026-11-26, recorded before step costs and rounds existed."""
    import matplotlib

    matplotlib.use("Agg")
    recorded = json.loads((ROOT / "docs" / "benchmark" / "2026-11-26_2000" / "results.json").read_text())
    assert "step_costs" not in recorded and not any("train_speedup_spread" in s for s in recorded["strategies"])
    report = compare_strategies.markdown_report(recorded)
    assert "Train time, predicted" not in report and all(s["label"] in report for s in recorded["strategies"])
    fig = compare_strategies.plot_results(recorded)
    __import__("matplotlib.pyplot").pyplot.close(fig)


def test_curve_and_round_options():
    args = compare_strategies.parse_args([])
    assert args.curve_widths == "auto" and args.curve_repeats == 3 and args.rounds >= 1
    quick = compare_strategies.parse_args(["--quick"])
    assert (quick.curve_repeats, quick.rounds, quick.round_steps) == (1, 3, 2)
    assert compare_strategies.parse_args(["--curve-widths", "none"]).curve_widths is None
    assert compare_strategies.parse_args(["--curve-widths", "200,50"]).curve_widths == [50, 200]
    for bad in (["--curve-widths", "x"], ["--curve-widths", "64"], ["--rounds", "-1"],
                ["--round-steps", "0"]):
        with pytest.raises(SystemExit):
            compare_strategies.parse_args(bad)


def test_loop_settings_are_recorded(quick_run):
    loop = quick_run[0]["metadata"]["setup"]["loop"]
    assert "CUDNN_ATTENTION" not in loop["attention_backends"] and loop["compile"] is False


def test_sizes_all_means_the_whole_split_and_bad_sizes_are_refused():
    args = compare_strategies.parse_args(["--train-size", "all", "--test-size", "300"])
    settings = compare_strategies.make_settings(args)
    assert settings.train_size is None and settings.test_size == 300  # not the 1,000 default
    default = compare_strategies.make_settings(compare_strategies.parse_args([]))
    assert (default.train_size, default.test_size) == (2000, 2000)  # the full profile's comparison_size
    for bad in ("abc", "0", "-5"):
        with pytest.raises(SystemExit):
            compare_strategies.parse_args(["--train-size", bad])


def test_a_run_without_fixed_padding_compares_to_its_first_strategy(tmp_path):
    run_script("compare_strategies.py", "--quick", "--train-size", 24, "--test-size", 16,
               "--batch-size", 8, "--max-len", 64, "--strategies", "smart,smart_bucketed",
               "--construction-sizes", "none", "--quiet", "--out", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    smart, bucketed = results["strategies"]
    assert smart["ratios"]["train_seconds"] == 1
    assert bucketed["processed_tokens"] >= smart["processed_tokens"]
    assert bucketed["processed_tokens"] % 8 == 0 and bucketed["distinct_widths"] <= 64 // 8
    assert "ratios are to Smart batching (recipe)" in (tmp_path / "results.md").read_text()
    assert smart["train_speedup_spread"] == [1, 1]  # the rounds' speed-ups are to the first, too


def test_gpu_check_runs_small_and_reports_every_part(tmp_path):
    """The GPU check's --quick mode on this machine: every part runs and lands in its report."""
    run_script("gpu_check.py", "--quick", "--out", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    setups = [p["setup"] for p in results["probe"]]
    assert len(setups) == 3 and any("cuDNN allowed" in s for s in setups)
    widths = [w for p in results["probe"] for w in p["widths"]]
    assert len(set(widths)) == len(widths)  # every set-up meets widths never seen before
    for p in results["probe"]:
        assert p["train_first"] > 0 and p["train_seen"] > 0 and p["predict_seen"] > 0
    names = [s["name"] for s in results["benchmark"]["strategies"]]
    assert names == ["fixed", "smart", "smart_bucketed", "token_budget"]
    assert {c["check"].split(" >=")[0].split(" <=")[0] for c in results["targets"]} >= {
        "smart batching trains", "the token budget trains", "sorted evaluation runs"}
    curve = results["step_costs"]  # part 0: the step-cost curve at the tiny profile's max_len 128
    assert curve["widths"] == step_cost.default_widths(128) and len(curve["train_seconds"]) == 5
    assert all(s["predicted_train_seconds"] > 0 and len(s["train_speedup_spread"]) == 2
               for s in results["benchmark"]["strategies"])
    report = (tmp_path / "results.md").read_text()
    assert "Quick mode" in report and "cuDNN allowed" in report
    assert "## 0. What a step costs" in report and "train, predicted" in report
    assert (tmp_path / "results.png").stat().st_size > 1000


def test_gpu_check_refuses_to_measure_without_a_gpu():
    if __import__("torch").cuda.is_available():
        pytest.skip("there is a GPU here")
    completed = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--data", "x"],
                               capture_output=True, text=True, cwd=ROOT)
    assert completed.returncode != 0 and "no CUDA device" in completed.stderr


def test_batching_speed_runs_small():
    stdout = run_script("batching_speed.py", "--n", 20_000, "--repeats", 1)
    assert "identical batches: yes" in stdout and "identical batches: NO" not in stdout


def test_batching_speed_on_an_aclimdb_folder(tmp_path):
    """The --data path: a tiny folder in the aclImdb layout, tokenized by the offline tiny tokenizer."""
    rng = np.random.default_rng(0)
    for label in ("pos", "neg"):
        folder = tmp_path / "aclImdb" / "train" / label
        folder.mkdir(parents=True)
        for i in range(30):
            (folder / f"{i}_7.txt").write_text(" ".join(["a fine film"] * int(rng.integers(1, 60))))
    stdout = run_script("batching_speed.py", "--data", tmp_path, "--model", "tiny", "--max-len", 64,
                        "--n", 5000, "--repeats", 1)
    assert "IMDB train: 60 reviews" in stdout and "smart batches process" in stdout


def test_synthetic_lengths_and_token_comparison():
    lengths = batching_speed.synthetic_lengths(5000, max_len=400, seed=1)
    assert lengths.min() >= 1 and lengths.max() <= 400
    assert np.array_equal(lengths, batching_speed.synthetic_lengths(5000, max_len=400, seed=1))
    assert (lengths == 400).mean() > 0.05  # the long tail is truncated, as IMDB's is
    tokens = batching_speed.token_comparison(lengths, 16, 400)
    assert tokens["fixed"]["real_tokens"] == tokens["smart"]["real_tokens"] == lengths.sum()
    assert tokens["smart"]["processed_tokens"] < tokens["fixed"]["processed_tokens"] == 5000 * 400


def test_step_trace_summary_arithmetic():
    rows = [dict(width=10, rows=2, seconds=2.0, faults=100, new_width=True, predicted=1.0),
            dict(width=10, rows=2, seconds=1.5, faults=300, new_width=False, predicted=1.0),
            dict(width=20, rows=1, seconds=3.0, faults=200, new_width=True, predicted=2.0)]
    s = step_trace.summarize(rows)
    assert (s["steps"], s["seconds"], s["faults_per_step"]) == (3, 6.5, 200.0)
    assert s["tokens_per_step"] == 20 and s["predicted_seconds"] == 4.0 and s["measured_over_predicted"] == 1.625
    assert s["new_width_ratio_median"] == 1.75 and s["seen_width_ratio_median"] == 1.5
    assert "predicted_seconds" not in step_trace.summarize([dict(rows[0], predicted=None)])
    assert "cpu_over_wall" not in s  # a trace recorded before CPU time was
    timed = [dict(r, cpu_seconds=c) for r, c in zip(rows, (4.0, 3.0, 6.0))]
    assert step_trace.summarize(timed)["cpu_over_wall"] == 13.0 / 6.5


def test_process_counters_count_this_process_work():
    start = compare_strategies.process_counters()
    assert set(start) == {"wall_seconds", "cpu_seconds", "page_faults", "steal_seconds"}
    block = bytearray(64 * 2**20)  # 64 MiB, touched: the kernel must hand the process new pages
    block[::4096] = b"x" * len(block[::4096])
    sum(i * i for i in range(300_000))
    spent = compare_strategies.counters_since(start)
    assert spent["wall_seconds"] > 0 and spent["cpu_seconds"] > 0 and spent["page_faults"] >= 8_000
    assert spent["steal_seconds"] is None or spent["steal_seconds"] >= 0
    del block


def test_step_trace_runs_a_strategy_after_another_in_one_process(tmp_path):
    curve = tmp_path / "curve.json"
    curve.write_text(json.dumps({"step_costs": {"widths": [2, 128], "batch_size": 8,
                                                "train_seconds": [0.01, 0.1], "eval_seconds": [0.01, 0.1]}}))
    out = tmp_path / "trace.json"
    run_script("step_trace.py", "--quick", "--before", "fixed", "--before-steps", 2, "--steps", 3,
               "--curve", curve, "--out", out)
    trace = json.loads(out.read_text())
    assert trace["before"]["steps"] == 2 and trace["traced"]["steps"] == len(trace["traced"]["rows"]) == 3
    seen = set()
    for row in trace["before"]["rows"] + trace["traced"]["rows"]:  # "new": new to the process
        assert row["new_width"] == (row["width"] not in seen) and row["seconds"] > 0 and row["predicted"] > 0
        assert row["cpu_seconds"] > 0 and row["faults"] >= 0
        seen.add(row["width"])
    assert not trace["before"]["rows"][1]["new_width"]  # fixed padding: one width, max_len
    assert trace["metadata"]["command"].startswith("python benchmarks/step_trace.py --quick")
    with pytest.raises(SystemExit):
        step_trace.parse_args(["--out", str(out), "--steps", "0"])
