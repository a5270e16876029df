"""The tp07 lab's probes on facts taken from the .ko (fast, no guest)."""
from __future__ import annotations

from types import SimpleNamespace

from grader.inspect_ko import _params
from grader.labs.tp07.probes import Tp07Probes
from grader.rubric import load_rubric


def _probes(modinfo: dict[str, list[str]]) -> Tp07Probes:
    run = SimpleNamespace(settings=load_rubric("tp07").settings,
                          info=SimpleNamespace(params=_params(modinfo)))
    return Tp07Probes(run)  # type: ignore[arg-type]


def test_a_period_parameter_is_one_module_param_declares():
    p = _probes({"parmtype": ["target:int", "period_ms:uint"],
                 "parm": ["period_ms:Sampling period"]})
    assert p.period_param() == "period_ms"
    assert p.nominal_period_s("warped") == load_rubric("tp07").settings["period_value_ms"] / 1000


def test_a_description_left_without_its_parameter_is_no_parameter():
    """MODULE_PARM_DESC() without module_param(): the module samples at its own pace, and the
    grader must measure it, not assume the period it would have set."""
    p = _probes({"parmtype": ["target:int"], "parm": ["period_ms:Sampling period"]})
    assert p.period_param() is None
    assert p.nominal_period_s("warped") is None
