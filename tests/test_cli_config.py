"""Command-line options come from the configuration fields (defaults and help written once)."""

from __future__ import annotations

import dataclasses

from lowdim import defaults
from lowdim.cli import build_parser
from lowdim.lora.cli import _CONFIG_OPTIONS
from lowdim.lora.finetune import FinetuneConfig


def _finetune_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["finetune"]


def test_finetune_options_take_the_config_defaults_and_help():
    parser = _finetune_parser()
    args = parser.parse_args(["--model", "m"])
    fields = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
    by_dest = {a.dest: a for a in parser._actions}
    for name in _CONFIG_OPTIONS:
        default = fields[name].default
        expected = list(default) if isinstance(default, tuple) else default
        assert getattr(args, name) == expected, name
        assert fields[name].metadata["help"] in by_dest[name].help
    # the shared defaults reach the command line
    assert (args.gamma, args.init_scale, args.depth, args.rank) == (
        defaults.LORA_GAMMA, defaults.INIT_SCALE, defaults.DEPTH, defaults.LORA_RANK
    )
    args = parser.parse_args(["--model", "m", "--target-modules", "query", "value", "--gamma", "0.5"])
    assert args.target_modules == ["query", "value"] and args.gamma == 0.5
