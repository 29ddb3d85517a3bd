"""Cross-architecture comparison benchmarks: ``python benchmarks/run.py SUITE [options]``.

Suites (each writes ``benchmarks/results/<suite>.md`` (``<suite>_gpu.md`` on a GPU) and its PNGs, stating command,
commit, device, date; default sizes run in minutes on a CPU, and at full size on a GPU):

- ``accuracy``: every teacher -> student EKD config (``configs/cross/*_to_*.yaml``) over seeds: energy, energy
  per atom, dE and force errors of teachers, student and control on the test split and the extensibility
  set, mean ± std; bar plot.
- ``cost``: trainable weights, energy + forces inference time and peak memory per atom on periodic boxes of
  small molecules (``--boundary open``: clusters in vacuum) of several sizes, test-split force error; Pareto
  plots of force error vs time and vs memory (methods.md §2). On a GPU it also finds the largest box that fits.
- ``md``: the MD acceptance suite (``md_acceptance.py``): ASE NVE of a condensed periodic box of small molecules
  and of every extensibility molecule in vacuum, per model at several time steps; a run fails when two atoms come
  closer than 0.5 Å or the energy is not finite (methods.md §1). Fraction failed and time to failure vs time step,
  energy drift (meV/atom/ps), RDFs and their Jensen-Shannon distances to a reference model (``--reference``, e.g. a
  ``--pretrained`` teacher ensemble), atom-steps per second.
- ``labelling``: configurations per second of ensemble-averaged teacher forces for each k-member
  teacher ensemble of the cross runs (and pretrained ANI-1ccx), with GPU utilisation on a GPU.
- ``overhead``, ``overhead-torchani``, ``overhead-mace``, ``hvp``, ``packed``, ``hipnn-kernels``, ``hipnn-pairs``: the
  scripts ``hipnn_overhead.py``, ``torchani_overhead.py``, ``mace_overhead.py``, ``hvp_cost.py``, ``packed_data.py``,
  ``hipnn_kernels.py``, ``hipnn_pairs.py`` with their own options after ``--``.

Models are saved kdframe models (``--models NAME=PATH ...``); by default the students and controls of
the cross-architecture EKD runs (``configs/cross/*.yaml``), whose shared test split scores force errors.
``md`` also takes registered pretrained ensembles (``--pretrained NAME=KEY ...``, e.g. ``teacher=ani1ccx``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, proc_status_kib, provenance  # noqa: E402

from kdframe.batch import Batch  # noqa: E402
from kdframe.errors import ConfigError, KdframeError  # noqa: E402
from kdframe.io import atomic_write, atomic_write_text  # noqa: E402
from kdframe.potential import Ensemble, Potential, model_dtype  # noqa: E402
from kdframe.report import plt  # noqa: E402

CROSS = {
    "HIP-NN student (ANI-1ccx)": "runs/cross/ani1ccx_to_hipnn/student/model.pt",
    "MACE student (ANI-1ccx)": "runs/cross/ani1ccx_to_mace/student/model.pt",
    "TorchANI student (HIP-NN)": "runs/cross/hipnn_to_ani/student/model.pt",
    "HIP-NN control": "runs/cross/ani1ccx_to_hipnn/control/model.pt",
    "MACE control": "runs/cross/ani1ccx_to_mace/control/model.pt",
    "TorchANI control": "runs/cross/hipnn_to_ani/control/model.pt",
}
TEST_CONFIG = "configs/cross/ani1ccx_to_hipnn.yaml"  # every cross run shares data, seed and split
POOL = ROOT / "kdframe" / "datasets" / "train_pool.h5"
SCRIPTS = {"overhead": "hipnn_overhead.py", "overhead-torchani": "torchani_overhead.py",
           "overhead-mace": "mace_overhead.py", "hvp": "hvp_cost.py",
           "packed": "packed_data.py", "hipnn-kernels": "hipnn_kernels.py", "hipnn-pairs": "hipnn_pairs.py"}
# Default problem sizes: what runs in minutes on a 2-core CPU, and the full size on a GPU (boxes of tens of
# thousands of atoms, methods.md §2); the largest-box search on a GPU goes on up to --max-atoms.
CPU_SIZES = {"sizes": [200, 1000, 4000], "md_atoms": 200, "steps": 200}  # boxes of 3³, 5³, 8³, 3³ molecules
GPU_SIZES = {"sizes": [1000, 10_000, 50_000], "md_atoms": 1500, "steps": 1000}
# Å between molecule centres on the grid (liquid-like packing, about 0.8 g/cm³ for the bundled molecules);
# closest allowed intermolecular contact.
SPACING, MIN_GAP = 4.5, 1.8


# --- inputs --------------------------------------------------------------------------------------
def model_paths(entries: list[str] | None) -> dict[str, str]:
    pairs = [e.split("=", 1) for e in entries] if entries else list(CROSS.items())
    paths = {name: str(ROOT / path if (ROOT / path).is_file() else path) for name, path in pairs}
    missing = [path for path in paths.values() if not Path(path).is_file()]
    if missing:
        sys.exit(f"model file(s) not found: {', '.join(missing)} - run the cross-architecture configs first "
                 "(README: Results) or pass --models NAME=PATH")
    return paths


def load_models(paths: dict[str, str], device: torch.device) -> dict[str, Potential]:
    return {name: Potential.load(path).to(device).eval() for name, path in paths.items()}


def test_force_errors(models: dict[str, Potential], device: torch.device) -> dict[str, float]:
    """Force RMSE (kcal/mol/Å) of each model on the cross runs' test split (wB97X forces)."""
    from kdframe.evaluation import evaluate
    from kdframe.workflows.base import Run, load_config

    path = ROOT / TEST_CONFIG
    workflow, config = load_config(path)
    test = Run(config, path, workflow, progress=False).eval_sets["test"]
    return {name: evaluate(model, test, "energy", "forces", device=device).values["F rmse (kcal/mol/Å)"]
            for name, model in models.items()}


