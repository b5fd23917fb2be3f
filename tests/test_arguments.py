"""support/arguments.py: an option not given never overrides the profile or the environment."""
import argparse

import pytest

import helpers
from support.arguments import add_settings_options, given_settings, whole_numbers


def parse(argv, *names, **defaults):
    parser = argparse.ArgumentParser()
    add_settings_options(parser, *names, **defaults)
    return helpers.get_settings(**given_settings(parser.parse_args(argv)))


def test_options_not_given_leave_the_profile_and_the_environment(monkeypatch):
    monkeypatch.setenv("SMART_BATCHING_EPOCHS", "5")
    settings = parse(["--profile", "tiny"], "profile", "epochs", "batch_size", "train_size")
    assert settings.epochs == 5 and settings.batch_size == 16 and settings.train_size == 800


def test_options_given_win_and_all_means_the_whole_split(monkeypatch):
    monkeypatch.setenv("SMART_BATCHING_EPOCHS", "5")
    settings = parse(["--profile", "tiny", "--epochs", "2", "--train-size", "all", "--lr", "0.1"],
                     "profile", "epochs", "train_size", "learning_rate")
    assert (settings.epochs, settings.train_size, settings.learning_rate) == (2, None, 0.1)


def test_a_default_applies_only_when_the_option_is_absent():
    assert parse([], "profile", "max_len", max_len=64).max_len == 64
    assert parse(["--max-len", "32"], "max_len", max_len=64).max_len == 32


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--epochs", "two"], ["--lr", "-1"], ["--lr", "inf"],
                                  ["--train-size", "-3"], ["--data", "nowhere"]])
def test_bad_values_are_refused_by_name(argv, capsys):
    with pytest.raises(SystemExit):
        parse(argv, "epochs", "learning_rate", "train_size", "data_source")
    assert argv[0] in capsys.readouterr().err


def test_an_unknown_setting_is_an_error():
    with pytest.raises(ValueError, match="no command-line option"):
        add_settings_options(argparse.ArgumentParser(), "batch_sizes")


def test_whole_numbers_are_sorted_once_and_words_pass():
    parse = whole_numbers(words=("auto", "none"))
    assert parse("32,8, 16,8") == [8, 16, 32] and parse("AUTO") == "auto" and parse("none") == "none"
    for bad in ("8,x", "0", "-4", "8.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="whole number"):
            parse(bad)
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounding", type=whole_numbers(), default=[])
    assert parser.parse_args([]).rounding == [] and parser.parse_args(["--rounding", "16,8"]).rounding == [8, 16]
