"""A student's errors against the number of teacher-labelled configurations it trained on (issue 22).

    python benchmarks/learning_curve.py configs/scale/ani1ccx_to_hipnn_50k.yaml --sizes 1000 5000 20000 0 --seeds 0
    python benchmarks/learning_curve.py CONFIG --source sampled conformers thermal --sizes 1000 5000 0

Each size is the config's run with ``student.sources.SOURCE.limit`` = size (0: the whole file), in its own
run_dir under ``runs/curve/``; subsets are nested (one seeded draw). With several sources, a size is shared among
them in proportion to their sizes in the config (each its ``limit``, or its whole file), and 0 is the config as
it is. The control and the teacher ensemble do
not depend on the size: the control is trained in the first size's run only. A size's run has its teacher label
only the configurations it draws; the labels a run made are copied into the later runs' ``knowledge/``, so once the
whole file is labelled (size 0) every later size reuses it (same teacher and file: the cached file a run would
make itself). Writes a markdown table and a plot of E, dE and F error vs size per
evaluation set, with the teacher's and the control's errors as horizontal lines.

Each finished run is one JSON line in OUT.jsonl (beside the report, committed with it), keyed by config, source,
size and seed and with the commit and date it ran at: a rerun or an extended curve trains only what is missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, provenance  # noqa: E402

from kdframe.io import atomic_write, atomic_write_text  # noqa: E402
from kdframe.potential import Potential  # noqa: E402
from kdframe.report import plt  # noqa: E402
from kdframe.workflows.base import Run, load_config  # noqa: E402

COLUMNS = {"E": "E rmse (kcal/mol)", "dE": "dE rmse (kcal/mol)", "F": "F rmse (kcal/mol/Å)"}


def limits(run: Run | None, names: list[str], size: int) -> dict[str, int | None]:
    """Each named source's limit for ``size`` configurations in all: in proportion to its size in ``run``'s config
    (largest remainders, so that they add up to ``size``); 0, or one source, as before (0: its whole file; no
    ``run`` needed)."""
    if len(names) == 1:
        return {names[0]: size or None}
    assert run is not None
    sources = run.config.student.sources
    if not size:
        return {name: sources[name].limit for name in names}
    full = {name: sources[name].limit or len(run._source(name, sources[name], name)) for name in names}
    total = sum(full.values())
    if size > total:
        raise SystemExit(f"--sizes {size}: more than the {total} configurations of sources {names}")
    exact = {name: size * n / total for name, n in full.items()}
    out = {name: int(x) for name, x in exact.items()}
    for name in sorted(names, key=lambda n: out[n] - exact[n])[:size - sum(out.values())]:
        out[name] += 1
    if min(out.values()) < 2:  # a source's smallest limit
        raise SystemExit(f"--sizes {size}: too few for sources {names} (shares {out}; each needs at least 2)")
    return out


def one_run(config_path: Path, names: list[str], size: int, seed: int, run_root: Path, control: bool) -> dict:
    """Scores (set -> model -> column -> value) of one size's run, and the number of configurations used."""
    workflow, config = load_config(config_path)
    block = config.student
    sources = dict(block.sources)
    for name in names:
        if name not in sources:
            raise SystemExit(f"--source {name}: not a source of {config_path} (its sources: {sorted(sources)})")
    limit = limits(Run(config, config_path, workflow, progress=False) if len(names) > 1 else None, names, size)
    for name in names:
        sources[name] = sources[name].model_copy(update={"limit": limit[name]})
    run_dir = run_root / f"n{size or 'all'}_seed{seed}"
    first_knowledge = run_root / "knowledge"
    if first_knowledge.is_dir():  # the teacher labels earlier sizes' runs made (the whole file's serve every size)
        for path in first_knowledge.glob("teacher_labels-*.h5"):
            if not (run_dir / "knowledge" / path.name).exists():
                (run_dir / "knowledge").mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, run_dir / "knowledge" / path.name)
    config = config.model_copy(update={"seed": seed, "run_dir": str(run_dir), "control": control,
                                       "student": block.model_copy(update={"sources": sources})})
    run = Run(config, config_path, workflow, progress=False)
    workflow.run(run)
    for path in (run_dir / "knowledge").glob("teacher_labels-*.h5"):
        if not (first_knowledge / path.name).exists():
            first_knowledge.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, first_knowledge / path.name)
    models = {"teacher ensemble": config.teachers.ensemble(run, "teachers", "teacher", config.seed + 1),
              "student": Potential.load(run_dir / "student" / "model.pt").to(run.device)}
    if control:
        models["control"] = Potential.load(run_dir / "control" / "model.pt").to(run.device)
    used = sum(limit[name] or len(run._source(name, sources[name], name)) for name in names)
    scores = run.scores(models)
    return {"size": used,
            "scores": {s: {m: {k: sc.values.get(c, np.nan) for k, c in COLUMNS.items()} for m, sc in by_model.items()}
                       for s, by_model in scores.items()}}


