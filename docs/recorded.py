"""The recorded runs' figures, by name, for the text that quotes them.

A number from a recorded run, written in README.md, docs/*.md or a notebook's markdown, carries a
marker right after it that names where it comes from and how it is formatted:

    smart batching trained **1.52x**<!-- fig: benchmark/2026-12-02_2000/results.json smart.train_speedup .2f --> faster

(an HTML comment: GitHub, Jupyter and Colab show the number alone). tests/test_reader_trust.py
formats the recorded value and fails if the 20 characters before the marker do not hold it, so a
re-recorded run cannot leave a stale number behind. `python docs/recorded.py` lists every name.

Names: a JSON file under docs/, then a dotted path in it; a list of records is indexed by their
"name" field, a list of numbers by position. Computed here for benchmark strategies, from their
ratios to fixed padding: train_speedup (where a record holds its own, it is the median over the
interleaved rounds that only records of the benchmark's earlier method have; a record without one, a
new one included, gets the full-epoch ratio: fixed padding's training seconds / theirs),
eval_speedup, epoch_speedup (the full-epoch ratio, whichever way the epochs ran: one after another
in one process in the earlier records, each in a fresh process since), tokens_saved (1 - their
tokens / fixed padding's), tokens_ratio (fixed padding's tokens / theirs) and, where the record
predicts epoch times, predicted_speedup and measured_over_predicted (the full epoch's seconds / the
predicted), and train_counters.cpu_over_wall / eval_counters.cpu_over_wall (CPU seconds / wall
seconds of a phase: how many cores it kept busy). A notebook run with "smart" and "fixed" gets
train_speedup, tokens_ratio and tokens_saved.

The machine is quoted from its record too: metadata.machine.cpu_name ("Intel Xeon", "AMD EPYC":
the cpu field without "(R)" and "Processor") for a benchmark record, runs.<name>.cpu_name for a
notebook's recorded run, formatted with "s":

    on a 2-core AMD EPYC<!-- fig: benchmark/2026-12-02_2000/results.json metadata.machine.cpu_name s --> CPU

and so are the day it ran (metadata.day, from metadata.date) and its versions and allocator
(metadata.machine.torch, .transformers, .allocator), formatted with "s".
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
WORDS = ("cpu_name", ".day", ".torch", ".transformers", ".allocator")  # quotable words, not numbers


def cpu_name(cpu: str) -> str:
    """A CPU as the text names it: 'Intel(R) Xeon(R) Processor' -> 'Intel Xeon'."""
    return " ".join(re.sub(r"\((?:R|TM)\)|\bProcessor\b|\bCPU\b", " ", cpu).split())


def load(relative: str) -> dict:
    record = json.loads((DOCS / relative).read_text(encoding="utf-8"))
    meta = record.get("metadata") or {}
    machine = meta.get("machine") or record.get("machine") or {}  # a step-cost curve's record: at the top
    if machine.get("cpu"):
        machine["cpu_name"] = cpu_name(machine["cpu"])
    if isinstance(meta.get("date"), str):
        meta["day"] = meta["date"][:10]  # "2026-12-07": the day a text says a run was made
    for strategy in record.get("strategies", []):
        ratios = strategy.get("ratios") or {}
        if ratios.get("train_seconds"):
            strategy.setdefault("train_speedup", 1 / ratios["train_seconds"])  # only earlier records have a rounds median
        if ratios.get("eval_seconds"):
            strategy["eval_speedup"] = 1 / ratios["eval_seconds"]
        if ratios.get("processed_tokens"):
            strategy["tokens_saved"] = 1 - ratios["processed_tokens"]
            strategy["tokens_ratio"] = 1 / ratios["processed_tokens"]
    strategies = record.get("strategies", [])
    base = next((s for s in strategies if (s.get("ratios") or {}).get("train_seconds") == 1), None)
    for strategy in strategies:
        if strategy.get("ratios", {}).get("train_seconds"):  # the full epochs' ratio
            strategy["epoch_speedup"] = 1 / strategy["ratios"]["train_seconds"]
        if base and base.get("predicted_train_seconds") and strategy.get("predicted_train_seconds"):
            strategy["predicted_speedup"] = base["predicted_train_seconds"] / strategy["predicted_train_seconds"]
        if strategy.get("predicted_train_seconds") and strategy.get("train_seconds"):
            strategy["measured_over_predicted"] = strategy["train_seconds"] / strategy["predicted_train_seconds"]
        for phase in ("train", "eval"):  # records with counters: CPU seconds per phase
            counters = strategy.get(f"{phase}_counters") or {}
            if counters.get("cpu_seconds") and counters.get("wall_seconds"):
                counters["cpu_over_wall"] = counters["cpu_seconds"] / counters["wall_seconds"]
    for run in record.get("runs", []):  # a notebook run that compared smart batching with fixed padding
        if run.get("cpu"):
            run["cpu_name"] = cpu_name(run["cpu"])
        smart, fixed = run.get("smart", {}), run.get("fixed", {})
        if smart.get("train_seconds") and fixed.get("train_seconds"):
            run["train_speedup"] = fixed["train_seconds"] / smart["train_seconds"]
        if smart.get("processed_tokens") and fixed.get("processed_tokens"):
            run["tokens_ratio"] = fixed["processed_tokens"] / smart["processed_tokens"]
            run["tokens_saved"] = 1 - smart["processed_tokens"] / fixed["processed_tokens"]
    return record


def lookup(relative: str, path: str):
    """The value at a dotted path in docs/<relative>; a list is indexed by its items' "name"."""
    value = load(relative)
    for key in path.split("."):
        if isinstance(value, list) and key.isdigit() and not any(isinstance(v, dict) and "name" in v
                                                                  for v in value):
            value = value[int(key)]  # a list of numbers, or of unnamed records: by position
        elif isinstance(value, list):
            matches = [item for item in value if isinstance(item, dict) and item.get("name") == key]
            if len(matches) != 1:
                raise KeyError(f"{relative}: no single record named {key!r} in {path!r}")
            value = matches[0]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            raise KeyError(f"{relative}: {path!r} has no {key!r}")
    return value


def quotable(value, prefix=""):
    """(name, value) for every number in a record, and its machine's cpu_name, depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from quotable(item, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            key = item.get("name", str(i)) if isinstance(item, dict) else str(i)
            yield from quotable(item, f"{prefix}.{key}" if prefix else key)
    elif (isinstance(value, (int, float)) and not isinstance(value, bool)) or prefix.endswith(WORDS):
        yield prefix, value


if __name__ == "__main__":
    for path in sorted(DOCS.rglob("*.json")):
        relative = path.relative_to(DOCS).as_posix()
        if len(sys.argv) > 1 and not any(arg in relative for arg in sys.argv[1:]):
            continue
        for name, value in quotable(load(relative)):
            print(f"{relative} {name} = {value!r}")
