"""Every use of a non-public Keras / TensorFlow API in cmir_tf, fenced and checked against the installed versions.

Tested with **keras 3.15.1** on **tensorflow 2.17.1** (with numpy 1.26, the oldest supported pair) and
**tensorflow 2.21.0** (with numpy 2, the newest); ``setup.py`` admits ``keras>=3.15,<3.16`` and
``tensorflow>=2.17,<2.22`` (:data:`KERAS_RANGE`, :data:`TENSORFLOW_RANGE`). A Keras or TensorFlow outside
those ranges (one a notebook image preinstalled, say) is refused on the first use of any hook, naming
the versions, rather than left to misbehave; setting ``CMIR_TF_ALLOW_UNTESTED=1`` lets such a version
through (each hook is still probed). Each hook below is probed on its first use (and all of them by
``tests/test_compat.py``); when the installed version lacks one, that use raises
:class:`IncompatibleVersionError` (a ``ConfigError``: one ``error:`` line on the command line, exit 2)
naming the hook, what is missing, the installed versions and the tested ones. Nothing else in the
package imports ``keras.src`` or ``tensorflow.python`` / ``tensorflow.core``.

Hooks, what each is for, and the public route examined:

``symbolic_build`` — :class:`BuiltModelMixin` overrides Keras's private ``_maybe_symbolic_build(iterator,
    data_batch)``, which Keras's TF trainer calls before the first step of ``fit`` / ``evaluate`` /
    ``train_on_batch``. Under a ``tf.distribute`` strategy Keras (i) pulls the first batch out of the
    epoch's iterator — with ``steps_per_epoch`` set that batch is never trained on — and (ii) averages
    it over the replicas to trace a symbolic build, which fails on the pipeline's bool ``genre_mask``
    ("AddN" has no bool kernel). ``ContrastiveModel`` creates every variable in its constructor, so the
    only thing left to build is the optimizer; the override does that with public calls
    (``optimizer.build(trainable_variables)`` in the strategy's scope) and needs no batch. Public
    routes examined: building the optimizer beforehand does not help (Keras averages the batch before
    it looks at what is built); casting the mask to a number in the dataset makes the average succeed
    but still costs the first training batch of every ``fit`` — a change of the data stream.
``multiworker_reduce`` — :func:`patch_multiworker_scalar_reduce` replaces
    ``keras.src.backend.tensorflow.trainer.reduce_per_replica`` (process-wide; installed only when the
    multi-worker strategy is made). Keras 3.15 reduces every per-replica step output under
    ``MultiWorkerMirroredStrategy`` with ``strategy.reduce("MEAN", v, axis=0)``, which fails on the
    scalar losses ``train_step`` returns ("Invalid reduction dimension 0 for input with 0
    dimensions"); the patch averages scalars with ``axis=None`` and hands everything else to Keras's
    own function. Uses Keras's private ``_collective_all_reduce_multi_worker`` to decide when.
    Public route examined: returning shape-(1,) outputs from ``train_step`` under that strategy makes
    Keras's ``axis=0`` mean give a scalar, but the per-batch logs every callback sees would then be
    arrays on some strategies and scalars on others.
``freeze`` — :func:`freeze_variables`: ``tensorflow.python.framework.convert_to_constants.
    convert_variables_to_constants_v2``, to fold the audio encoder's variables into a frozen GraphDef
    (Essentia's format). The only public freezer, ``tf.compat.v1.graph_util.convert_variables_to_constants``,
    needs a TF1 ``Session`` over a TF1 graph, which Keras 3 layers do not build.
``op_def`` — :func:`op_def`: ``tensorflow.python.framework.op_def_registry.get``, the ``OpDef`` of an op
    type (its attributes' default values, and whether it is a core op at all), to strip default-valued
    attributes from the frozen graph. No public API exposes ``OpDef``s.
``xla_context`` — :func:`in_xla_context`: ``tensorflow.python.ops.control_flow_util.
    GraphOrParentsInXlaContext`` on the default graph, whether the code being traced is inside an
    XLA-compiled function (``tf.function(jit_compile=True)``). ``distribute.gather_rows`` then gathers
    the replicas' rows with an all-reduce instead of ``all_gather``, which always leaves the replica
    through a ``merge_call`` that an XLA-compiled step cannot contain. It is the test
    ``MirroredStrategy`` itself uses to drop its merge calls under XLA. Public route examined: none
    tells a function whether it is being compiled; passing a flag down would have to reach every loss
    term that gathers.
``weights_only`` — :func:`save_model_weights` / :func:`load_model_weights`: ``keras.src.saving.saving_lib.
    save_weights_only`` / ``load_weights_only`` with ``objects_to_skip=[model.optimizer]``: a model's
    weights without its optimizer's. ``Model.save_weights`` of a compiled model also writes every
    optimizer variable (Adam: twice the weights again), and ``Model.load_weights`` into an optimizer not
    yet built skips them with "Skipping variable loading for optimizer 'adam', because it has 2 variables
    whereas the saved optimizer has N" (Keras 3). A run's checkpoints are read only by export and
    evaluation (no optimizer) and its backup keeps the optimizer in ``optimizer.npz``, so they are written
    without it: a third of the size, and nothing for a resume to skip. The public ``save_weights`` /
    ``load_weights`` take no ``objects_to_skip``; files written before (with the optimizer) still load.
``saved_model_proto`` — :func:`read_saved_model_proto`: ``tensorflow.core.protobuf.saved_model_pb2``,
    the SavedModel protocol buffer, to list the op types a written SavedModel uses. A generated
    protobuf module (stable), but outside the documented ``tf.*`` namespace.
"""
from __future__ import annotations

