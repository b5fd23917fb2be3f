"""benchmarks/step_cost.py: the prediction arithmetic, exactly, and the curve's shape; never its speed."""
import math

import numpy as np
import pytest
import torch

import helpers
from benchmarks import step_cost

# A compute-bound curve shaped like a 6-layer BERT's on two CPU cores (batch 16, training steps),
# with made-up evaluation steps.
COSTS = dict(widths=[64, 128, 256, 400], batch_size=16, train_seconds=[0.71, 1.47, 4.19, 10.22],
             eval_seconds=[0.2, 0.4, 1.0, 2.2])


def curve(widths, seconds, batch_size=16, repeats=None):
    costs = dict(widths=widths, batch_size=batch_size, train_seconds=seconds, eval_seconds=seconds)
    if repeats is not None:
        costs["train_repeats"] = repeats
    return costs


def test_measured_widths_cost_what_was_measured():
    batches = [(64, 16), (128, 16), (256, 16), (400, 16)]
    assert step_cost.predict_epoch_seconds(COSTS, batches) == pytest.approx(0.71 + 1.47 + 4.19 + 10.22)
    assert step_cost.predict_epoch_seconds(COSTS, batches, "eval") == pytest.approx(3.8)
    assert step_cost.predict_epoch_seconds(COSTS, []) == 0


def test_linear_between_widths_and_rows_scale_the_step():
    assert step_cost.step_seconds(COSTS, 96) == pytest.approx((0.71 + 1.47) / 2)
    assert step_cost.step_seconds(COSTS, 160) == pytest.approx(1.47 + (4.19 - 1.47) / 4)
    # 8 rows cost half a batch of 16 at the same width; 40 rows two and a half.
    assert step_cost.predict_epoch_seconds(COSTS, [(128, 8)]) == pytest.approx(0.735)
    assert step_cost.predict_epoch_seconds(COSTS, [(256, 40)]) == pytest.approx(4.19 * 2.5)
    epoch = [(400, 16)] * 10 + [(96, 16), (128, 4)]
    assert step_cost.predict_epoch_seconds(COSTS, epoch) == pytest.approx(102.2 + 1.09 + 0.3675)


def test_below_the_shortest_width_clamps_above_the_longest_extends_the_last_segment():
    assert step_cost.step_seconds(COSTS, 1) == pytest.approx(0.71)
    assert step_cost.step_seconds(COSTS, 63) == pytest.approx(0.71)
    slope = (10.22 - 4.19) / (400 - 256)
    assert step_cost.step_seconds(COSTS, 544) == pytest.approx(10.22 + 144 * slope)
    assert step_cost.step_seconds(COSTS, 401) == pytest.approx(10.22 + slope)
    single = curve([100], [2.0])
    assert step_cost.step_seconds(single, 50) == step_cost.step_seconds(single, 500) == 2.0


def test_past_a_falling_last_segment_the_time_stays_flat():
    noisy = curve([10, 20, 30], [1.0, 2.0, 1.8])  # noise: the last segment falls
    assert step_cost.step_seconds(noisy, 25) == pytest.approx(1.9)
    assert step_cost.step_seconds(noisy, 60) == 1.8


def test_shapes_from_indices_pad_as_the_batches_do():
    lengths = np.array([5, 10, 3, 8, 7])
    indices = [np.array([0, 1]), np.array([2, 3, 4])]
    assert step_cost.shapes_from_indices(lengths, indices) == [(10, 2), (8, 3)]
    assert step_cost.shapes_from_indices(lengths, indices, pad_to=16) == [(16, 2), (16, 3)]
    assert step_cost.shapes_from_indices(lengths, indices, pad_to_multiple_of=4) == [(12, 2), (8, 3)]
    ids = [[1] * n for n in lengths]
    batches = helpers.batches_from_indices(ids, [0, 1, 0, 1, 0], indices, pad_id=0, pad_to_multiple_of=4)
    assert [tuple(b["input_ids"].shape[::-1]) for b in batches] == [(12, 2), (8, 3)]


def test_default_widths_run_from_an_eighth_of_max_len_to_max_len():
    assert step_cost.default_widths(400) == [50, 138, 225, 312, 400]
    assert step_cost.default_widths(128) == [16, 44, 72, 100, 128]
    small = step_cost.default_widths(8)
    assert small == sorted(set(small)) and small[0] >= 2 and small[-1] == 8


