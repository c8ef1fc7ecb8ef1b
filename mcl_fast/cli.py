"""The `mcl-fast` command: `mcl-fast COMMAND [options]`.

Each command lives in its own module, which exposes `add_args(parser)` and `run(args) -> int`.
Only the chosen command's module is imported (so `mcl-fast prepare` never imports torch or
DALI), and a command whose module is not in this installation says so plainly, without a
traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from ._io import run_command

# name -> (module, one-line help)
COMMANDS = {
    "prepare": ("mcl_fast.motion.prepare", "videos -> optical flow -> motion maps -> a motion store (resumable)"),
    "demo": ("mcl_fast.demo", "prepare a few videos and draw their motion maps and sampled tubelets"),
    "transcode": ("mcl_fast.data.transcode", "re-encode videos with short closed GOPs for fast random access"),
    "pretrain": ("mcl_fast.train", "MCL self-supervised pretraining"),
    "eval": ("mcl_fast.eval.cli", "linear probe, retrieval, fine-tuning, Grad-CAM"),
    "models": ("mcl_fast.models.info", "backbones: parameters, multiply-adds, last-stage shape, MAL tap layer"),
    "verify": ("mcl_fast.verify", "check motion stores and checkpoints against their checksums; list what is damaged"),
}


class CommandUnavailable(Exception):
    """A command whose module is missing or cannot be imported."""


def load_command(name: str):
    """Import the command's module, or raise CommandUnavailable with a readable reason."""
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise CommandUnavailable(f"'{name}' is not available in this installation "
                                     f"(its module {module_name} is not there yet)") from None
        raise CommandUnavailable(f"'{name}' needs the Python package '{e.name}', which is not installed") from None
    except ImportError as e:
        raise CommandUnavailable(f"'{name}' cannot be loaded: {e}") from None
    missing = [f for f in ("add_args", "run") if not callable(getattr(module, f, None))]
    if missing:
        raise CommandUnavailable(f"'{name}' is not available: {module_name} has no {' or '.join(missing)}()")
    return module


def _chosen(argv: list[str]) -> str | None:
    """The command named in argv (the first argument that is not an option), if known."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; `command`'s options are added (importing its module) when it is given."""
    parser = argparse.ArgumentParser(prog="mcl-fast",
                                     description="Motion-focused video loading and MCL pretraining.")
    parser.add_argument("--version", action="version", version=f"mcl-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = load_command(name)
            module.add_args(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _chosen(argv)
    try:
        parser = build_parser(command)
    except CommandUnavailable as e:
        print(f"mcl-fast: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return run_command(f"mcl-fast {args.command}", args._run, args)


if __name__ == "__main__":
    sys.exit(main())
