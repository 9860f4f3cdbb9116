"""Command line: ``python -m retrievalkit exercises`` regenerates ``exercises/`` from ``solutions/``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrievalkit")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("exercises", help="regenerate exercises/ from solutions/")
    ex.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    ex.add_argument("--out", type=Path, default=ROOT / "exercises")
    args = parser.parse_args(argv)
    if args.command == "exercises":
        from .notebooks import write_exercises

        for path in write_exercises(args.solutions, args.out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
