"""Command line: ``python -m retrievalkit exercises`` regenerates ``exercises/`` from ``solutions/``;
``python -m retrievalkit grade SUBMISSIONS --out RESULTS`` grades submitted exercises."""
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
    gr = sub.add_parser("grade", help="grade submitted exercise notebooks: RESULTS/scores.csv, RESULTS/feedback/")
    gr.add_argument("submissions", type=Path, help="SUBMISSIONS/<student>/*.ipynb or SUBMISSIONS/<student>__<name>.ipynb")
    gr.add_argument("--out", type=Path, required=True, help="the results folder")
    gr.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    gr.add_argument("--jobs", type=int, default=None, help="kernels at once (default: the usable cores)")
    gr.add_argument("--cell-timeout", type=float, help="seconds for one cell or one task's probe (30)")
    gr.add_argument("--timeout", type=float, help="seconds for one submission (300)")
    gr.add_argument("--memory", type=float, help="GiB of memory per kernel, torch's 0.8 included (4)")
    gr.add_argument("--seed", type=int, default=None, help="fix the test inputs (default: secret, fresh)")
    args = parser.parse_args(argv)
    if args.command == "exercises":
        from .notebooks import write_exercises

        for path in write_exercises(args.solutions, args.out):
            print(f"wrote {path}")
    if args.command == "grade":
        import time

        from .grade import Limits, grade, summary, write_results

        start = time.monotonic()
        given = {"cell_timeout": args.cell_timeout, "submission_timeout": args.timeout,
                 "memory": args.memory and int(args.memory * 2**30)}
        limits = Limits(**{k: v for k, v in given.items() if v is not None})
        graded = grade(args.submissions, args.solutions, limits, jobs=args.jobs, seed=args.seed, out=args.out)
        scores, feedback = write_results(graded, args.out)
        print(summary(graded))
        print(f"graded {len(graded)} notebooks in {time.monotonic() - start:.1f} s; "
              f"wrote {scores} and {len(feedback)} feedback files in {scores.parent / 'feedback'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
