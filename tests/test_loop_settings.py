"""How the training and evaluation loops run, checked on the CPU: which attention backends they
allow, that they do not read a value back from the device in every step, width bucketing, the
torch.compile opt-in and the mixed-precision choice. These are the loop's GPU behaviour that can
be asserted without a GPU; benchmarks/gpu_check.py measures what they do to time on one."""
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import helpers
from support import device as device_support


@pytest.fixture(scope="module")
def tiny_setup(tiny_tokenizer):
    settings = helpers.get_settings("tiny", epochs=1)
    texts, labels = helpers.load_imdb("train", source="synthetic", limit=96, seed=1, verbose=False)
    ids = helpers.tokenize_without_padding(texts, tiny_tokenizer, settings.max_len, verbose=False)
    pad_id = tiny_tokenizer.pad_token_id
    batches = helpers.smart_batches_from_ids(ids, labels, 16, pad_id, seed=0)
    return settings, batches


@pytest.fixture
def attention_calls(monkeypatch):
    """Records, for every call of scaled_dot_product_attention, which backends were allowed."""
    calls = []
    original = F.scaled_dot_product_attention

    def recording(*args, **kwargs):
        calls.append(dict(cudnn=torch.backends.cuda.cudnn_sdp_enabled(),
                          flash=torch.backends.cuda.flash_sdp_enabled(),
                          efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
                          math=torch.backends.cuda.math_sdp_enabled()))
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return calls


def test_the_loops_run_attention_without_cudnn(tiny_setup, attention_calls):
    settings, batches = tiny_setup
    model = helpers.load_model(settings)
    device = torch.device("cpu")
    assert torch.backends.cuda.cudnn_sdp_enabled()  # PyTorch's default, outside our loops
    helpers.fine_tune(model, lambda epoch: batches[:2], settings, device, verbose=False)
    trained = len(attention_calls)
    helpers.predict(model, batches[:2], device, verbose=False)
    predicted = len(attention_calls) - trained
    optimizer, _ = helpers.make_optimizer(model, settings, 1)
    helpers.step_peak_memory(model, batches[0], device, optimizer)
    layers = model.config.num_hidden_layers
    assert trained == 2 * layers and predicted == 2 * layers  # BERT really went through SDPA
    assert len(attention_calls) == 5 * layers
    allowed = dict(cudnn=False, flash=True, efficient=True, math=True)
    assert all(call == allowed for call in attention_calls), attention_calls
    assert torch.backends.cuda.cudnn_sdp_enabled()  # and the loops put the default back


def test_attention_backends_none_leaves_pytorch_to_choose(monkeypatch):
    with helpers.attention_backends():
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    monkeypatch.setattr(device_support, "ATTENTION_BACKENDS", None)
    with helpers.attention_backends():
        assert torch.backends.cuda.cudnn_sdp_enabled()


def test_no_value_is_read_back_from_the_device_in_every_step(tiny_setup, monkeypatch):
    """On a GPU, reading a tensor's value (.item(), .tolist(), .cpu()) waits for all queued work:
    once per step, it would stall the pipeline. The loops may read back only at progress lines
    and at the end."""
    settings, batches = tiny_setup
    reads = []  # the reads helpers.py makes (AdamW reads its host-side step counters; no GPU wait)
    for name in ("item", "tolist", "cpu"):
        original = getattr(torch.Tensor, name)

        def reading(self, *args, _original=original, _name=name, **kwargs):
            if sys._getframe(1).f_code.co_filename == helpers.__file__:
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, reading)
    model = helpers.load_model(settings)
    optimizer, scheduler = helpers.make_optimizer(model, settings, len(batches))
    device = torch.device("cpu")
    result = helpers.train_epoch(model, batches, optimizer, scheduler, device, verbose=False)
    assert len(result["losses"]) == len(batches) == 6
    assert len(reads) <= 2, reads  # once at the end, not once per step
    reads.clear()
    helpers.predict(model, batches, device, verbose=False)
    assert len(reads) <= 2, reads
    reads.clear()
    helpers.train_epoch(model, batches, optimizer, scheduler, device, verbose=True)
    progress_lines = 6  # good_update_interval(6, 10) == 1: a line each step when verbose
    assert len(reads) <= progress_lines + 2


def test_losses_read_at_the_end_are_the_per_step_losses(tiny_setup):
    """The device-side losses, read once at the end, are what .item() in each step would give."""
    settings, batches = tiny_setup
    runs = []
    for per_step_item in (False, True):
        helpers.set_seed(0)
        model = helpers.load_model(settings)
        optimizer, scheduler = helpers.make_optimizer(model, settings, len(batches))
        if not per_step_item:
            runs.append(helpers.train_epoch(model, batches, optimizer, scheduler,
                                            torch.device("cpu"), verbose=False)["losses"])
            continue
        model.train()
        losses = []
        for batch in batches:  # the recipe's loop: loss.item() every step
            optimizer.zero_grad()
            loss = model(**{k: v for k, v in batch.items() if k != "index"}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        runs.append(losses)
    assert all(isinstance(x, float) for x in runs[0]) and len(runs[0]) == len(batches)
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-6)


