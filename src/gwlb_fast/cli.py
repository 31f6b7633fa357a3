"""The ``gwlb-fast`` command (DESIGN.md section 7).

Exit codes: 0 success, 2 usage or configuration error, 1 unreadable input. Every error is one line,
``gwlb-fast: <file>: <problem>``.
"""
from __future__ import annotations

import argparse
import sys

from .errors import ConfigError, GwlbError


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gwlb-fast", description="Model a GWLB + firewall fleet data path on captures.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # each command module adds its own parser: add_parser(sub) sets func=handler(args) -> int
    from . import synth

    synth.add_cli(sub)
    return p


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"gwlb-fast: {e}", file=sys.stderr)
        return 2
    except GwlbError as e:
        print(f"gwlb-fast: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"gwlb-fast: {e.filename}: no such file", file=sys.stderr)
        return 1
    except IsADirectoryError as e:
        print(f"gwlb-fast: {e.filename}: is a directory", file=sys.stderr)
        return 1
    except PermissionError as e:
        print(f"gwlb-fast: {e.filename}: permission denied", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gwlb-fast: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
