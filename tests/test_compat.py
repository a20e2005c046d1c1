"""cmir_tf.model.compat: every private Keras / TensorFlow hook the package relies on exists in the installed versions."""
import pytest

from cmir_tf.model import compat


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
    assert "keras 3.15.1 and tensorflow 2.17.1 / 2.21.0" in message
    assert "keras>=3.15,<3.16 and tensorflow>=2.17,<2.22" in message


def test_setup_admits_exactly_the_supported_ranges():
    from pathlib import Path

    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text(encoding="utf-8")
    (k0, k1), (k2, k3) = compat.KERAS_RANGE
    (t0, t1), (t2, t3) = compat.TENSORFLOW_RANGE
    assert f'"keras>={k0}.{k1},<{k2}.{k3 + 1}"' in setup
    assert f'"tensorflow>={t0}.{t1},<{t2}.{t3 + 1}"' in setup
    assert 'python_requires=">=3.10,<3.14"' in setup
    for name, (low, high) in (("keras", compat.KERAS_RANGE), ("tensorflow", compat.TENSORFLOW_RANGE)):
        assert all(low <= compat._minor(v) <= high for v in compat.TESTED[name])


def test_the_installed_versions_are_supported():
    assert compat.version_problem() is None


@pytest.mark.parametrize("keras_version, tf_version, culprit", [
    ("3.16.0", "2.21.0", "keras 3.16.0"), ("3.14.2", "2.17.1", "keras 3.14.2"),
    ("3.15.1", "2.16.2", "tensorflow 2.16.2"), ("3.15.1", "2.22.0rc1", "tensorflow 2.22.0rc1")])
def test_an_untested_version_is_refused_naming_it(monkeypatch, keras_version, tf_version, culprit):
    assert culprit in compat.version_problem(keras_version, tf_version)
    monkeypatch.setattr(compat, "version_problem", lambda: f"{culprit} is outside the supported range")
    monkeypatch.delenv(compat.ALLOW_UNTESTED, raising=False)
    with pytest.raises(compat.IncompatibleVersionError) as info:
        compat.require("freeze")
    assert culprit in str(info.value) and compat.ALLOW_UNTESTED in str(info.value)
    monkeypatch.setenv(compat.ALLOW_UNTESTED, "1")
    compat.require("freeze")  # allowed through; the hook itself is still probed


@pytest.mark.parametrize("keras_version, tf_version", [("3.15.0", "2.17.0"), ("3.15.1", "2.21.0"),
                                                       ("3.15.1", "2.19.1"), ("3.15.2.dev0", "2.20.0")])
def test_every_release_in_the_ranges_is_accepted(keras_version, tf_version):
    assert compat.version_problem(keras_version, tf_version) is None