def imdb_like_lengths(n=25_000, max_len=400, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(230), 0.6, n).astype(int), 13, max_len)


def test_bucketing_bounds_the_number_of_batch_widths():
    lengths = imdb_like_lengths()
    batches = helpers.smart_batch_indices(lengths, 16, seed=321)
    widths = {int(lengths[b].max()) for b in batches}
    bucketed = {helpers.padded_width(int(lengths[b].max()), pad_to_multiple_of=8) for b in batches}
    assert len(widths) > 250  # nearly every length from 13 to 400 shows up as a width
    assert len(bucketed) <= 400 // 8 and all(w % 8 == 0 for w in bucketed)
    # the tokens it adds are counted: at most 7 per sequence
    plain = helpers.count_tokens(lengths, batches)
    rounded = helpers.count_tokens(lengths, batches, pad_to_multiple_of=8)
    assert rounded["real_tokens"] == plain["real_tokens"]
    assert 0 < rounded["processed_tokens"] - plain["processed_tokens"] <= 7 * len(lengths)


def test_bucketing_in_padding_collator_and_counter_agree(tiny_tokenizer):
    texts, labels = helpers.load_imdb("train", source="synthetic", limit=64, seed=2, verbose=False)
    ids = helpers.tokenize_without_padding(texts, tiny_tokenizer, 128, verbose=False)
    pad_id = tiny_tokenizer.pad_token_id
    batches = helpers.smart_batches_from_ids(ids, labels, 16, pad_id, seed=0, pad_to_multiple_of=8)
    inputs, masks = [b["input_ids"] for b in batches], [b["attention_mask"] for b in batches]
    indices = [b["index"].tolist() for b in batches]
    assert all(x.shape[1] % 8 == 0 for x in inputs)
    lengths = np.array([len(s) for s in ids])
    counts = helpers.count_tokens(lengths, indices, pad_to_multiple_of=8)
    assert counts["processed_tokens"] == sum(m.numel() for m in masks)
    assert counts["real_tokens"] == sum(int(m.sum()) for m in masks)
    collated = helpers.PadCollator(pad_id, pad_to_multiple_of=8)([{"input_ids": ids[i]} for i in indices[0]])
    torch.testing.assert_close(collated["input_ids"], inputs[0])
    assert helpers.padded_width(17, pad_to_multiple_of=None) == 17
    assert helpers.padded_width(16, pad_to_multiple_of=8) == 16
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        helpers.PadCollator(pad_id, pad_to_multiple_of=0)


def test_compile_is_an_opt_in_with_dynamic_shapes(tiny_setup, monkeypatch):
    settings, batches = tiny_setup
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: (calls.append(kw), model)[1])
    model = helpers.load_model(settings)
    helpers.fine_tune(model, lambda epoch: batches[:1], settings, torch.device("cpu"), verbose=False)
    assert calls == []  # off by default
    compiled = helpers.get_settings("tiny", epochs=1, compile=True)
    helpers.fine_tune(model, lambda epoch: batches[:1], compiled, torch.device("cpu"), verbose=False)
    assert calls == [dict(dynamic=True)]


@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                                  ((9, 0), torch.bfloat16), ((6, 0), torch.float16)])
def test_bfloat16_only_where_the_gpu_has_it(monkeypatch, capability, expected):
    """A T4 (7.5) reports bf16 as supported through emulation; we use float16 there."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    assert helpers.autocast_dtype(torch.device("cuda")) == expected
    assert helpers.autocast_dtype(torch.device("cpu")) is None


def test_optimizer_is_not_fused_on_the_cpu(tiny_setup):
    settings, _ = tiny_setup
    optimizer, _ = helpers.make_optimizer(helpers.load_model(settings), settings, 1)
    assert not optimizer.defaults.get("fused")


def test_weight_decay_is_the_recipes_zero_unless_set(tiny_setup):
    """torch.optim.AdamW decays by 0.01 unless told; the recipe's transformers.AdamW used 0.0."""
    settings, _ = tiny_setup
    model = helpers.load_model(settings)
    assert helpers.Settings().weight_decay == 0.0 and helpers.get_settings("full").weight_decay == 0.0
    optimizer, _ = helpers.make_optimizer(model, settings, 10)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.0]
    decayed, _ = helpers.make_optimizer(model, helpers.get_settings("tiny", weight_decay=0.01), 10)
    assert [group["weight_decay"] for group in decayed.param_groups] == [0.01]
