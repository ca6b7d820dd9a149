"""The command-line tools refuse a bad count or seed as a usage error (exit 2, the bad value named) before any
work or writing starts."""

from __future__ import annotations

import argparse

import pytest

from recare_core.cli_args import non_negative_int, positive_int
from recare_core.toyworld.main_job import main as main_job_main
from recare_core.toyworld.train import main as train_main
from script_loading import load_benchmark_script


def test_argument_types_take_whole_numbers_in_range_and_name_what_is_wrong():
    assert positive_int("3") == 3 and non_negative_int("0") == 0
    for kind, bad, message in ((positive_int, "0", "less than 1"), (positive_int, "-2", "less than 1"),
                               (positive_int, "many", "not a whole number"), (non_negative_int, "-1", "negative"),
                               (non_negative_int, "1.5", "not a whole number")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            kind(bad)


def _frontier_main():
    return load_benchmark_script("frontier").main


@pytest.mark.parametrize("tool, argv", [
    ("frontier", ["run", "--jobs", "0"]), ("frontier", ["run", "--images", "0"]),
    ("frontier", ["run", "--seeds", "0", "-1"]),
    ("train", ["--threads", "0"]), ("train", ["--seed", "-3"]),
    ("main_job", ["--images", "0"]), ("main_job", ["--seed", "x"]),
])
def test_command_line_tools_refuse_bad_numbers_before_writing(tmp_path, capsys, tool, argv):
    out = tmp_path / "out"
    main = {"frontier": _frontier_main, "train": lambda: train_main, "main_job": lambda: main_job_main}[tool]()
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--out", str(out)])
    option = next(a for a in argv if a.startswith("--"))
    assert stopped.value.code == 2 and f"error: argument {option}" in capsys.readouterr().err
    assert not out.exists()
