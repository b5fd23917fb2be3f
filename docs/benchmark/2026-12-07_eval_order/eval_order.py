"""Evaluation order: smart batching's sorted batches, shortest first (as the benchmark evaluates) and
longest first, beside LengthGroupedSampler's, each timed twice in turn in one fresh process, with
CPU seconds and page faults. The model is the untrained classifier on MODEL: the time does not
depend on the weights. Run from the repository root:

    PYTHONPATH=. python docs/benchmark/2026-12-07_eval_order/eval_order.py MODEL IMDB_ARCHIVE OUT.json
"""
import json
import sys

import torch

import helpers
from benchmarks.strategies import Batching, build_batches, get_strategy
from benchmarks.measuring import machine_info, process_counters, counters_since
M = sys.argv[1]
settings = helpers.get_settings("full", data_source=sys.argv[2], model_name=M, train_size=2000, test_size=2000)
data = helpers.prepare_data(settings, verbose=False)
test = data.test
d = Batching(test.lengths, settings.batch_size, settings.max_len, 4041, settings.seed)
pad = (data.pad_id, settings.max_len, None)
orders = {
    "sorted_shortest_first": get_strategy("smart").eval_indices(d),
    "sorted_longest_first": get_strategy("smart").eval_indices(d)[::-1],
    "length_grouped": get_strategy("length_grouped").eval_indices(d),
}
batches = {k: build_batches(get_strategy("smart"), test, v, *pad) for k, v in orders.items()}
model = helpers.load_model(settings)
device = torch.device("cpu")
helpers.evaluate(model, batches["length_grouped"][0][:3], device, amp=False, verbose=False)  # warm-up
out = {k: [] for k in orders}
for r in range(2):
    for k in (list(orders) if r == 0 else list(orders)[::-1]):
        c = process_counters()
        res = helpers.evaluate(model, batches[k][0], device, amp=False, verbose=False)
        used = counters_since(c)
        out[k].append(dict(seconds=res["seconds"], cpu_seconds=used["cpu_seconds"], page_faults=used["page_faults"],
                           tokens=batches[k][1]["processed_tokens"]))
        print(k, round(res["seconds"], 2), round(used["cpu_seconds"], 1), used["page_faults"], batches[k][1]["processed_tokens"], flush=True)
json.dump(dict(machine=machine_info(device), passes=out), open(sys.argv[3], "w"), indent=1)
