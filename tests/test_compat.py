"""cmir_tf.compat: every private Keras / TensorFlow hook the package relies on exists in the installed versions."""
import pytest

from cmir_tf import compat


@pytest.mark.parametrize("name", sorted(compat.HOOKS))
def test_each_hook_exists_in_the_installed_versions(name):
    assert compat.problem(name) is None, compat.HOOKS[name][0]
    compat.require(name)


def test_a_missing_hook_fails_naming_it_and_the_tested_versions(monkeypatch):
    monkeypatch.setitem(compat._checked, "freeze", "missing")
    with pytest.raises(compat.IncompatibleVersionError) as info:
        compat.freeze_variables(None)
    message = str(info.value)
    assert "convert_variables_to_constants_v2 (missing)" in message
    assert "keras 3.15.1 and tensorflow 2.17.1" in message and "keras>=3.15,<3.16" in message


def test_setup_pins_keras_to_the_tested_minor_release():
    from pathlib import Path

    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text(encoding="utf-8")
    assert '"keras>=3.15,<3.16"' in setup
    major, minor = compat.TESTED["keras"].split(".")[:2]
    assert (major, minor) == ("3", "15")
