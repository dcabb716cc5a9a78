"""The `workbench` command: generate, run, lab, doctor, bench."""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
from pathlib import Path

from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the command line and run one subcommand; errors print plainly."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    gen = sub.add_parser("generate", help="write the bronze tables of the datasets into a lake")
    gen.add_argument("--scale", type=float, default=0.01, help="1 = 1M orders (default 0.01)")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--lake", default="lake", help="lake folder (default ./lake)")
    gen.add_argument("--overwrite", action="store_true", help="rewrite tables that exist")
    gen.set_defaults(func=_generate)

    run = sub.add_parser("run", help="execute notebooks with papermill, each in its own folder")
    run.add_argument("notebooks", nargs="+", metavar="NOTEBOOK")
    run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a notebook parameter (repeatable)",
    )
    run.add_argument("--backend", help="shorthand for -p backend NAME")
    run.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="run every combination of these values (repeatable)",
    )
    run.add_argument("--matrix", metavar="FILE", help="a YAML file with parameters: and matrix:")
    run.add_argument("-j", "--jobs", type=int, help="runs at once (default: the core count)")
    run.add_argument("--out", default="build/runs", help="output folder (default build/runs)")
    run.add_argument("--index", help="also write an index.html of the runs here")
    run.set_defaults(func=_run)

    lab = sub.add_parser("lab", help="start JupyterLab on 127.0.0.1 at the start notebook")
    lab.add_argument("--port", type=int, default=8888)
    lab.set_defaults(func=_lab)

    doctor = sub.add_parser("doctor", help="versions in use and which engines work")
    doctor.set_defaults(func=_doctor)

    bench = sub.add_parser("bench", help="run the benchmark scripts (they print ratios)")
    bench.add_argument("names", nargs="*", help="benchmark names (default: all)")
    bench.set_defaults(func=_bench)
    return parser


def _generate(args) -> int:
    from workbench import datasets
    from workbench.lakehouse import Lakehouse

    lake = Lakehouse(args.lake)
    written = datasets.generate(lake, scale=args.scale, seed=args.seed, overwrite=args.overwrite)
    for name, rows in written.items():
        print(f"bronze.{name}: {rows:,} rows")
    return 0


def grid(specs: list[str]) -> list[dict[str, str]]:
    """Every combination of `name=v1,v2` specifications, as parameter dictionaries."""
    axes = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not name or not values:
            raise WorkbenchError(
                f"Bad --grid {spec!r}.",
                "A grid is NAME=V1,V2,... (repeat --grid for more parameters).",
                "for example --grid backend=duckdb,polars --grid seed=1,2.",
            )
        axes.append([(name, v) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def matrix(path: str) -> tuple[dict, list[dict]]:
    """Fixed parameters and combinations from a YAML file with `parameters:` and `matrix:`."""
    import yaml

    spec = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(spec) - {"parameters", "matrix"}
    axes = spec.get("matrix") or {}
    if unknown or not isinstance(axes, dict) or not all(isinstance(v, list) for v in axes.values()):
        raise WorkbenchError(
            f"Bad matrix file {path}: {sorted(unknown) or 'matrix must map names to lists'}.",
            "Allowed keys: parameters (name: value) and matrix (name: [values]).",
            "for example: matrix: {backend: [duckdb, polars], seed: [1, 2]}",
        )
    combos = [dict(c) for c in itertools.product(*[[(k, v) for v in vs] for k, vs in axes.items()])]
    return dict(spec.get("parameters") or {}), combos or [{}]


def _run(args) -> int:
    from workbench import runs

    base = dict(args.parameter)
    if args.backend:
        base["backend"] = args.backend
    combos = grid(args.grid)
    if args.matrix:
        fixed, from_file = matrix(args.matrix)
        base = {**fixed, **base}
        combos = [{**a, **b} for a in from_file for b in combos]
    records = runs.sweep(args.notebooks, [{**base, **c} for c in combos], out=args.out,
                         workers=args.jobs)  # fmt: skip
    if args.index or len(records) > 1:
        page = runs.index(records, Path(args.index or Path(args.out) / "index.html"))
        print(f"gallery: {page}")
    return 1 if any(r.status != "ok" for r in records) else 0


def _lab(args) -> int:
    start = ROOT / "notebooks" / "00_start_here.ipynb"
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--ip=127.0.0.1",
        f"--port={args.port}",
        "--no-browser",
        f"--ServerApp.root_dir={ROOT}",
        f"--LabApp.default_url=/lab/tree/notebooks/{start.name}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI often run as root
        cmd.append("--allow-root")
    print("JupyterLab keeps token authentication: open the URL with ?token=... it prints.")
    return subprocess.call(cmd, cwd=ROOT)


def _doctor(args) -> int:
    from importlib import metadata

    from workbench import backends

    print(f"python {sys.version.split()[0]} at {sys.executable}")
    for pkg in (
        "ibis-framework",
        "duckdb",
        "polars",
        "datafusion",
        "deltalake",
        "pyarrow",
        "sqlglot",
        "pandas",
        "altair",
        "vl-convert-python",
        "papermill",
        "jupyterlab",
    ):
        try:
            print(f"  {pkg:18} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            print(f"  {pkg:18} not installed")
    broken = 0
    for name, backend in backends.BACKENDS.items():
        try:
            con = backends.connect(name)
            import ibis

            value = con.execute(ibis.memtable({"x": [1, 2]}).x.sum())
            status = "works" if int(value) == 3 else f"wrong answer {value}"
        except Exception as exc:  # doctor reports every failure instead of stopping
            status = f"fails: {type(exc).__name__}: {exc}".splitlines()[0]
        ok = status == "works"
        broken += (not ok) and backend.required
        role = "required" if backend.required else "reads only"
        print(f"engine {name:11} {role:11} {status}")
    return 1 if broken else 0


def _bench(args) -> int:
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    chosen = [s for s in scripts if not args.names or s.stem.removeprefix("bench_") in args.names]
    if not chosen:
        raise WorkbenchError(
            f"No benchmark named {args.names}.",
            "Benchmarks: " + ", ".join(s.stem.removeprefix("bench_") for s in scripts) + ".",
            "run `workbench bench` for all of them.",
        )
    status = 0
    for script in chosen:
        print(f"== {script.stem}", flush=True)
        status |= subprocess.call([sys.executable, str(script)], cwd=ROOT, env=os.environ)
    return status


if __name__ == "__main__":
    sys.exit(main())