import inspect
import os

from cmir_tf.errors import ConfigError

TESTED = {"keras": ("3.15.1",), "tensorflow": ("2.17.1", "2.21.0")}
# (first, last) supported minor releases, inclusive; setup.py's install_requires spells the same ranges
KERAS_RANGE = ((3, 15), (3, 15))
TENSORFLOW_RANGE = ((2, 17), (2, 21))
ALLOW_UNTESTED = "CMIR_TF_ALLOW_UNTESTED"


class IncompatibleVersionError(ConfigError):
    """The installed Keras / TensorFlow lacks an API cmir_tf relies on (see the module docstring)."""


def _installed() -> str:
    import keras
    import tensorflow as tf

    return f"keras {keras.__version__}, tensorflow {tf.__version__}"


def _minor(version: str) -> tuple[int, int]:
    major, minor = (version.split("+")[0].split(".") + ["0"])[:2]
    digits = "".join(c for c in minor if c.isdigit()) or "0"
    return int(major), int(digits)


def _tested() -> str:
    return (f"keras {' / '.join(TESTED['keras'])} and tensorflow {' / '.join(TESTED['tensorflow'])}: "
            "install keras>=3.15,<3.16 and tensorflow>=2.17,<2.22 (pip install -e .)")


def version_problem(keras_version: str | None = None, tf_version: str | None = None) -> str | None:
    """Why the installed (or given) Keras / TensorFlow are outside the supported ranges (None: inside)."""
    if keras_version is None or tf_version is None:
        import keras
        import tensorflow as tf

        keras_version, tf_version = keras.__version__, tf.__version__
    for name, version, (low, high) in (("keras", keras_version, KERAS_RANGE),
                                       ("tensorflow", tf_version, TENSORFLOW_RANGE)):
        if not low <= _minor(version) <= high:
            return (f"{name} {version} is outside the supported range "
                    f"{low[0]}.{low[1]}–{high[0]}.{high[1]}")
    return None


def check_versions() -> None:
    """Raise :class:`IncompatibleVersionError` for an untested Keras / TensorFlow (unless allowed)."""
    reason = version_problem()
    if reason and os.environ.get(ALLOW_UNTESTED) != "1":
        raise IncompatibleVersionError(
            f"{reason}; cmir_tf relies on private Keras/TensorFlow hooks tested with {_tested()}, "
            f"or set {ALLOW_UNTESTED}=1 to try this version anyway")


def _has_params(fn, names) -> str | None:
    if fn is None:
        return "missing"
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "signature unreadable"
    absent = [n for n in names if n not in params]
    return f"no parameter(s) {', '.join(absent)}" if absent else None


def _probe_symbolic_build():
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    return _has_params(getattr(TensorFlowTrainer, "_maybe_symbolic_build", None), ("iterator", "data_batch"))


def _probe_multiworker_reduce():
    from keras.src.backend.tensorflow import trainer

    if not callable(getattr(trainer, "_collective_all_reduce_multi_worker", None)):
        return "missing _collective_all_reduce_multi_worker"
    return _has_params(getattr(trainer, "reduce_per_replica", None), ("values", "strategy", "reduction"))


def _probe_freeze():
    from tensorflow.python.framework import convert_to_constants

    return _has_params(getattr(convert_to_constants, "convert_variables_to_constants_v2", None), ("func",))


def _probe_op_def():
    from tensorflow.python.framework import op_def_registry

    return None if callable(getattr(op_def_registry, "get", None)) else "missing get"


def _probe_xla_context():
    from tensorflow.python.ops import control_flow_util

    return _has_params(getattr(control_flow_util, "GraphOrParentsInXlaContext", None), ("graph",))


def _probe_weights_only():
    from keras.src.saving import saving_lib

    return (_has_params(getattr(saving_lib, "save_weights_only", None), ("model", "filepath", "objects_to_skip"))
            or _has_params(getattr(saving_lib, "load_weights_only", None), ("model", "filepath", "objects_to_skip")))


