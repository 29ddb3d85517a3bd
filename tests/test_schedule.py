import pytest

from kdframe.errors import ConfigError
from kdframe.schedule import make_schedule
from kdframe.workflows.ekd import FORCE_SCHEDULE

BORN_AGAIN_WA = {1: 200, 200: 160, 250: 120, 300: 80, 350: 40, 400: 0}


def test_piecewise_constant_returns_the_table_values():
    w = make_schedule(FORCE_SCHEDULE, "w")
    for epoch, value in FORCE_SCHEDULE.items():
        assert w(epoch) == value
    assert w(19) == 10 and w(21) == 9 and w(199) == 1 and w(1000) == 0.5


def test_piecewise_linear_interpolates_between_rows():
    w = make_schedule({"type": "linear", "table": BORN_AGAIN_WA}, "w")
    assert w(1) == 200 and w(200) == 160 and w(225) == 140 and w(400) == 0 and w(500) == 0


def test_constant():
    assert make_schedule(0.5, "w")(77) == 0.5


@pytest.mark.parametrize("spec", [{}, {"type": "cubic", "table": {1: 1}}, {0: 1.0}, "ten", {1: "x"}, True])
def test_bad_schedules_name_their_path(spec):
    with pytest.raises(ConfigError, match="student.weights.forces"):
        make_schedule(spec, "student.weights.forces")
