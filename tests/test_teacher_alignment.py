import numpy as np
import torch

from kdframe.data import read_dataset
from kdframe.plugins import registry
from kdframe.potential import Ensemble, Potential
from kdframe.teacher import Teacher, align_reference_energies


def test_a_teacher_from_elsewhere_is_shifted_onto_the_data_energy_scale(ani_file):
    data = read_dataset(ani_file, {"energy": "morse.energy"})
    torch.manual_seed(0)
    teacher = Teacher(Ensemble([Potential(registry().architectures["toy"], {"width": 8}, [1, 6, 7, 8]).double()
                                for _ in range(2)]), "t")
    before = teacher.predict(data.batch(np.arange(len(data))))
    shift = np.zeros(9)
    shift[[1, 6, 7, 8]] = [-13.6, -1029.5, -1485.1, -2041.3]  # another level's atomic energies (eV)
    labels = before["energy"][:, 0].numpy() + data.element_counts() @ shift
    data = data.with_labels(energy=labels)

    offsets = align_reference_energies(teacher, data, "energy")

    present = [z for z in (1, 6, 7, 8) if data.element_counts()[:, z].any()]
    np.testing.assert_allclose(offsets[present], shift[present], atol=1e-6)
    after = teacher.predict(data.batch(np.arange(len(data))))
    np.testing.assert_allclose(after["energy"][:, 0].numpy(), labels, atol=1e-6)
    torch.testing.assert_close(after["forces"], before["forces"])  # forces are untouched


def test_the_aligned_teachers_fingerprint_does_not_depend_on_the_last_bits_of_the_fit(ani_file):
    """Offsets are rounded to 1e-6 eV: a fit whose last bits differ (torch's thread count changes the sums) gives the
    same aligned teacher, so its cached knowledge and the stages it taught stay valid."""
    data = read_dataset(ani_file, {"energy": "morse.energy"})
    prints = []
    for jitter in (0.0, 1e-10):
        torch.manual_seed(0)
        teacher = Teacher(Potential(registry().architectures["toy"], {"width": 8}, [1, 6, 7, 8]).double(), "t")
        align_reference_energies(teacher, data.with_labels(energy=data.labels["energy"] + jitter * data.n_atoms),
                                 "energy")
        prints.append(teacher.fingerprint())
    assert prints[0] == prints[1]
