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
    "grade-lms": "python -m retrievalkit grade canvas-download.zip --lms canvas --out results/",
    "bench": "python -m retrievalkit bench --dataset roxford5k --model vgg16 --method GeM --out results",
    "bench-synthetic": "python -m retrievalkit bench --dataset synthetic-oxford --size 512 --database-images 500",
    "bench-speed": "python -m retrievalkit bench --speed --speed-images 200 --model resnet50 --out speed",
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
        formatter_class=_RAW, epilog=_example("grade", "grade-lms"),
        description="Grade submitted exercise notebooks, each in its own sandboxed kernel, on test inputs\n"
                    "drawn from a secret seed. Writes OUT/scores.csv (one row per notebook),\n"
                    "OUT/feedback/<student>.md, the class report OUT/class_report.md, .csv and .png\n"
                    "(per task: who passed, each named mistake, the scores) and, with --lms, the\n"
                    "gradebook OUT/gradebook_<lms>.csv that Canvas or Moodle imports; prints a summary.")
    gr.add_argument("submissions", type=Path, metavar="SUBMISSIONS",
                    help="the submissions, a folder or a .zip: SUBMISSIONS/<student>/*.ipynb, "
                         "SUBMISSIONS/<student>__<name>.ipynb, or a Canvas or Moodle download (--lms)")
    gr.add_argument("--lms", choices=["canvas", "moodle"],
                    help="read SUBMISSIONS as a Canvas or Moodle download and write its gradebook CSV "
                         "(default: the folder layouts above)")
    gr.add_argument("--assignment",
                    help="the gradebook's assignment column; for Canvas to match an existing assignment, "
                         "'NAME (ID)' as its gradebook export writes it (default: the exercises' names)")
    gr.add_argument("--out", type=Path, required=True, help="the results folder (required)")
    gr.add_argument("--solutions", type=Path, default=ROOT / "solutions",
                    help="the folder of solution notebooks the exercises are read from (default: %(default)s)")
    gr.add_argument("--jobs", type=int, default=None, help="kernels at once (default: the usable cores)")
    gr.add_argument("--cell-timeout", type=float, help="seconds for one cell or one task's probe (default: 30)")
    gr.add_argument("--timeout", type=float, help="seconds for all of one student's notebooks (default: 300)")
    gr.add_argument("--memory", type=float, help="GiB of memory a kernel may use beyond torch's own (default: 4)")
    gr.add_argument("--files", type=int,
                    help="files and folders a kernel may create in its /tmp; past it the kernel is killed "
                         "(default: 20000)")
    gr.add_argument("--seed", type=int, default=None,
                    help="fix the test inputs, to reproduce a grading run (default: secret, fresh each run); "
                         "never reuse a fixed seed across rounds: students who saw one round's inputs "
                         "could answer the next by heart")
    gr.add_argument("--unsafe-no-sandbox", action="store_true",
                    help="run the kernels without the bubblewrap sandbox (they then see the machine): only for "
                         "notebooks you trust, where bubblewrap is missing (default: refuse)")
    bn = sub.add_parser(
        "bench", help="the benchmark of notebook 10: writes OUT/bench.csv and OUT/bench.md",
        formatter_class=_RAW, epilog=_example("bench", "bench-synthetic", "bench-speed"),
        description="The benchmark of notebook 10: every method's mAP (original, medium, hard protocols)\n"
                    "raw, +PCAw and +PCAw+αQE, beside the published numbers, with stage timings.\n"
                    "Prints the table and writes OUT/bench.csv and OUT/bench.md; exits 2 on a missing\n"
                    "dataset or weights, or an unknown name. With --speed: the time of each stage (decode,\n"
                    "resize, host-to-device, network, pooling, search) and end to end against the per-image\n"
                    "loop, per model, method and scales: OUT/speed.csv and OUT/speed.md.")
    bn.add_argument("--dataset", action="append",
                    help="mini, oxford5k, paris6k, roxford5k, rparis6k, synthetic-oxford (5,063 images drawn "
                         "offline on first use); repeatable (default: mini)")
    bn.add_argument("--model", default=None,
                    help="the backbone: efficientnet_lite0, resnet50, vgg16 (default: efficientnet_lite0; "
                         "with --speed all three)")
    bn.add_argument("--method", action="append",
                    help="MAC, SPoC, GeM, R-MAC, OS-RMAC, CroW, CAM, VLAD; repeatable (default: all the model "
                         "supports; with --speed GeM, R-MAC, CroW)")
    bn.add_argument("--variant", action="append", help="raw, +PCAw, +PCAw+αQE; repeatable (default: all)")
    bn.add_argument("--out", type=Path, default=Path("bench-results"), help="the results folder (default: %(default)s)")
    bn.add_argument("--root", type=Path, help="the data folder (default: $RETRIEVALKIT_DATA or the course's data/cache)")
    bn.add_argument("--download", action="store_true", help="fetch missing benchmarks from their official hosts")
    bn.add_argument("--timing-images", type=int, default=100,
                    help="images of mini's fresh decode + network pass (default: %(default)s)")
    bn.add_argument("--size", type=float, default=None,
                    help="longest image side fed to the network (default: as stored for mini, 1024 otherwise)")
    bn.add_argument("--database-images", type=int, default=None,
                    help="only the first N database images of each dataset, all queries (default: all)")
    bn.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: %(default)s)")
    bn.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    bn.add_argument("--speed", action="store_true",
                    help="time each stage and the pipeline end to end against the per-image loop instead")
    bn.add_argument("--speed-images", type=int, default=200,
                    help="with --speed: the first N database images of the dataset, synthetic-oxford unless "
                         "--dataset names one (default: %(default)s)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "exercises":
        from .teaching.exercises import write_exercises

        for path in write_exercises(args.solutions, args.out):
            print(f"wrote {path}")
    if args.command == "grade":
        import time

        from .teaching import lms
        from .teaching.classreport import write_class_report
        from .teaching.grading import Limits, SandboxUnavailable, grade
        from .teaching.similarity import similar, write_similar
        from .teaching.report import summary, write_results

        start = time.monotonic()
        given = {"cell_timeout": args.cell_timeout, "submission_timeout": args.timeout,
                 "memory": args.memory and int(args.memory * 2**30), "files": args.files}
        limits = Limits(**{k: v for k, v in given.items() if v is not None})
        try:
            if limits.files < 1:
                raise ValueError(f"--files must be >= 1, got {limits.files}")
            with lms.read_export(args.submissions, args.lms) as export:
                graded = grade(export.root, args.solutions, limits, jobs=args.jobs, seed=args.seed, out=args.out,
                               hide=(args.submissions,), progress=True, unsafe_no_sandbox=args.unsafe_no_sandbox)
                written = [*write_class_report(graded, args.out)]
                if export.lms:
                    written.append(lms.write_gradebook(graded, export, args.out, args.assignment))
        except (ValueError, SandboxUnavailable) as e:  # an unreadable export, no sandbox: the message alone
            print(f"python -m retrievalkit grade: {e}", file=sys.stderr)
            return 2
        scores, feedback = write_results(graded, args.out)
        print(summary(graded))
        pairs = similar(graded)
        written.append(write_similar(pairs, args.out))
        print(f"near-identical code (to judge, not a verdict): {len(pairs)} pair(s)" + "".join(
            f"\n  {p.task}: {p.first} ~ {p.second} ({p.score:.2f})" for p in pairs[:20]))
        print(f"graded {len(graded)} notebooks in {time.monotonic() - start:.1f} s; "
              f"wrote {scores}, {len(feedback)} feedback files in {scores.parent / 'feedback'}, "
              + ", ".join(str(p) for p in written))
    if args.command == "bench" and args.speed:
        return _speed(args)
    if args.command == "bench":
        from . import bench
        from .datasets import DatasetNotFoundError

        try:
            rows = bench.run(args.dataset or ["mini"], args.model or "efficientnet_lite0", args.method,
                             args.variant or tuple(bench.VARIANTS),
                             root=args.root, download=args.download, timing_images=args.timing_images, size=args.size,
                             device=args.device, database_images=args.database_images, batch_size=args.batch_size,
                             progress=True)
        except (FileNotFoundError, ValueError) as e:  # a missing dataset or weights, an unknown name: the message alone
            hint = ("\nFrom the command line: add --download (and --root DIR to choose the folder)"
                    if isinstance(e, DatasetNotFoundError) else "")
            print(f"python -m retrievalkit bench: {e}{hint}", file=sys.stderr)
            return 2
        csv_path, md_path = bench.write_table(rows, args.out)
        print(bench.markdown(rows))
        print(f"wrote {csv_path} and {md_path}")
    return 0


def _speed(args: argparse.Namespace) -> int:
    """``bench --speed``: the speed table of :mod:`retrievalkit.bench.speed`."""
    from . import bench, datasets
    from .bench import speed

    try:
        if args.speed_images < 1:
            raise ValueError(f"--speed-images must be >= 1, got {args.speed_images}")
        ds = datasets.load((args.dataset or ["synthetic-oxford"])[0], root=args.root, download=args.download)
        rows = speed.speed(ds.images[: args.speed_images], [args.model] if args.model else speed.MODELS,
                           args.method or speed.SPEED_METHODS, args.size or bench.REAL_SIZE, args.batch_size,
                           device=args.device)
    except (FileNotFoundError, ValueError) as e:
        print(f"python -m retrievalkit bench --speed: {e}", file=sys.stderr)
        return 2
    csv_path, md_path = bench.write_table(rows, args.out, speed.SPEED_COLUMNS, "speed")
    print(bench.markdown(rows, speed.SPEED_COLUMNS))
    for model, weights in dict((r["model"], r["weights"]) for r in rows).items():
        print(f"{model} weights: {weights}")
    print(f"wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
