"""Command line: ``python -m retrievalkit exercises`` regenerates ``exercises/`` from ``solutions/``;
``python -m retrievalkit grade SUBMISSIONS --out RESULTS`` grades submitted exercises;
``python -m retrievalkit bench --dataset D --model M --method X`` runs the benchmark of notebook 10."""
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
    bn = sub.add_parser("bench", help="the benchmark of notebook 10: writes OUT/bench.csv and OUT/bench.md")
    bn.add_argument("--dataset", action="append", help="mini (default), oxford5k, paris6k, roxford5k, rparis6k; repeatable")
    bn.add_argument("--model", default="efficientnet_lite0", help="efficientnet_lite0 (default), resnet50, vgg16")
    bn.add_argument("--method", action="append", help="MAC, SPoC, GeM, R-MAC, OS-RMAC, CroW, CAM, VLAD; repeatable (default: all)")
    bn.add_argument("--variant", action="append", help="raw, +PCAw, +PCAw+αQE; repeatable (default: all)")
    bn.add_argument("--out", type=Path, default=Path("bench-results"), help="the results folder (./bench-results)")
    bn.add_argument("--root", type=Path, help="the data folder (default: $RETRIEVALKIT_DATA or the course's data/cache)")
    bn.add_argument("--download", action="store_true", help="fetch missing benchmarks from their official hosts")
    bn.add_argument("--timing-images", type=int, default=100, help="images of the fresh decode + network pass (100)")
    args = parser.parse_args(argv)
    if args.command == "exercises":
        from .teaching.exercises import write_exercises

        for path in write_exercises(args.solutions, args.out):
            print(f"wrote {path}")
    if args.command == "grade":
        import time

        from .teaching.grading import Limits, grade
        from .teaching.report import summary, write_results

        start = time.monotonic()
        given = {"cell_timeout": args.cell_timeout, "submission_timeout": args.timeout,
                 "memory": args.memory and int(args.memory * 2**30)}
        limits = Limits(**{k: v for k, v in given.items() if v is not None})
        graded = grade(args.submissions, args.solutions, limits, jobs=args.jobs, seed=args.seed, out=args.out)
        scores, feedback = write_results(graded, args.out)
        print(summary(graded))
        print(f"graded {len(graded)} notebooks in {time.monotonic() - start:.1f} s; "
              f"wrote {scores} and {len(feedback)} feedback files in {scores.parent / 'feedback'}")
    if args.command == "bench":
        from . import bench

        try:
            rows = bench.run(args.dataset or ["mini"], args.model, args.method, args.variant or tuple(bench.VARIANTS),
                             root=args.root, download=args.download, timing_images=args.timing_images)
        except (FileNotFoundError, ValueError) as e:  # a missing dataset or weights, an unknown name: the message alone
            print(f"python -m retrievalkit bench: {e}", file=sys.stderr)
            return 2
        csv_path, md_path = bench.write_table(rows, args.out)
        print(bench.markdown(rows))
        print(f"wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
