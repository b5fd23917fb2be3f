"""Progress helpers (good_update_interval, format_time, Progress) and get_settings."""
import math
import re

import pytest
from hypothesis import given, settings, strategies as st

import helpers
from support import environment, memory, models

HMS = re.compile(r"^(\d+):([0-5]\d):([0-5]\d)$")


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 10**9), desired=st.integers(1, 1000))
def test_update_interval_is_round_and_prints_about_the_desired_number_of_lines(total, desired):
    interval = helpers.good_update_interval(total, desired)
    assert isinstance(interval, int) and interval >= 1
    # 1, 2 or 5 times a power of ten
    mantissa = interval / 10 ** math.floor(math.log10(interval))
    assert mantissa in (1, 2, 5)
    if total > desired:  # enough iterations to print that many lines
        lines = total / interval
        assert 0.6 * desired <= lines <= 1.5 * desired + 1e-9


@pytest.mark.parametrize("total", [0, 1, 2, 5, 9])
def test_update_interval_on_tiny_or_zero_totals_is_one(total):
    assert helpers.good_update_interval(total, 10) == 1


def test_update_interval_rejects_nonsense():
    with pytest.raises(ValueError, match="total_iters"):
        helpers.good_update_interval(-1, 10)
    with pytest.raises(ValueError, match="num_desired_updates"):
        helpers.good_update_interval(100, 0)


@settings(max_examples=200, deadline=None)
@given(seconds=st.floats(0, 86_399.4, allow_nan=False))
def test_format_time_is_hh_mm_ss_of_the_rounded_seconds(seconds):
    match = HMS.match(helpers.format_time(seconds))
    assert match, helpers.format_time(seconds)
    h, m, s = map(int, match.groups())
    assert h * 3600 + m * 60 + s == int(round(seconds))


@pytest.mark.parametrize("seconds, expected", [(0, "0:00:00"), (0.4, "0:00:00"), (59.6, "0:01:00"),
                                               (3661, "1:01:01"), (-5, "0:00:00")])
def test_format_time_examples(seconds, expected):
    assert helpers.format_time(seconds) == expected


def test_progress_prints_about_the_requested_number_of_lines(capsys):
    progress = helpers.Progress(1000, "batch", updates=10)
    for done in range(1, 1001):
        progress.update(done)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 10
    assert "1,000/1,000" in lines[-1] and "remaining 0:00:00" in lines[-1]


@pytest.mark.parametrize("total", [0, 1, 3])
def test_progress_on_tiny_totals_prints_a_line_per_item_and_nothing_for_none(total, capsys):
    progress = helpers.Progress(total, "step", updates=10)
    for done in range(0, total + 1):  # update(0): nothing done yet, nothing to report
        progress.update(done)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == [f"{done}/{total}" for done in range(1, total + 1)]


def test_progress_disabled_prints_nothing(capsys):
    progress = helpers.Progress(10, "x", enabled=False)
    for done in range(1, 11):
        progress.update(done)
    assert capsys.readouterr().out == ""


def test_tiny_profile_settings_and_keyword_overrides():
    tiny = helpers.get_settings("tiny")
    assert tiny.profile == "tiny" and tiny.model_name == models.TINY_MODEL
    assert tiny.data_source == "synthetic"
    assert helpers.get_settings("tiny", batch_size=8).batch_size == 8
    full = helpers.get_settings("full")
    assert (full.max_len, full.batch_size, full.learning_rate) == (400, 16, 5e-5)


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("SMART_BATCHING_TRAIN_SIZE", "all")
    monkeypatch.setenv("SMART_BATCHING_TEST_SIZE", "64")
    monkeypatch.setenv("SMART_BATCHING_EPOCHS", "2")
    monkeypatch.setenv("SMART_BATCHING_DATA", "/some/aclImdb")
    s = helpers.get_settings("tiny")
    assert (s.train_size, s.test_size, s.epochs, s.data_source) == (None, 64, 2, "/some/aclImdb")
    # keyword overrides win over the environment
    assert helpers.get_settings("tiny", epochs=1).epochs == 1


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("SMART_BATCHING_PROFILE", "tiny")
    assert helpers.get_settings().profile == "tiny"
    monkeypatch.setenv("SMART_BATCHING_PROFILE", "huge")
    with pytest.raises(ValueError, match="SMART_BATCHING_PROFILE='huge': expected 'full', 'tiny' or 'auto'"):
        helpers.get_settings()
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        helpers.get_settings("huge")