def plot(results: list[dict], path: Path) -> Path:
    sets = list(results[0]["scores"])
    fig, axes = plt.subplots(len(sets), 3, figsize=(10, 3.2 * len(sets)), squeeze=False)
    sizes = sorted({r["size"] for r in results})
    for row, set_name in enumerate(sets):
        for col, key in enumerate(COLUMNS):
            ax = axes[row][col]
            values = [[r["scores"][set_name]["student"][key] for r in results if r["size"] == n] for n in sizes]
            spread = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]  # over seeds (sample std)
            ax.errorbar(sizes, [np.mean(v) for v in values], yerr=spread, marker="o", label="student (mean ± std)")
            for model, style in (("teacher ensemble", "--"), ("control", ":")):
                level = [r["scores"][set_name][model][key] for r in results if model in r["scores"][set_name]]
                if level:
                    ax.axhline(np.mean(level), ls=style, color="k" if model == "control" else "C2", label=model)
            ax.set_xscale("log")
            ax.set_xlabel("teacher-labelled configurations")
            ax.set_ylabel(f"{set_name}: {COLUMNS[key]}", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--source", nargs="+", default=["sampled"], help="the student sources whose size varies")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000, 0], help="0: the whole file")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--no-control", action="store_true",
                        help="train no control (by default the first size's run trains one: the config's `control`)")
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs" / "curve")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "learning_curve.md")
    args = parser.parse_args()
    results = []
    done = args.out.with_suffix(".jsonl")
    config = str(args.config.resolve().relative_to(ROOT) if args.config.resolve().is_relative_to(ROOT) else args.config)
    key = ("config", "source", "requested", "seed")
    finished = {tuple(r[k] for k in key): r for r in map(json.loads, done.read_text().splitlines())} \
        if done.is_file() else {}
    done.parent.mkdir(parents=True, exist_ok=True)
    source = "+".join(args.source)
    for seed in args.seeds:
        for i, size in enumerate(args.sizes):
            result = finished.get((config, source, size, seed))
            if result is None:
                result = {**one_run(args.config, args.source, size, seed, args.run_root,
                                          control=i == 0 and not args.no_control),
                          "config": config, "source": source, "requested": size, "seed": seed,
                          "provenance": provenance("cpu")}
                with open(done, "a") as f:
                    f.write(json.dumps(result) + "\n")
            results.append(result)
            print(json.dumps(result), flush=True)
    rows, runs = [], []
    for r in results:
        runs.append(f"- {r['size']} configurations, seed {r['seed']}: {r['provenance']}")
        for set_name, by_model in r["scores"].items():
            for model, v in by_model.items():
                rows.append(f"| {r['size']} | {r['seed']} | {set_name} | {model} | "
                            + " | ".join(f"{v[k]:.2f}" for k in COLUMNS) + " |")
    figure = plot(results, args.out.with_suffix(".png"))
    atomic_write_text(args.out, f"""# Learning curve: student errors vs teacher-labelled configurations

- command: `{command_line()}`
- config: `{config}`; source{"s" if len(args.source) > 1 else ""} `{source}` limited to each size (nested seeded subsets{
  ", the size shared among the sources in proportion to their sizes in the config" if len(args.source) > 1 else ""};
  5 % of them held out for validation). The teacher ensemble does not depend on the size{
  "" if args.no_control else ", nor does the control (trained in the first size's run)"}; every size trains the
  config's epochs, so larger sizes also take more optimiser steps.
  RMSE in kcal/mol and kcal/mol/Å; dE = conformer energy differences within a molecule. Runs finished by an
  earlier invocation are read from `{done.name}` (one JSON line per run); when each ran:
{chr(10).join(runs)}

| configurations | seed | set | model | E | dE | F |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Plot: `{figure.name}`
""")


if __name__ == "__main__":
    main()
