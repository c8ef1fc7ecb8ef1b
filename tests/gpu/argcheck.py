"""Check a command line against its program's own parser, without running the program.

    python tests/gpu/argcheck.py benchmarks/train_step.py --device cuda --amp off,fp16 ...
    python tests/gpu/argcheck.py -m mcl_fast.train --config ucf101_r2plus1d data.loader=synthetic ...

The program is started as `__main__` with argparse's parse_args stopped right after a successful
parse (a bad flag exits 2 with argparse's message, as the real run would). For the trainer, the
key=value overrides are loaded and validated as the trainer loads them. gpu_check.sh --dry-run runs
every GPU step's command through this, so a renamed flag or config key fails CI, not the GPU run.
"""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class _Parsed(Exception):
    pass


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "-m":
        target, args = argv[1], argv[2:]
        run = lambda: runpy.run_module(target, run_name="__main__", alter_sys=True)  # noqa: E731
    else:
        target, args = argv[0], argv[1:]
        if not Path(target).is_file():
            print(f"argcheck: {target}: no such script", file=sys.stderr)
            return 1
        run = lambda: runpy.run_path(target, run_name="__main__")  # noqa: E731
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse_and_stop
    sys.argv = [target, *args]
    try:
        run()
    except _Parsed as parsed:
        namespace = parsed.args[0]
    else:
        print(f"argcheck: {target} returned without parsing a command line", file=sys.stderr)
        return 1
    finally:
        argparse.ArgumentParser.parse_args = original
    if target == "mcl_fast.train":
        from mcl_fast.train import ConfigError, load_config

        try:
            load_config(namespace.config, namespace.overrides)
        except ConfigError as err:
            print(f"argcheck: {target}: {err}", file=sys.stderr)
            return 1
    print(f"argcheck: {' '.join(args)}")
    print(f"argcheck: args OK ({Path(target).name})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