def _probe_saved_model_proto():
    from tensorflow.core.protobuf import saved_model_pb2

    return None if hasattr(saved_model_pb2, "SavedModel") else "missing SavedModel"


HOOKS = {
    "symbolic_build": ("keras.src.backend.tensorflow.trainer.TensorFlowTrainer._maybe_symbolic_build",
                       _probe_symbolic_build),
    "multiworker_reduce": ("keras.src.backend.tensorflow.trainer.reduce_per_replica", _probe_multiworker_reduce),
    "freeze": ("tensorflow.python.framework.convert_to_constants.convert_variables_to_constants_v2", _probe_freeze),
    "op_def": ("tensorflow.python.framework.op_def_registry.get", _probe_op_def),
    "saved_model_proto": ("tensorflow.core.protobuf.saved_model_pb2.SavedModel", _probe_saved_model_proto),
    "xla_context": ("tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext", _probe_xla_context),
    "weights_only": ("keras.src.saving.saving_lib.save_weights_only(objects_to_skip=)", _probe_weights_only),
}
_checked: dict[str, str | None] = {}


def problem(name: str) -> str | None:
    """Why hook ``name`` is unusable in the installed versions (None: it is there). Cached."""
    if name not in _checked:
        _, probe = HOOKS[name]
        try:
            _checked[name] = probe()
        except ImportError as exc:
            _checked[name] = f"cannot import ({exc})"
    return _checked[name]


def require(name: str) -> None:
    """Raise :class:`IncompatibleVersionError` unless the versions are supported (:func:`check_versions`)
    and hook ``name`` exists in them."""
    check_versions()
    reason = problem(name)
    if reason:
        target, _ = HOOKS[name]
        raise IncompatibleVersionError(
            f"cmir_tf relies on {target} ({reason}) in {_installed()}; it was tested with {_tested()}")


# ------------------------------------------------------------------------------------- symbolic_build
class BuiltModelMixin:
    """For a ``keras.Model`` that creates every variable in its constructor (see ``symbolic_build``).

    Put it before ``keras.Model`` in the bases; call :func:`require` ``("symbolic_build")`` when the
    model is made inside a strategy scope (the only case Keras's own build would fail).
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if not (self.built and all(layer.built for layer in self.layers)):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)


# --------------------------------------------------------------------------------- multiworker_reduce
def patch_multiworker_scalar_reduce() -> None:
    """Average scalar step outputs over the replicas under multi-worker (see ``multiworker_reduce``). Idempotent."""
    require("multiworker_reduce")
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_cmir_scalar_fix", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            def _reduce(v):
                rank = v.values[0].shape.rank if hasattr(v, "values") else tf.convert_to_tensor(v).shape.rank
                return strategy.reduce("MEAN", v, axis=None if rank == 0 else 0)

            return tf.nest.map_structure(_reduce, values)
        return original(values, strategy, reduction)

    reduce_per_replica._cmir_scalar_fix = True
    tf_trainer.reduce_per_replica = reduce_per_replica


# ----------------------------------------------------------------------------- freeze, op_def, proto
def freeze_variables(concrete_function):
    """``concrete_function`` with its variables folded into constants (see ``freeze``)."""
    require("freeze")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(concrete_function)


def op_def(op_type: str):
    """The registered ``OpDef`` of ``op_type``, or None for an op this TensorFlow does not know (see ``op_def``)."""
    require("op_def")
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op_type)


def read_saved_model_proto(path):
    """Parse a ``saved_model.pb`` file into its ``SavedModel`` message (see ``saved_model_proto``)."""
    require("saved_model_proto")
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    return proto


# -------------------------------------------------------------------------------------------- xla_context
def in_xla_context() -> bool:
    """Whether the function being traced is compiled with XLA (see ``xla_context``)."""
    require("xla_context")
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


# ------------------------------------------------------------------------------------------- weights_only
def _optimizer_of(model) -> list:
    optimizer = getattr(model, "optimizer", None)
    return [optimizer] if optimizer is not None else []


def save_model_weights(model, path) -> None:
    """``model``'s weights in a ``.weights.h5`` file, without its optimizer's variables (see ``weights_only``)."""
    require("weights_only")
    from keras.src.saving import saving_lib

    saving_lib.save_weights_only(model, path, objects_to_skip=_optimizer_of(model))


def load_model_weights(model, path) -> None:
    """Load a ``.weights.h5`` file into ``model``'s layers, leaving its optimizer alone (see ``weights_only``):
    files with or without optimizer variables load alike, without Keras's "Skipping variable loading"."""
    require("weights_only")
    from keras.src.saving import saving_lib

    saving_lib.load_weights_only(model, path, objects_to_skip=_optimizer_of(model))
