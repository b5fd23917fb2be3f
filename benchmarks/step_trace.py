"""Every training step of one strategy, timed on its own, next to what the step-cost curve predicts.

compare_strategies.py reports an epoch's time as one number. When that number and the curve's
prediction disagree, this script says where: it trains a strategy's first-epoch batches through
helpers.train_epoch in a fresh process and records, per step, the width, the seconds, the curve's
prediction for that shape, whether the width is new to the process, its CPU seconds, its page
faults (memory the process had to get from the kernel again) and the machine's steal time.
`--before fixed` first trains another strategy's batches on another model, as the benchmark does
before a later strategy, so that the same batches can be timed in a fresh process and in one with
a history.

    python benchmarks/step_trace.py --data path/to/aclImdb_v1.tar.gz --model path/to/model \\
        --curve docs/benchmark/results.json --steps 125 --out trace.json
    python benchmarks/step_trace.py --quick --out trace.json     # seconds: synthetic data, tiny model
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # helpers.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_strategies  # noqa: E402
import helpers  # noqa: E402
import step_cost  # noqa: E402


def traced(batches, rows: list, seen: set, curve: dict | None):
    """Yield the batches; after each step (the loop asks for the next batch) record that step."""
    for batch in batches:
        width, size = (int(n) for n in batch["input_ids"].shape[::-1])
        start = compare_strategies.process_counters()
        yield batch
        spent = compare_strategies.counters_since(start)
        rows.append(dict(width=width, rows=size, seconds=spent["wall_seconds"], cpu_seconds=spent["cpu_seconds"],
                         faults=spent["page_faults"], steal_seconds=spent["steal_seconds"], new_width=width not in seen,
                         predicted=step_cost.predict_epoch_seconds(curve, [(width, size)]) if curve else None))
        seen.add(width)


def summarize(rows: list[dict]) -> dict:
    """Totals of a trace, and the measured / predicted ratio for new and for seen widths."""
    seconds = sum(r["seconds"] for r in rows)
    summary = dict(steps=len(rows), seconds=seconds, faults_per_step=float(np.mean([r["faults"] for r in rows])),
                   tokens_per_step=float(np.mean([r["width"] * r["rows"] for r in rows])))
    if rows and rows[0].get("cpu_seconds") is not None:  # traces before 2026-12-05 have no CPU time
        summary["cpu_over_wall"] = sum(r["cpu_seconds"] for r in rows) / seconds
    if rows and rows[0]["predicted"] is not None:
        predicted = sum(r["predicted"] for r in rows)
        summary.update(predicted_seconds=predicted, measured_over_predicted=seconds / predicted)
        for key, new in (("new_width_ratio_median", True), ("seen_width_ratio_median", False)):
            ratios = [r["seconds"] / r["predicted"] for r in rows if r["new_width"] == new]
            summary[key] = float(np.median(ratios)) if ratios else None
    return summary


def first_epoch_batches(name: str, settings, data, max_tokens: int, steps: int) -> list[dict]:
    strategy = compare_strategies.STRATEGIES[name]
    batching = compare_strategies.Batching(data.train.lengths, settings.batch_size, settings.max_len,
                                           max_tokens, settings.seed)
    indices = strategy.train_indices(batching, 0)[:steps]
    return compare_strategies.build_batches(strategy, data.train, indices, data.pad_id, settings.max_len,
                                            settings.pad_to_multiple_of)[0]


def train_traced(batches, settings, device, curve, seen: set) -> list[dict]:
    """A fresh model from the seed, the recipe's optimizer, one pass over the batches, traced."""
    helpers.set_seed(settings.seed)
    model = helpers.load_model(settings)
    optimizer, scheduler = helpers.make_optimizer(model, settings, len(batches))
    rows = []
    helpers.train_epoch(model, traced(batches, rows, seen, curve), optimizer, scheduler, device,
                        settings.max_grad_norm, verbose=False)
    del model, optimizer, scheduler
    gc.collect()
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny profile: synthetic data, tiny model")
    parser.add_argument("--data", help="aclImdb folder or .tar.gz, or a helpers data source")
    parser.add_argument("--model", help="hub name or local folder (default: the profile's)")
    parser.add_argument("--train-size", default="2000", help="training reviews the batches come from")
    parser.add_argument("--strategy", default="smart", choices=sorted(compare_strategies.STRATEGIES))
    parser.add_argument("--steps", type=int, default=125, help="the first STEPS batches of epoch 1")
    parser.add_argument("--before", choices=sorted(compare_strategies.STRATEGIES),
                        help="first train this strategy's batches on another model, in this process")
    parser.add_argument("--before-steps", type=int, default=40)
    parser.add_argument("--curve", type=Path, help="a results.json with step_costs: each step's prediction")
    parser.add_argument("--out", type=Path, required=True, help="the trace, as JSON")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.before_steps < 1:
        parser.error("--steps and --before-steps must be at least 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    options = ["--quick"] if args.quick else ["--train-size", args.train_size, "--test-size", "16"]
    for flag, value in (("--data", args.data), ("--model", args.model)):
        options += [flag, value] if value else []
    settings = compare_strategies.make_settings(compare_strategies.parse_args(options))
    device = torch.device("cpu")  # page faults and a process's history are a CPU story; see gpu_check on a GPU
    data = helpers.prepare_data(settings)
    max_tokens = helpers.token_budget(data.train.lengths, settings.batch_size)
    curve = json.loads(args.curve.read_text())["step_costs"] if args.curve else None
    seen: set = set()
    result = dict(metadata=dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                command=compare_strategies.command_line(sys.argv[1:] if argv is None else argv).replace(
                                    "compare_strategies.py", "step_trace.py"),
                                machine=compare_strategies.machine_info(device), strategy=args.strategy,
                                before=args.before, curve=str(args.curve) if args.curve else None))
    if args.before:
        before = train_traced(first_epoch_batches(args.before, settings, data, max_tokens, args.before_steps),
                              settings, device, curve, seen)
        result["before"] = dict(summarize(before), rows=before)
    rows = train_traced(first_epoch_batches(args.strategy, settings, data, max_tokens, args.steps),
                        settings, device, curve, seen)
    result["traced"] = dict(summarize(rows), rows=rows)
    for part in ("before", "traced"):
        if part in result:
            s = {k: v for k, v in result[part].items() if k != "rows"}
            print(f"{part}: " + ", ".join(f"{k} {v:,.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