@pytest.mark.parametrize("colab, cuda, trains, expected, why", [
    (True, False, True, "tiny", "this Colab runtime has no GPU"),  # the full recipe would not finish
    (False, False, True, "tiny", "this machine has no GPU"),       # a laptop, CI
    (True, True, True, "full", "there is a CUDA GPU"),
    (False, True, True, "full", "there is a CUDA GPU"),
    (True, False, False, "full", "trains no model"),  # notebooks 01-03: real reviews on a CPU too
    (False, False, False, "full", "trains no model"),
    (False, True, False, "full", "there is a CUDA GPU"),
])
def test_auto_profile_says_what_it_chose_and_why(monkeypatch, capsys, colab, cuda, trains, expected, why):
    monkeypatch.delenv("SMART_BATCHING_PROFILE", raising=False)
    monkeypatch.setattr(environment, "in_colab", lambda: colab)
    monkeypatch.setattr(helpers.torch.cuda, "is_available", lambda: cuda)
    assert helpers.get_settings(trains=trains).profile == expected
    assert helpers.get_settings("auto", trains=trains).profile == expected
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], lines  # one line per call
    assert lines[0].startswith(f"Profile '{expected}' (auto): ") and why in lines[0], lines[0]
    other = "full" if expected == "tiny" else "tiny"
    if not cuda:  # how to get the other profile
        assert f'profile="{other}"' in lines[0], lines[0]


def test_a_profile_from_the_environment_wins_over_trains_false(monkeypatch, capsys):
    """CI's offline run (SMART_BATCHING_PROFILE=tiny) stays tiny in the notebooks that train nothing."""
    monkeypatch.setenv("SMART_BATCHING_PROFILE", "tiny")
    monkeypatch.setattr(helpers.torch.cuda, "is_available", lambda: False)
    assert helpers.get_settings(trains=False).profile == "tiny"
    assert capsys.readouterr().out == ""


def test_outputs_go_to_the_working_folder_where_the_package_is_installed(monkeypatch, tmp_path):
    monkeypatch.delenv("SMART_BATCHING_OUTPUT", raising=False)
    assert environment.output_dir() == environment.REPO_ROOT / "outputs"  # a clone
    monkeypatch.setattr(environment, "REPO_ROOT", tmp_path / "site-packages")  # no pyproject.toml
    monkeypatch.chdir(tmp_path)
    assert environment.output_dir("figures") == tmp_path / "outputs" / "figures"
    assert (tmp_path / "outputs" / "figures").is_dir()


def test_asking_for_a_profile_in_colab_without_a_gpu_is_obeyed_silently(monkeypatch, capsys):
    monkeypatch.setattr(environment, "in_colab", lambda: True)
    monkeypatch.setattr(helpers.torch.cuda, "is_available", lambda: False)
    assert helpers.get_settings("full").profile == "full"
    monkeypatch.setenv("SMART_BATCHING_PROFILE", "full")
    assert helpers.get_settings().profile == "full"
    assert capsys.readouterr().out == ""
    # The same runtime left to `auto` does speak: the silence above is the choice's, not the set-up's.
    monkeypatch.setenv("SMART_BATCHING_PROFILE", "auto")
    assert helpers.get_settings().profile == "tiny"
    assert "Profile 'tiny'" in capsys.readouterr().out


@pytest.mark.parametrize("variable, value, accepts", [
    ("SMART_BATCHING_TRAIN_SIZE", "abc", "a whole number >= 1 or 'all'"),
    ("SMART_BATCHING_TRAIN_SIZE", "0", "a whole number >= 1 or 'all'"),
    ("SMART_BATCHING_TRAIN_SIZE", "-5", "a whole number >= 1 or 'all'"),
    ("SMART_BATCHING_TEST_SIZE", "2.5", "a whole number >= 1 or 'all'"),
    ("SMART_BATCHING_TEST_SIZE", "1e3", "a whole number >= 1 or 'all'"),
    ("SMART_BATCHING_EPOCHS", "0", "a whole number >= 1"),
    ("SMART_BATCHING_EPOCHS", "all", "a whole number >= 1"),
    ("SMART_BATCHING_EPOCHS", "one", "a whole number >= 1"),
    ("SMART_BATCHING_PROFILE", "ful", "'full', 'tiny' or 'auto'"),
    ("SMART_BATCHING_DATA", "tdfs", "auto, tfds, download, synthetic or the path of an aclImdb folder"),
])
def test_a_bad_environment_value_names_its_variable_and_what_it_accepts(monkeypatch, variable, value, accepts):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError) as error:
        helpers.get_settings()
    message = str(error.value)
    assert message.startswith(f"{variable}={value!r}: expected "), message
    assert accepts in message, message