def test_read_curve_by_its_stated_rule():
    issue = step_cost.read_curve(COSTS)
    assert "compute-bound" in issue and "or faster" in issue and "14.4x the time for 6.2x the tokens" in issue
    assert step_cost.curve_elasticity(curve([50, 400], [1.0, 8.0])) == pytest.approx(1.0)
    flat = step_cost.read_curve(curve([50, 400], [1.0, 1.3]))
    assert "overhead-bound" in flat and "saves little" in flat
    middle = step_cost.read_curve(curve([50, 400], [1.0, 4.0]))  # e = log 4 / log 8 = 0.67
    assert "partly overhead-bound" in middle
    assert "An evaluation step" in step_cost.read_curve(COSTS, "eval")
    assert "Caution" not in issue
    noisy = curve([50, 400], [1.0, 8.0], repeats=[[1.0, 1.0], [8.0, 20.0]])
    assert step_cost.noise(noisy) == pytest.approx(2.5) and "Caution" in step_cost.read_curve(noisy)


def test_synthetic_batch_is_real_looking_and_unpadded_unless_asked():
    batch = step_cost.synthetic_batch(12, 4, vocab_size=2000, seed=1)
    assert batch["input_ids"].shape == (4, 12) and batch["attention_mask"].all()
    assert batch["input_ids"].min() >= 1000 and batch["input_ids"].max() < 2000
    assert torch.equal(batch["input_ids"], step_cost.synthetic_batch(12, 4, 2000, seed=1)["input_ids"])
    padded = step_cost.synthetic_batch(12, 4, vocab_size=2000, pad_share=0.25)
    assert padded["attention_mask"][0].all() and padded["attention_mask"][1:, -3:].sum() == 0
    assert padded["attention_mask"].sum() == 12 + 3 * 9


def test_measure_step_costs_on_the_tiny_model():
    """The shape of a measurement (the numbers themselves are this machine's business)."""
    settings = helpers.get_settings("tiny", batch_size=4)
    costs = step_cost.measure_for_settings(settings, torch.device("cpu"), widths=[16, 8], repeats=2,
                                           warmup=0, verbose=False)
    assert costs["widths"] == [8, 16] and costs["batch_size"] == 4 and costs["repeats"] == 2
    for phase in ("train", "eval"):
        seconds = costs[f"{phase}_seconds"]
        assert len(seconds) == 2 and all(s > 0 for s in seconds)
        assert all(len(r) == 2 for r in costs[f"{phase}_repeats"])
        assert seconds == [float(np.median(r)) for r in costs[f"{phase}_repeats"]]
        assert costs[f"{phase}_tokens_per_second"] == pytest.approx([4 * w / s for w, s in zip([8, 16], seconds)])
    assert step_cost.predict_epoch_seconds(costs, [(8, 4), (16, 4)]) == pytest.approx(sum(costs["train_seconds"]))
    assert isinstance(step_cost.read_curve(costs), str)


def test_bad_widths_are_refused():
    with pytest.raises(ValueError):
        step_cost.measure_step_costs(None, None, None, torch.device("cpu"), [], 4)
    with pytest.raises(ValueError):
        step_cost.curve_elasticity(curve([50], [1.0]))


def test_plot_step_costs_draws_time_and_throughput():
    import matplotlib

    matplotlib.use("Agg")
    costs = dict(COSTS, train_tokens_per_second=[16 * w / s for w, s in zip(COSTS["widths"], COSTS["train_seconds"])],
                 eval_tokens_per_second=[16 * w / s for w, s in zip(COSTS["widths"], COSTS["eval_seconds"])])
    fig = step_cost.plot_step_costs(costs)
    time_ax, rate_ax = fig.axes
    assert [list(line.get_xdata()) for line in time_ax.lines] == [COSTS["widths"]] * 2
    assert math.isclose(rate_ax.lines[0].get_ydata()[0], 16 * 64 / 0.71)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_the_command_line_writes_the_curve(tmp_path, capsys):
    import matplotlib.pyplot as plt

    costs = step_cost.main(["--profile", "tiny", "--batch-size", "4", "--widths", "8,16", "--repeats", "1",
                            "--out", str(tmp_path)])
    for bad in (["--widths", "8,x"], ["--repeats", "0"], ["--batch-size", "0"]):
        with pytest.raises(SystemExit):
            step_cost.main(["--profile", "tiny", *bad])
    plt.close("all")
    assert costs["widths"] == [8, 16] and costs["batch_size"] == 4
    saved = __import__("json").loads((tmp_path / "step_costs.json").read_text())
    assert saved["train_seconds"] == costs["train_seconds"]
    assert saved["machine"]["allocator"].startswith(("glibc malloc", "tcmalloc", "jemalloc", "mimalloc"))
    assert len(saved["train_page_faults"]) == len(saved["train_system_seconds"]) == 2
    assert (tmp_path / "step_costs.png").stat().st_size > 1000
    assert "A training step of 4 x 16 tokens" in capsys.readouterr().out
