"""Hessian labels from ANI files (packing, padding, units) and the `hessian` workflow end to end (toy model)."""

import textwrap

import h5py
import numpy as np
import pytest
import torch

from kdframe import derivatives
from kdframe.cli import main
from kdframe.data import read_dataset
from kdframe.data.dataset import concatenate
from kdframe.units import HARTREE_TO_EV

from toy import morse_energy


@pytest.fixture
def hessian_file(ani_file):
    """The Morse file plus `morse.hessian` (n_conf, 3N, 3N) in Hartree/Å², the last conformation of water missing."""
    with h5py.File(ani_file, "a") as f:
        for group in f.values():
            z = torch.tensor(group["atomic_numbers"][()])
            blocks = [torch.autograd.functional.hessian(lambda x: morse_energy(z, x.reshape(-1, 3)),
                                                        torch.tensor(c).flatten()).numpy() / HARTREE_TO_EV
                      for c in group["coordinates"][()]]
            group["morse.hessian"] = np.array(blocks)
        f["water/morse.hessian"][-1] = np.nan
    return ani_file


def test_reader_packs_hessians_in_ev_padded_to_the_largest_molecule(hessian_file):
    data = read_dataset(hessian_file, {"energy": "morse.energy", "hessian": "morse.hessian"})
    label = data.labels["hessian"]
    assert label.shape == (len(data.species), 3, 6, 3) and data.label_kind("hessian") == "atom"  # methanol: 6 atoms
    with h5py.File(hessian_file) as f:
        names = list(f)
        for m, name in enumerate(names):
            ref = f[name]["morse.hessian"][()] * HARTREE_TO_EV
            for c in np.flatnonzero(data.molecule == m)[:2]:
                k = int(np.flatnonzero(data.molecule == m).tolist().index(c))
                n = int(data.n_atoms[c])
                rows = label[data.atom_ptr[c]:data.atom_ptr[c + 1]]
                np.testing.assert_allclose(rows[:, :, :n].reshape(3 * n, 3 * n), ref[k])
                assert np.isnan(rows[:, :, n:]).all()
    water = np.flatnonzero(data.molecule == names.index("water"))
    assert np.isnan(label[data.atom_indices(water[-1:])]).all()
    assert data.labelled(["hessian"]).sum() == len(data) - 1  # padding is not a missing label
    batch = data.batch(water[:3])
    v = torch.randn(batch.n_atoms, 3, dtype=torch.float64)
    hv = derivatives.hessian_times(batch.labels["hessian"], v, batch)
    block = label[data.atom_indices(water[:1])][:, :, :3].reshape(9, 9)
    np.testing.assert_allclose(hv[:3].numpy().ravel(), block @ v[:3].numpy().ravel())
    small = data.subset(water)
    small.labels["hessian"] = small.labels["hessian"][:, :, :3]
    both = concatenate([small, data.subset(np.flatnonzero(data.molecule != names.index("water")))])
    assert both.labels["hessian"].shape[2] == 6
    np.testing.assert_array_equal(both.labels["hessian"][:len(small.species), :, :3], small.labels["hessian"])
    assert np.isnan(both.labels["hessian"][:len(small.species), :, 3:]).all()


CONFIG = """
workflow: hessian
run_dir: {run_dir}
seed: 0
device: cpu
data:
  train: {{path: {data}, energy: morse.energy, forces: morse.forces, hessian: morse.hessian}}
  split: {{by: configuration, fractions: {{train: 0.6, valid: 0.2, test: 0.2}}}}
training: {{batch_size: 8, max_epochs: 2, lr: 0.003, dtype: float64}}
model: {{architecture: toy, width: 8}}
variants:
  E-F: {{}}
  E-F-HVP fresh: {{weights: {{energy: 1, forces: 10, hvp: 1}}, probes: {{kind: gaussian, regime: fresh}}}}
  E-F-H: {{weights: {{energy: 1, forces: 10, hessian: 1}}, model: {{architecture: toy, width: 12}}}}
distillation:
  teacher: E-F-H
  student:
    model: {{architecture: toy, width: 4}}
    weights: {{energy: 1, forces: 10, teacher_hvp: 1}}
    probes: {{kind: one_hot, regime: fixed}}
"""