@pytest.mark.parametrize("value, expected", [("all", None), ("ALL", None), ("none", None), (" 64 ", 64),
                                             ("1", 1), ("", 800)])
def test_good_size_values_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("SMART_BATCHING_TRAIN_SIZE", value)
    assert helpers.get_settings("tiny").train_size == expected  # "": unset, the profile's 800


@pytest.mark.parametrize("name, value, match", [
    ("train_size", 0, "train_size must be >= 1, got 0"),
    ("test_size", -1, "test_size must be >= 1, got -1"),
    ("train_size", "2000", "train_size must be a whole number, got '2000'"),
    ("epochs", 1.5, "epochs must be a whole number, got 1.5"),
    ("max_len", True, "max_len must be a whole number, got True"),
])
def test_bad_keyword_sizes_are_rejected(name, value, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        helpers.get_settings("tiny", **{name: value})


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown setting"):
        helpers.get_settings("tiny", bacth_size=3)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        helpers.get_settings("tiny", batch_size=0)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        helpers.get_settings("tiny", epochs=0)


def test_describe_lists_every_setting_with_its_value():
    import dataclasses

    settings = helpers.get_settings("tiny")
    lines = settings.describe().splitlines()
    fields = dataclasses.fields(helpers.Settings)
    assert len(lines) == len(fields)
    for line, field in zip(lines, fields):
        assert line.split(None, 1) == [field.name, str(getattr(settings, field.name))]


def test_random_bert_base_has_bert_base_shape_and_borrows_a_tokenizer():
    settings = helpers.get_settings("full", model_name=models.RANDOM_BERT_BASE,
                                    tokenizer_name=models.TINY_MODEL)
    model = helpers.load_model(settings)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (12, 768, 30522)
    assert helpers.load_tokenizer(settings).pad_token_id == 0
    with pytest.raises(ValueError, match="tokenizer_name"):
        helpers.load_tokenizer(helpers.get_settings("full", model_name=models.RANDOM_BERT_BASE))


def test_comparison_sizes_come_from_the_profile(monkeypatch):
    """Notebooks that train several models (05-07) and the benchmark take their subset sizes from
    the profile, capped by train_size / test_size, instead of numbers of their own."""
    monkeypatch.delenv("SMART_BATCHING_TRAIN_SIZE", raising=False)
    monkeypatch.delenv("SMART_BATCHING_TEST_SIZE", raising=False)
    monkeypatch.delenv("SMART_BATCHING_COMPARISON_SIZE", raising=False)
    assert helpers.get_settings("full").comparison_sizes() == (2000, 2000)
    assert helpers.get_settings("tiny").comparison_sizes() == (800, 400)  # the tiny profile's own
    assert helpers.get_settings("full", train_size=500).comparison_sizes() == (500, 2000)
    assert helpers.get_settings("full", comparison_size=None).comparison_sizes() == (None, None)
    monkeypatch.setenv("SMART_BATCHING_COMPARISON_SIZE", "all")
    assert helpers.get_settings("full").comparison_sizes() == (None, None)
    monkeypatch.setenv("SMART_BATCHING_COMPARISON_SIZE", "300")
    assert helpers.get_settings("full").comparison_sizes() == (300, 300)
    monkeypatch.setenv("SMART_BATCHING_COMPARISON_SIZE", "0")
    with pytest.raises(ValueError, match="SMART_BATCHING_COMPARISON_SIZE='0': expected a whole number >= 1 or 'all'"):
        helpers.get_settings("full")


def test_memory_peak_follows_an_allocation_and_resets():
    """reset_peak_memory / peak_memory_mb measure per phase: a 256 MiB allocation raises the peak
    by about that much, and after a reset the peak falls back once it is freed."""
    import numpy as np

    if memory.process_memory_mb("VmHWM") is None:
        pytest.skip("no /proc/self/status (not Linux): the peak is the process's lifetime peak")
    memory.reset_peak_memory()
    before = memory.peak_memory_mb()
    assert before == pytest.approx(memory.process_memory_mb("VmRSS"), rel=0.05)  # peak == now after a reset
    block = np.ones(256 * 2**20 // 8)  # 256 MiB, every page touched
    assert memory.peak_memory_mb() - before >= 240
    del block
    memory.reset_peak_memory()
    assert memory.peak_memory_mb() - before < 64