def optimised_molecules() -> list[tuple[np.ndarray, np.ndarray]]:
    """(atomic numbers, centred positions) of the bundled pool's optimised conformers."""
    import h5py

    found = []
    with h5py.File(POOL, "r") as f:
        for group in f.values():
            origins = json.loads(group.attrs["origins"])
            for i, origin in enumerate(origins):
                if origin.startswith("opt"):
                    xyz = group["coordinates"][i]
                    found.append((group["atomic_numbers"][()], xyz - xyz.mean(0)))
    return found


def molecular_box(n_atoms: int, seed: int = 0, spacing: float = SPACING, periodic: bool = True):
    """Randomly rotated small molecules on a cubic grid, ``spacing`` Å apart, about ``n_atoms`` atoms; each
    atom's tag is its molecule's index. Periodic: every cell of an n x n x n grid is filled and the grid is the
    periodic cell (a liquid-like box without surface); open: cells are filled until ``n_atoms`` is reached (a
    cluster in vacuum)."""
    import ase
    from scipy.spatial.distance import cdist
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    pool = optimised_molecules()
    # Contacts are checked against the 26 neighbouring grid cells only (linear cost up to 10^6 atoms): molecules
    # two cells apart cannot touch, since no bundled molecule reaches (2 spacing - MIN_GAP) / 2 from its centre.
    reach = max(np.linalg.norm(xyz, axis=1).max() for _, xyz in pool)
    if spacing <= reach + MIN_GAP / 2:
        raise ConfigError("--spacing", f"{spacing} Å would let molecules two grid cells apart touch",
                          f"more than {reach + MIN_GAP / 2:.2f} Å")
    molecules_wanted = n_atoms / np.mean([len(z) for z, _ in pool])
    n_side = max(2, round(molecules_wanted ** (1 / 3))) if periodic else math.ceil(molecules_wanted ** (1 / 3)) + 1
    length = n_side * spacing
    placed: dict[tuple[int, ...], np.ndarray] = {}
    numbers, count = [], 0
    for cell in np.ndindex(n_side, n_side, n_side):
        if not periodic and count >= n_atoms:
            break
        near = []
        for d in np.ndindex(3, 3, 3):
            neighbour = np.add(cell, d) - 1
            key = tuple(neighbour % n_side) if periodic else tuple(neighbour)
            if key in placed:  # in a periodic box, the image of that cell next to this one
                near.append(placed[key] + (neighbour // n_side) * length * periodic)
        near = np.concatenate(near) if near else np.zeros((0, 3))
        centre = (np.array(cell) + 0.5 * periodic) * spacing  # a periodic box holds its molecules inside
        # Random orientations until one keeps MIN_GAP; a cluster's cell stays empty after 50, a periodic box
        # (no voids in the bulk) draws another molecule every 50, up to 20 molecules.
        for attempt in range(1000 if periodic else 50):
            if attempt % 50 == 0:
                z, xyz = pool[rng.integers(len(pool))]
            candidate = xyz @ Rotation.random(random_state=rng).as_matrix().T + centre
            if len(near) == 0 or cdist(candidate, near).min() >= MIN_GAP:
                numbers.append(z)
                placed[cell] = candidate
                count += len(z)
                break
        else:
            if periodic:
                raise ConfigError("--spacing", f"no bundled molecule fits grid cell {cell} {spacing} Å wide",
                                  "a larger spacing")
    atoms = ase.Atoms(numbers=np.concatenate(numbers), positions=np.concatenate(list(placed.values())),
                      tags=np.repeat(np.arange(len(numbers)), [len(z) for z in numbers]),  # tag: molecule index
                      cell=np.eye(3) * length if periodic else None, pbc=periodic)
    atoms.info["spacing"] = spacing
    return atoms


def density(atoms) -> float:
    """g/cm³: a periodic box's mass over its volume; a cluster's, counting one grid cell (spacing³) per molecule."""
    from ase.units import _amu

    volume = atoms.get_volume() if atoms.pbc.all() else len(set(atoms.get_tags())) * atoms.info["spacing"] ** 3
    return float(atoms.get_masses().sum() * _amu * 1e3 / (volume * 1e-24))


def describe(atoms, sizes: str = "") -> str:
    """What the benchmark systems are, for the result files."""
    kind = "periodic (the grid is the cell)" if atoms.pbc.all() else "open boundaries (a cluster in vacuum)"
    return (f"randomly rotated bundled molecules (optimised conformers) on a cubic grid {atoms.info['spacing']} Å "
            f"apart, {kind}, ≈ {density(atoms):.2f} g/cm³{sizes}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# --- cost --------------------------------------------------------------------------------------------
def energy_and_forces(model: Potential, atoms, device: torch.device):
    batch = Batch.from_atoms([atoms]).to(device, model_dtype(model))
    return lambda: model(batch, forces=True)


PRETRAINED = "pretrained:"


def load_model(model_path: str) -> torch.nn.Module:
    """A saved kdframe model, or ``pretrained:NAME``: a registered pretrained ensemble (its energy offsets do not
    change the cost)."""
    if model_path.startswith(PRETRAINED):
        from md_acceptance import load_pretrained

        name = model_path[len(PRETRAINED):]
        return load_pretrained([name], torch.device("cpu"))[name]
    return Potential.load(model_path)


def peak_memory(model_path: str, size: int, spacing: float, periodic: bool, device: torch.device) -> float:
    """Bytes one energy + forces call of ``load_model(model_path)`` adds at its peak: the CUDA allocator's peak on a
    GPU; on a CPU, in a fresh process (a warm allocator hides peaks), VmHWM - VmRSS around the first call after a
    small warm-up."""
    if device.type != "cuda":
        out = subprocess.run([sys.executable, __file__, "--memory-of", model_path, str(size), str(spacing),
                              str(int(periodic))], check=True, capture_output=True, text=True).stdout
        return float(out.strip().splitlines()[-1])
    model = load_model(model_path).to(device).eval()
    run = energy_and_forces(model, molecular_box(size, spacing=spacing, periodic=periodic), device)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - base)


def cpu_peak_memory(model_path: str, size: int, spacing: float, periodic: bool) -> float:
    torch.set_num_threads(1)
    model = load_model(model_path).eval()
    energy_and_forces(model, molecular_box(20, seed=3, periodic=False), torch.device("cpu"))()  # one-time set-up
    run = energy_and_forces(model, molecular_box(size, spacing=spacing, periodic=periodic), torch.device("cpu"))
    Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark VmHWM to the current RSS
    base = proc_status_kib("VmRSS")
    run()
    return float(proc_status_kib("VmHWM") - base) * 1024


def time_per_call(run, device: torch.device, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def largest_fitting(model: Potential, device: torch.device, start: int, limit: int, spacing: float,
                    periodic: bool) -> int:
    """Largest box or cluster (doubling from ``start`` atoms) whose energy + forces fit in GPU memory."""
    fits, size = 0, start
    while size <= limit:
        try:
            energy_and_forces(model, molecular_box(size, seed=1, spacing=spacing, periodic=periodic), device)()
            fits, size = size, size * 2
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return fits


def cost_suite(args: argparse.Namespace, device: torch.device) -> str:
    paths = model_paths(args.models)
    models = load_models(paths, device)
    errors = test_force_errors(models, device)
    periodic = args.boundary == "periodic"
    boxes = {size: molecular_box(size, spacing=args.spacing, periodic=periodic) for size in sorted(args.sizes)}
    rows, points = [], {}
    largest = max(boxes)
    for name, model in models.items():
        for size, atoms in boxes.items():
            try:
                seconds = time_per_call(energy_and_forces(model, atoms, device), device, args.repeats)
                memory = peak_memory(paths[name], size, args.spacing, periodic, device)
            except torch.OutOfMemoryError:  # a result, not a failure: the model's limit on this GPU
                torch.cuda.empty_cache()
                rows.append(f"| {name} | {model.n_weights():,} | {len(atoms):,} | out of memory | — | "
                            f"{errors[name]:.1f} |")
                continue
            per_atom = (seconds / len(atoms) * 1e6, memory / len(atoms) / 1024)
            rows.append(f"| {name} | {model.n_weights():,} | {len(atoms):,} | {per_atom[0]:.2f} | "
                        f"{per_atom[1]:.1f} | {errors[name]:.1f} |")
            if size == largest:
                points[name] = (*per_atom, errors[name])
        print(rows[-1], flush=True)
    fits = ""
    if device.type == "cuda":
        fits = "\n\nLargest system whose energy + forces fit on the GPU (doubling from 1,000 atoms):\n\n" + "\n".join(
            f"- {name}: {largest_fitting(model, device, 1000, args.max_atoms, args.spacing, periodic):,} atoms"
            for name, model in models.items())
    sizes = ", ".join(f"{len(a):,}" for a in boxes.values())
    memory_source = "CUDA allocator" if device.type == "cuda" else "VmHWM - VmRSS of a fresh process"
    plots = pareto(points, Path(args.out).with_suffix(""), len(boxes[largest]))
    return f"""# Cost: weights, time and memory per atom, test force error

- command: `{command_line()}`
- {provenance(device.type)}
- systems: {describe(boxes[largest], f"; {sizes} atoms")}; one energy + forces call per system,
  median of {args.repeats} after a warm-up. Memory: the peak the call adds ({memory_source}).
  Force RMSE: test split of `{TEST_CONFIG}` (30 conformations, vs wB97X/6-31G* forces).

| model | trainable weights | atoms | µs / atom (E+F) | peak KiB / atom | test F rmse (kcal/mol/Å) |
|---|---|---|---|---|---|
{chr(10).join(rows)}{fits}

Pareto plots (at the {len(boxes[largest]):,}-atom system, models that fit): {', '.join(f'`{p.name}`' for p in plots)}
"""


def pareto(points: dict[str, tuple[float, float, float]], stem: Path, size: int) -> list[Path]:
    paths = []
    for column, label, suffix in ((0, "µs per atom (energy + forces)", "time"), (1, "peak KiB per atom", "memory")):
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        for name, values in points.items():
            ax.scatter(values[column], values[2], marker="o" if "student" in name else "s")
            ax.annotate(name, (values[column], values[2]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"{label}, {size:,}-atom system")
        ax.set_ylabel("test force RMSE (kcal/mol/Å)")
        fig.tight_layout()
        path = stem.parent / f"{stem.name}_pareto_{suffix}.png"
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
        plt.close(fig)
        paths.append(path)
    return paths


# --- md ----------------------------------------------------------------------------------------------
def md_suite(args: argparse.Namespace, device: torch.device) -> str:
    """The MD acceptance suite (md_acceptance.py) on --pretrained ensembles and --models (default: the cross runs)."""
    from md_acceptance import load_pretrained, md_report

    models = load_pretrained(args.pretrained or [], device)
    if args.models or not models:
        clash = set(models) & {e.split("=", 1)[0] for e in args.models or []}
        if clash:
            raise ConfigError("--models", f"name(s) {', '.join(sorted(clash))} also given to --pretrained",
                              "distinct names")
        models.update(load_models(model_paths(args.models), device))
    reference = args.reference or next(iter(models))
    if reference not in models:
        raise ConfigError("--reference", f"{reference!r} is not a model name", models)
    models = {reference: models[reference], **models}  # the reference first in every table
    atoms = molecular_box(args.md_atoms, seed=args.box_seed, spacing=args.spacing, periodic=args.boundary == "periodic")
    return md_report(args, models, reference, atoms, f"{describe(atoms)}, box seed {args.box_seed}", device,
                     provenance(device.type))


# --- accuracy ------------------------------------------------------------------------------------
# Every teacher -> student pair of the three architectures (TorchANI teachers: pretrained ANI-1ccx and trained here).
ACCURACY_CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs" / "cross").glob("*_to_*.yaml"))
ACCURACY_COLUMNS = ("E rmse (kcal/mol)", "E/atom rmse (kcal/mol)", "dE rmse (kcal/mol)", "F rmse (kcal/mol/Å)")


def ekd_scores(config_path: Path, seed: int, run_root: Path):
    """Run one EKD config with another seed (its own run_dir; seed 0 reuses the config's own) and score
    the teacher ensemble, the student and the control on every evaluation set."""
    from kdframe.workflows.base import Run, load_config

    workflow, config = load_config(config_path)
    if seed != config.seed:
        if config.teachers.files and config.data.split.seed is None:  # a fixed split seed keeps their split
            raise ConfigError(f"{config_path}: teachers.files", "were trained on this config's own data split; "
                              f"with seed {seed} they would be scored on their own training data",
                              ["teachers.train (trained per seed)", "teachers.pretrained"])
        config = config.model_copy(update={"seed": seed, "run_dir": str(run_root / config_path.stem / f"seed{seed}")})
    run = Run(config, config_path, workflow, progress=False)
    workflow.run(run)
    models = {"teacher ensemble": config.teachers.ensemble(run, "teachers", "teacher", config.seed + 1),
              "student": Potential.load(run.dir / "student" / "model.pt").to(run.device),
              "control": Potential.load(run.dir / "control" / "model.pt").to(run.device)}
    counts = {name: (int(data.labelled(["energy"]).sum()),
                     int(data.labelled(["forces"]).sum()) if "forces" in data.labels else 0)
              for name, data in run.eval_sets.items()}
    return run.scores(models), counts


ACCURACY_MODELS = ("teacher ensemble", "student", "control")


def accuracy_suite(args: argparse.Namespace, device: torch.device) -> str:
    rows = []
    summary: dict[tuple[str, str, str, str], list[float]] = {}  # (set, column, config, model) -> values per seed
    for config in args.configs:
        per_seed, counts = zip(*(ekd_scores(ROOT / config, seed, ROOT / "runs" / "bench_accuracy")
                                 for seed in args.seeds))
        for set_name in per_seed[0]:
            sizes = "/".join(f"{np.mean([c[set_name][k] for c in counts]):.0f}" for k in (0, 1))
            for model in ACCURACY_MODELS:
                cells = []
                for column in ACCURACY_COLUMNS:
                    values = [scores[set_name][model].values.get(column, math.nan) for scores in per_seed]
                    summary[set_name, column, Path(config).stem, model] = values
                    cells.append(f"{np.mean(values):.2f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.2f}")
                rows.append(f"| {Path(config).stem} | {set_name} ({sizes}) | {model} | " + " | ".join(cells) + " |")
                print(rows[-1], flush=True)
    plot = accuracy_plot(summary, Path(args.out).with_suffix(".png"))
    return f"""# Accuracy: cross-architecture EKD over seeds

- command: `{command_line()}`
- {provenance(device.type)}
- each config run with seeds {', '.join(map(str, args.seeds))} (the seed sets the data split unless a config
  fixes data.split.seed, the initial weights and the shuffles; seed {args.seeds[0]} is the config's own run); mean ± standard deviation over seeds.
  Energies (E/atom: energy per atom) against the configs' energy labels, forces against their force labels
  (kcal/mol, kcal/mol/Å), each over the configurations of the set that carry that label in the data file at
  run time: (E/F) after the set's name, averaged over seeds (test splits differ by seed).

| config | evaluation set | model | E rmse | E/atom rmse | dE rmse | F rmse |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Plot (E and F rmse, mean ± std over seeds): `{plot.name}`
"""


def accuracy_plot(summary: dict[tuple[str, str, str, str], list[float]], path: Path) -> Path:
    """Grouped bars: one panel per (evaluation set, E or F rmse), configs along x, one bar per model."""
    sets = list(dict.fromkeys(key[0] for key in summary))
    configs = list(dict.fromkeys(key[2] for key in summary))
    columns = (ACCURACY_COLUMNS[0], ACCURACY_COLUMNS[-1])
    fig, axes = plt.subplots(len(sets), len(columns), figsize=(11, 3.2 * len(sets)), squeeze=False)
    x, width = np.arange(len(configs)), 0.8 / len(ACCURACY_MODELS)
    for (row, set_name), (col, column) in itertools.product(enumerate(sets), enumerate(columns)):
        ax = axes[row, col]
        for i, model in enumerate(ACCURACY_MODELS):
            values = [summary[set_name, column, config, model] for config in configs]
            ax.bar(x + (i - 1) * width, [np.mean(v) for v in values], width, label=model,
                   yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in values], capsize=2)
        ax.set_xticks(x, configs, rotation=35, ha="right", fontsize=7)
        ax.set_ylabel(column, fontsize=8)
        ax.set_title(set_name, fontsize=9)
        ax.set_ylim(bottom=0)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


# --- labelling throughput ----------------------------------------------------------------------------
ENSEMBLES = {
    "HIP-NN": "runs/cross/hipnn_to_ani/teacher_*/model.pt",
    "TorchANI": "runs/cross/ani_to_ani/teacher_*/model.pt",
    "MACE": "runs/cross/mace_to_hipnn/teacher_*/model.pt",
}


def teacher_ensembles(device: torch.device) -> dict[str, Ensemble]:
    """The cross runs' trained teacher ensembles, and the pretrained ANI-1ccx ensemble when it is cached."""
    found = {}
    for name, pattern in ENSEMBLES.items():
        paths = sorted(ROOT.glob(pattern))
        if paths:
            found[f"{name} x{len(paths)}"] = Ensemble([Potential.load(p) for p in paths]).to(device)
    try:
        from kdframe_torchani import load_pretrained_ensemble

        ani = load_pretrained_ensemble("ani1ccx")
        found[f"ANI-1ccx x{len(ani.members)} (pretrained)"] = ani.to(device)
    except Exception as exc:  # noqa: BLE001 - not fetched here: say so in the output, measure the rest
        print(f"ANI-1ccx ensemble left out ({exc.__class__.__name__}: {exc}); `kdframe models fetch ani1ccx` adds it")
    if not found:
        sys.exit("no teacher ensembles found: run the cross-architecture configs first (README: Results)")
    return found


def gpu_utilisation(device: torch.device) -> str:
    if device.type != "cuda":
        return "—"
    try:
        return f"{torch.cuda.utilization(device)} %"
    except Exception:  # noqa: BLE001 - needs pynvml / NVML
        return "n/a (no NVML)"


def labelling_suite(args: argparse.Namespace, device: torch.device) -> str:
    import tempfile

    from kdframe.data import read_dataset
    from kdframe.knowledge import offline_knowledge
    from kdframe.knowledge.ensemble import EnsembleForces
    from kdframe.teacher import Teacher

    data = read_dataset(POOL, {"energy": "xtb.energy"})
    rows = []
    for name, ensemble in teacher_ensembles(device).items():
        source = EnsembleForces("teacher_forces")
        rates, utilisation = [], "—"
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:  # a fresh cache: every call labels
                sync(device)
                start = time.perf_counter()
                offline_knowledge(source, Teacher(ensemble, name), data, cache, batch_size=args.label_batch,
                                  device=device, progress=False)
                sync(device)
                rates.append(len(data) / (time.perf_counter() - start))
                utilisation = gpu_utilisation(device)
        rows.append(f"| {name} | {len(ensemble.members)} | {np.median(rates):,.1f} | "
                    f"{np.median(rates) * len(ensemble.members):,.1f} | {utilisation} |")
        print(rows[-1], flush=True)
    return f"""# Labelling throughput: ensemble-averaged teacher forces

- command: `{command_line()}`
- {provenance(device.type)}
- data: the bundled training pool ({len(data)} conformations, {int(data.n_atoms.sum())} atoms,
  {data.n_atoms.min()}-{data.n_atoms.max()} atoms each);
  `offline_knowledge` with the `ensemble_forces` source into a fresh cache, batches of {args.label_batch},
  median of {args.repeats}. GPU utilisation: NVML's last sample after labelling (GPU only).

| teacher ensemble | members | configurations / s | member evaluations / s | GPU utilisation |
|---|---|---|---|---|
{chr(10).join(rows)}
"""


# --- entry point -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--memory-of"]:  # child process of peak_memory
        print(cpu_peak_memory(argv[1], int(argv[2]), float(argv[3]), bool(int(argv[4]))))
        return
    if argv and argv[0] in SCRIPTS:
        script = Path(__file__).resolve().parent / SCRIPTS[argv[0]]
        rest = argv[2:] if argv[1:2] == ["--"] else argv[1:]
        sys.exit(subprocess.call([sys.executable, str(script), *rest]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=["accuracy", "cost", "md", "labelling", *SCRIPTS])
    parser.add_argument("--configs", nargs="+", default=ACCURACY_CONFIGS, help="accuracy: EKD configs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="accuracy: seeds")
    parser.add_argument("--models", nargs="+", metavar="NAME=PATH", help="saved kdframe models (default: cross runs)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+",
                        help=f"cost: system sizes in atoms (default: CPU {CPU_SIZES['sizes']}, "
                             f"GPU {GPU_SIZES['sizes']})")
    parser.add_argument("--repeats", type=int, default=5, help="cost: timed calls per size; labelling: passes")
    parser.add_argument("--label-batch", type=int, default=64, help="labelling: batch size")
    parser.add_argument("--max-atoms", type=int, default=1_000_000, help="cost, GPU: largest system tried")
    parser.add_argument("--md-atoms", type=int,
                        help=f"md: system size in atoms (default: CPU {CPU_SIZES['md_atoms']}, GPU {GPU_SIZES['md_atoms']})")
    parser.add_argument("--spacing", type=float, default=SPACING,
                        help="cost, md: Å between molecule centres (4.5: liquid-like; 5.5: dilute)")
    parser.add_argument("--boundary", choices=["periodic", "open"], default="periodic",
                        help="cost, md: periodic boxes (bulk, no surface) or open clusters in vacuum")
    parser.add_argument("--pretrained", nargs="+", metavar="NAME=KEY",
                        help="md: registered pretrained ensembles (e.g. teacher=ani1ccx; `kdframe models fetch KEY`)")
    parser.add_argument("--reference", help="md: the model the others are compared with (default: the first "
                                            "--pretrained, else the first --models)")
    parser.add_argument("--timesteps", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0], metavar="FS")
    parser.add_argument("--steps", type=int, help=f"md: steps per box run (default: CPU {CPU_SIZES['steps']}, "
                                                  f"GPU {GPU_SIZES['steps']})")
    parser.add_argument("--duration-fs", type=float, help="md: simulated fs per box run at every time step "
                                                          "(instead of --steps, e.g. 2000 for 2 ps)")
    parser.add_argument("--gas-steps", type=int, help="md: steps per gas-phase run (0: no gas phase; default: --steps)")
    parser.add_argument("--box-seed", type=int, default=2, help="md: the seed that draws the box's molecules and "
                        "orientations (default 2; another seed gives another box of the same size)")
    parser.add_argument("--replicas", type=int, default=3, help="md: velocity seeds per time step (and molecule)")
    parser.add_argument("--rdf-timestep", type=float, metavar="FS", help="md: the RDFs' time step (default: the smallest)")
    parser.add_argument("--rdf-every", type=int, default=5, help="md: steps between RDF frames")
    parser.add_argument("--rdf-max", type=float, default=6.0, help="md: RDF range (Å)")
    parser.add_argument("--rdf-bins", type=int, default=120, help="md: RDF bins")
    parser.add_argument("--speed-steps", type=int, default=20, help="md: MD steps per timed segment")
    parser.add_argument("--speed-repeats", type=int, default=5, help="md: timed segments per model")
    parser.add_argument("--threads", type=int, help="torch threads (default: 1 on a CPU)")
    parser.add_argument("--out", help="result file (default: benchmarks/results/<suite>.md, <suite>_gpu.md on a GPU)")
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    for key, value in (GPU_SIZES if on_gpu else CPU_SIZES).items():
        setattr(args, key, getattr(args, key) or value)
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"{args.suite}{'_gpu' if on_gpu else ''}.md")
    args.gas_steps = args.steps if args.gas_steps is None else args.gas_steps
    if args.duration_fs is not None and args.duration_fs < max(args.timesteps):
        parser.error(f"--duration-fs {args.duration_fs:g} is shorter than a time step of --timesteps "
                     f"({max(args.timesteps):g} fs)")
    torch.set_num_threads(args.threads or (1 if args.device == "cpu" else torch.get_num_threads()))
    device = torch.device(args.device)
    suites = {"accuracy": accuracy_suite, "cost": cost_suite, "md": md_suite, "labelling": labelling_suite}
    try:
        text = suites[args.suite](args, device)
    except KdframeError as exc:
        sys.exit(f"error: {exc}")
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
