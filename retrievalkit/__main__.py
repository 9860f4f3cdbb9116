"""Command line: ``python -m retrievalkit exercises`` regenerates ``exercises/`` from ``solutions/``;
``python -m retrievalkit grade SUBMISSIONS --out RESULTS`` grades submitted exercises;
``python -m retrievalkit bench --dataset D --model M --method X`` runs the benchmark of notebook 10."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_RAW = argparse.RawDescriptionHelpFormatter  # keeps the line breaks of descriptions and examples

_EXAMPLES = {
    "exercises": "python -m retrievalkit exercises",
    "grade": "python -m retrievalkit grade submissions/ --out results/",
    "bench": "python -m retrievalkit bench --dataset roxford5k --model vgg16 --method GeM --out results",
}


def _example(*commands: str) -> str:
    return "Examples:\n" + "\n".join(f"  {_EXAMPLES[c]}" for c in commands)


def parser() -> argparse.ArgumentParser:
    """The parser of ``python -m retrievalkit`` with its three commands."""
    top = argparse.ArgumentParser(
        prog="python -m retrievalkit", formatter_class=_RAW, epilog=_example(*_EXAMPLES),
        description="The course's command line: regenerate the exercises, grade submitted exercises,\n"
                    "run the benchmark of notebook 10. `python -m retrievalkit COMMAND --help` for a command.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ex = sub.add_parser(
        "exercises", help="regenerate exercises/ from solutions/", formatter_class=_RAW, epilog=_example("exercises"),
        description="Regenerate every exercise notebook from its solution notebook: each answer between\n"
                    "### BEGIN SOLUTION and ### END SOLUTION becomes `raise NotImplementedError()`,\n"
                    "outputs are cleared and the check cells locked. Prints each file written.")
    ex.add_argument("--solutions", type=Path, default=ROOT / "solutions",
                    help="the folder of solution notebooks (default: %(default)s)")
    ex.add_argument("--out", type=Path, default=ROOT / "exercises",
                    help="the folder the exercise notebooks are written to (default: %(default)s)")
    gr = sub.add_parser(
        "grade", help="grade submitted exercise notebooks: RESULTS/scores.csv, RESULTS/feedback/",
        formatter_class=_RAW, epilog=_example("grade"),
        description="Grade submitted exercise notebooks, each in its own sandboxed kernel, on test inputs\n"
                    "drawn from a secret seed. Writes OUT/scores.csv (one row per notebook) and\n"
                    "OUT/feedback/<student>.md, and prints a summary.")
    gr.add_argument("submissions", type=Path, metavar="SUBMISSIONS",
                    help="the folder of submissions: SUBMISSIONS/<student>/*.ipynb or SUBMISSIONS/<student>__<name>.ipynb")
    gr.add_argument("--out", type=Path, required=True, help="the results folder (required)")
    gr.add_argument("--solutions", type=Path, default=ROOT / "solutions",
                    help="the folder of solution notebooks the exercises are read from (default: %(default)s)")
    gr.add_argument("--jobs", type=int, default=None, help="kernels at once (default: the usable cores)")
    gr.add_argument("--cell-timeout", type=float, help="seconds for one cell or one task's probe (default: 30)")
    gr.add_argument("--timeout", type=float, help="seconds for one submission (default: 300)")
    gr.add_argument("--memory", type=float, help="GiB of memory per kernel, torch's 0.8 included (default: 4)")
    gr.add_argument("--seed", type=int, default=None, help="fix the test inputs (default: secret, fresh)")
    bn = sub.add_parser(
        "bench", help="the benchmark of notebook 10: writes OUT/bench.csv and OUT/bench.md",
        formatter_class=_RAW, epilog=_example("bench"),
        description="The benchmark of notebook 10: every method's mAP (original, medium, hard protocols)\n"
                    "raw, +PCAw and +PCAw+αQE, beside the published numbers, with stage timings.\n"
                    "Prints the table and writes OUT/bench.csv and OUT/bench.md; exits 2 on a missing\n"
                    "dataset or weights, or an unknown name.")
    bn.add_argument("--dataset", action="append",
                    help="mini, oxford5k, paris6k, roxford5k, rparis6k; repeatable (default: mini)")
    bn.add_argument("--model", default="efficientnet_lite0",
                    help="the backbone: efficientnet_lite0, resnet50, vgg16 (default: %(default)s)")
    bn.add_argument("--method", action="append",
                    help="MAC, SPoC, GeM, R-MAC, OS-RMAC, CroW, CAM, VLAD; repeatable (default: all the model supports)")
    bn.add_argument("--variant", action="append", help="raw, +PCAw, +PCAw+αQE; repeatable (default: all)")
    bn.add_argument("--out", type=Path, default=Path("bench-results"), help="the results folder (default: %(default)s)")
    bn.add_argument("--root", type=Path, help="the data folder (default: $RETRIEVALKIT_DATA or the course's data/cache)")
    bn.add_argument("--download", action="store_true", help="fetch missing benchmarks from their official hosts")
    bn.add_argument("--timing-images", type=int, default=100,
                    help="images of the fresh decode + network pass (default: %(default)s)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