def test_hessian_workflow_table_with_hessian_errors(tmp_path, hessian_file, capsys, monkeypatch):
    monkeypatch.setattr("kdframe.report.parity_plot", lambda *args: False)  # plots cost seconds, tested elsewhere
    config = tmp_path / "h.yaml"
    config.write_text(textwrap.dedent(CONFIG.format(run_dir=tmp_path / "run", data=hessian_file)))
    assert main(["run", str(config), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| H rmse | H mae | freq rmse |" in out and "| test | E-F-HVP fresh |" in out
    header = next(x for x in out.splitlines() if x.startswith("| set |")).split("|")
    for row in ("E-F", "E-F-H", "student (E-F-H HVPs)", "control (student size, E-F)"):
        line = next(x for x in out.splitlines() if x.startswith(f"| test | {row} |")).split("|")
        assert float(line[header.index(" H rmse ")]) > 0 and float(line[header.index(" freq rmse ")]) > 0
    run = tmp_path / "run"
    assert len(list((run / "knowledge").glob("teacher_hvp-*.h5"))) == 1  # fixed probes: cached offline
    assert {p.name for p in run.iterdir()} >= {"e_f", "e_f_hvp_fresh", "e_f_h", "student", "control", "report.md"}
    assert "| median s/epoch | total s |" in out and (run / "plots" / "time_to_accuracy.png").is_file()
    assert "(plots/time_to_accuracy.png)" in (run / "report.md").read_text()
    assert main(["run", str(config), "--quiet"]) == 0 and capsys.readouterr().out == out  # stages reused
    config.write_text(config.read_text().replace("  teacher: E-F-H\n", "  teacher: E-F-X\n"))
    assert main(["run", str(config), "--quiet"]) == 2
    assert "distillation.teacher: 'E-F-X' is not a variant" in capsys.readouterr().err


def test_a_student_on_fresh_teacher_probes_trains(tmp_path, hessian_file, capsys, monkeypatch):
    """Teacher HVPs along fresh probes come online, not from the data (the shipped config's case)."""
    monkeypatch.setattr("kdframe.report.parity_plot", lambda *args: False)
    text = textwrap.dedent(CONFIG.format(run_dir=tmp_path / "run", data=hessian_file))
    config = tmp_path / "h.yaml"
    config.write_text(text.replace("probes: {kind: one_hot, regime: fixed}", "probes: {kind: rademacher, regime: fresh}"))
    assert main(["run", str(config), "--quiet"]) == 0, capsys.readouterr().err
    assert "student (E-F-H HVPs)" in capsys.readouterr().out
    assert not list((tmp_path / "run" / "knowledge").glob("teacher_hvp-*.h5"))  # online: nothing cached


def test_a_pretrained_ensemble_teaches_its_hvps(tmp_path, hessian_file, capsys, monkeypatch):
    """``distillation.teacher: {pretrained: NAME}``: the student learns that ensemble's H·v, not a variant's."""
    from kdframe.plugins import registry
    from kdframe.potential import Ensemble, Potential
    from kdframe.teacher import Teacher

    def zoo():
        torch.manual_seed(7)
        return Ensemble([Potential(registry().architectures["toy"], {"width": 6}, [1, 6, 7, 8], ["energy"]).double()
                         for _ in range(2)])

    monkeypatch.setitem(registry().pretrained, "toyzoo", zoo)
    monkeypatch.setattr("kdframe.report.parity_plot", lambda *args: False)
    text = textwrap.dedent(CONFIG.format(run_dir=tmp_path / "run", data=hessian_file))
    config = tmp_path / "h.yaml"
    config.write_text(text.replace("  teacher: E-F-H\n", "  teacher: {pretrained: toyzoo, align_energies: false}\n"))
    assert main(["run", str(config), "--quiet"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "| test | student (pretrained toyzoo HVPs) |" in out and "| test | pretrained toyzoo |" in out
    cost = next(line for line in out.splitlines() if line.startswith("| pretrained toyzoo |")).split("|")
    assert int(cost[2]) == sum(p.numel() for p in zoo().parameters()) and cost[3].strip() == "0"  # not trained here
    stage = (tmp_path / "run" / "student" / "stage.json").read_text()
    assert Teacher(zoo(), "z").fingerprint() in stage  # taught by the pretrained ensemble
    config.write_text(text.replace("  teacher: E-F-H\n", "  teacher: {pretrained: nozoo}\n"))
    assert main(["run", str(config), "--quiet"]) == 2
    assert "distillation.teacher.pretrained: unknown pretrained 'nozoo'" in capsys.readouterr().err


def test_variants_may_be_left_out_only_for_a_teacher_from_elsewhere(tmp_path, hessian_file, capsys, monkeypatch):
    import re

    from kdframe.plugins import registry
    from kdframe.potential import Ensemble, Potential

    monkeypatch.setitem(registry().pretrained, "toyzoo", lambda: Ensemble([
        Potential(registry().architectures["toy"], {"width": 6}, [1, 6, 7, 8], ["energy"]).double()]))
    monkeypatch.setattr("kdframe.report.parity_plot", lambda *args: False)
    text = re.sub(r"variants:\n(  .*\n)+", "", textwrap.dedent(CONFIG.format(run_dir=tmp_path / "run", data=hessian_file)))
    config = tmp_path / "h.yaml"
    config.write_text(text)
    assert main(["run", str(config), "--quiet"]) == 2
    assert "distillation.teacher: 'E-F-H' is not a variant" in capsys.readouterr().err
    config.write_text(text[:text.index("distillation:")])
    assert main(["run", str(config), "--quiet"]) == 2
    assert "variants: give at least one variant, or a distillation block whose teacher" in capsys.readouterr().err
    config.write_text(text.replace("  teacher: E-F-H\n", "  teacher: {pretrained: toyzoo}\n"))
    assert main(["run", str(config), "--quiet"]) == 0, capsys.readouterr().err
    rows = {line.split("|")[2].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("| test |")}
    assert rows == {"pretrained toyzoo", "student (pretrained toyzoo HVPs)", "control (student size, E-F)"}


@pytest.mark.parametrize("change, message", [
    (("  teacher: E-F-H\n", "  teacher: 5\n"), "distillation.teacher: 5: give a variant's name, or a teacher block"),
    (("  teacher: E-F-H\n", "  teacher: {train: {model: {architecture: toy}}}\n"),
     "distillation.teacher: a teacher trained here is a variant: add it under variants"),
    (("  teacher: E-F-H\n", "  teacher: {pretrained: ani1x, model: [a]}\n"), "distillation.teacher: 'model' is now"),
    (("  teacher: E-F-H\n", "  teacher: {pretrained: ani1x, colour: red}\n"),
     "distillation.teacher.colour: unknown key (valid: align_energies, files, pretrained, train)"),
    (("  teacher: E-F-H\n", "  teacher: ani1ccx\n"), "for the pretrained ensemble write {pretrained: ani1ccx}"),
    (("  E-F: {}\n", "  Student: {}\n"), "variants: ['student'] would share a folder of the run directory"),
])
def test_bad_distillation_blocks_are_one_clear_error(tmp_path, hessian_file, capsys, change, message):
    config = tmp_path / "h.yaml"
    config.write_text(textwrap.dedent(CONFIG.format(run_dir=tmp_path / "run", data=hessian_file)).replace(*change))
    assert main(["run", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_an_element_the_outside_teacher_lacks_fails_before_any_variant_trains(tmp_path, hessian_file, capsys,
                                                                             monkeypatch):
    from kdframe.plugins import registry
    from kdframe.potential import Ensemble, Potential

    monkeypatch.setitem(registry().pretrained, "toyzoo", lambda: Ensemble([
        Potential(registry().architectures["toy"], {"width": 6}, [1, 6, 8], ["energy"]).double()]))
    config = tmp_path / "h.yaml"
    text = textwrap.dedent(CONFIG.format(run_dir=tmp_path / "run", data=hessian_file))
    config.write_text(text.replace("  teacher: E-F-H\n", "  teacher: {pretrained: toyzoo}\n"))
    assert main(["run", str(config), "--quiet"]) == 2
    assert "distillation.teacher: pretrained toyzoo knows elements [1, 6, 8], but the data also has [7]" in \
        capsys.readouterr().err
    assert not list((tmp_path / "run").glob("e_f*"))
