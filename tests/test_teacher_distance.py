"""benchmarks/teacher_distance.py: the per-molecule dE table."""

import numpy as np

from kdframe.data.dataset import Dataset
from kdframe.units import KCAL_MOL_TO_EV
from repo_scripts import load_script


def test_per_molecule_table_scores_each_molecule_on_its_own_pairs():
    table = load_script("benchmarks/teacher_distance.py").per_molecule_table
    n = 7  # two molecules of three one-atom conformers each, and one of a single conformer (no pairs: no row)
    reference = np.array([0.0, 0.1, 0.2, 0.0, 0.1, 0.2, 0.0])
    data = Dataset(species=np.ones(n, dtype=np.int64), positions=np.zeros((n, 3)), atom_ptr=np.arange(n + 1),
                   molecule=np.array([0, 0, 0, 1, 1, 1, 2]), molecule_names=["exact", "off", "single"],
                   labels={"energy": reference})
    teacher = reference + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 3 * KCAL_MOL_TO_EV, 0.0])  # off by 3 kcal/mol on one
    student = teacher + 5.0  # a constant shift: no dE error against the teacher
    rows = {line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ")[1:]
            for line in table(data, teacher, {"student": student}).splitlines()[3:]}
    # pairs (0,1), (0,2), (1,2): the third conformer's 3 kcal/mol shows in two of three pair differences
    off = f"{np.sqrt(2 * 9 / 3):.2f}"
    assert rows["exact"] == ["3", "0.00", "0.00", "0.00"]
    assert rows["off"] == ["3", off, off, "0.00"]
    assert set(rows) == {"exact", "off"}
