"""The package's layout keeps its floors (issue 18): the checker of ``layout_rules`` proven on toy packages
written into tmp folders, then run on the real package, its room ``__init__``s and its docs."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from layout_rules import (FLOORS, GROUND, check_doc_paths, check_exported_names, check_no_eager_tensorflow,
                          check_package, check_room_docs, rooms)

import cmir_tf
from cmir_tf.moved import MOVED

PACKAGE = Path(cmir_tf.__file__).resolve().parent
REPO = PACKAGE.parent
# export metadata's JSON keys, written `cmir_tf.variant` etc. in the docs: not modules
METADATA_KEYS = ("variant", "mode", "saved_model_version", "metrics_source", "published")


def write(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path → source, dedented) under ``root``; return the package folder."""
    for rel, source in files.items():
        if source is None:
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        source = textwrap.dedent(source)
        path.write_text(source[1:] if source.startswith("\n") else source, encoding="utf-8")
    return root / next(iter(files)).split("/")[0]


def room_init(room: str, exports: dict[str, list[str]] | None = None, door: bool = False) -> str:
    names = sorted(n for names in (exports or {}).values() for n in names)
    main = (f"\n\ndef main(argv=None):\n    from cmir_tf.{room}.__main__ import main as run\n    return run(argv)\n"
            if door else "")
    doc = f"The {room} room.\n\nMay import the rooms below its floor.\nPublic names: {', '.join(names) or 'none'}.\n"
    return (f'"""{doc}"""\n'
            f"import lazy_loader\n\n"
            f"__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={exports or {}!r})\n{main}")


# A clean house: ground, data (2), model (3), train (6, a command room), explore and evaluate (10).
CLEAN = {
    "cmir_tf/__init__.py": '"""Toy."""\n__version__ = "0"\n',
    "cmir_tf/constants.py": "PATCH = 3\n",
    "cmir_tf/errors.py": "class DataError(Exception):\n    pass\n",
    "cmir_tf/data/__init__.py": room_init("data", {"pipeline": ["make_dataset"]}),
    "cmir_tf/data/pipeline.py": """
        from .. import errors
        from ..constants import PATCH
        from cmir_tf.errors import DataError
        from ._impl import helper


        def make_dataset():
            return PATCH, errors, DataError, helper
        """,
    "cmir_tf/data/_impl.py": "def helper():\n    return 1\n",
    "cmir_tf/data/pairs.py": """
        from .pipeline import make_dataset
        from . import pipeline
        import cmir_tf.data.pipeline as p


        def pairs():
            return make_dataset(), pipeline.make_dataset(), p.make_dataset, pipeline.__name__
        """,
    "cmir_tf/model/__init__.py": room_init("model", {"contrastive": ["build_model"]}),
    "cmir_tf/model/contrastive.py": """
        from cmir_tf.data.pipeline import make_dataset
        from cmir_tf.data import pipeline
        from cmir_tf import constants as C


        def build_model():
            from .layers import dense  # a lazy import inside the room: no cycle
            return make_dataset, pipeline, C.PATCH, dense
        """,
    "cmir_tf/model/layers.py": "def dense():\n    return 2\n",
    "cmir_tf/model/parts/__init__.py": "",
    "cmir_tf/model/parts/deep.py": """
        from ...data import pipeline
        from .. import layers
        from ..contrastive import build_model
        """,
    "cmir_tf/train/__init__.py": room_init("train", {"loop": ["fit"]}, door=True),
    "cmir_tf/train/loop.py":
        "from cmir_tf.model.contrastive import build_model\n\n\ndef fit():\n    return build_model\n",
    "cmir_tf/train/__main__.py": """
        import cmir_tf.evaluate
        import cmir_tf.explore.maps
        from cmir_tf.explore import maps
        from cmir_tf import explore, evaluate
        from cmir_tf.model.contrastive import build_model
        from .loop import fit


        def main(argv=None):
            return fit, build_model, maps, explore, evaluate
        """,
    "cmir_tf/explore/__init__.py": room_init("explore", {"maps": ["draw"]}),
    "cmir_tf/explore/maps.py": "from cmir_tf.train.loop import fit\n\n\ndef draw():\n    return fit\n",
    "cmir_tf/evaluate/__init__.py": room_init("evaluate", {"metrics": ["score"]}),
    "cmir_tf/evaluate/metrics.py": "from cmir_tf.train import loop\n\n\ndef score():\n    return loop.fit\n",
}


def with_files(tmp_path: Path, files: dict[str, str]) -> Path:
    return write(tmp_path, {**CLEAN, **files})


def test_a_clean_house_has_no_violations(tmp_path):
    assert check_package(with_files(tmp_path, {})) == []


def test_a_door_may_import_every_room_and_an_init_its_own_main(tmp_path):
    # CLEAN's train/__init__ imports its own __main__ (the lazy main wrapper); these doors import every room,
    # from any floor: their own, lower, higher, the sibling on their floor, and a room's __init__
    everything = """
        import cmir_tf.errors
        from cmir_tf import constants
        from cmir_tf.data import pairs, pipeline
        from cmir_tf.model.contrastive import build_model
        from cmir_tf.train.loop import fit
        from ..explore import maps
        from cmir_tf.evaluate.metrics import score
        import cmir_tf.evaluate
        """
    root = with_files(tmp_path, {
        "cmir_tf/explore/__init__.py": room_init("explore", {"maps": ["draw"]}, door=True),
        "cmir_tf/explore/__main__.py": everything,
        "cmir_tf/data/__init__.py": room_init("data", {"pipeline": ["make_dataset"]}, door=True),
        "cmir_tf/data/__main__.py": everything,
    })
    assert check_package(root) == []


def test_an_import_from_a_higher_floor(tmp_path):
    root = with_files(tmp_path, {
        "cmir_tf/model/presets.py": "AUDIO_PAIRS = 1\n",
        "cmir_tf/data/pair_pipeline.py": "import os\nfrom cmir_tf.model.presets import AUDIO_PAIRS\n",
        "cmir_tf/lock.py": "LOCK = 1\n\n\ndef late():\n    import cmir_tf.data.pairs\n",
    })
    assert check_package(root) == [
        "cmir_tf/data/pair_pipeline.py:2: imports cmir_tf.model.presets (model, floor 3) from data (floor 2)",
        "cmir_tf/lock.py:5: imports cmir_tf.data.pairs (data, floor 2) from ground (floor 0)",
    ]


def test_rooms_on_one_floor_do_not_import_each_other(tmp_path):
    root = with_files(tmp_path, {"cmir_tf/explore/maps.py": "def draw():\n    from cmir_tf.evaluate import metrics\n"})
    assert check_package(root) == [
        "cmir_tf/explore/maps.py:2: imports cmir_tf.evaluate.metrics (evaluate, floor 10) from explore (floor 10): "
        "rooms on one floor do not import each other",
    ]


def test_only_a_rooms_init_imports_its_main(tmp_path):
    root = with_files(tmp_path, {
        "cmir_tf/evaluate/metrics.py": "from cmir_tf.train.__main__ import main\n",
        "cmir_tf/train/hooks.py": "def hook():\n    from . import __main__\n",
        "cmir_tf/explore/__main__.py": "from cmir_tf.train.__main__ import main\n",
    })
    message = "imports cmir_tf.train.__main__: only its room's __init__ may import a __main__ (a command's door)"
    assert check_package(root) == [
        f"cmir_tf/evaluate/metrics.py:1: {message}",
        f"cmir_tf/explore/__main__.py:1: {message}",
        f"cmir_tf/train/hooks.py:2: {message}",
    ]


def test_code_imports_a_name_from_its_module_not_through_a_rooms_init(tmp_path):
    root = with_files(tmp_path, {
        "cmir_tf/model/layers.py": "from cmir_tf.data import make_dataset, pipeline\n\n\ndef dense():\n    return 2\n",
        "cmir_tf/train/loop.py":
            "from cmir_tf import model\n\n\ndef fit():\n    return model.build_model(), model.layers\n",
        "cmir_tf/model/presets.py": "from . import build_model\n",
    })
    assert check_package(root) == [
        "cmir_tf/model/layers.py:1: imports make_dataset through cmir_tf.data (re-exported by "
        "cmir_tf/data/__init__.py): import it from its module cmir_tf/data/pipeline.py",
        "cmir_tf/model/presets.py:1: imports build_model through cmir_tf.model (re-exported by "
        "cmir_tf/model/__init__.py): import it from its module cmir_tf/model/contrastive.py",
        "cmir_tf/train/loop.py:5: uses build_model through cmir_tf.model (re-exported by "
        "cmir_tf/model/__init__.py): import it from its module cmir_tf/model/contrastive.py",
    ]


def test_an_eager_re_export_is_a_re_export_too(tmp_path):
    root = with_files(tmp_path, {
        "cmir_tf/model/__init__.py":
            '"""Model."""\nfrom .layers import dense as make_dense\nfrom . import layers\n',
        "cmir_tf/train/loop.py": "from cmir_tf.model import make_dense, layers\n",
    })
    assert check_package(root) == [
        "cmir_tf/train/loop.py:1: imports make_dense through cmir_tf.model (re-exported by "
        "cmir_tf/model/__init__.py): import it from its module cmir_tf/model/layers.py",
    ]


def test_no_private_name_is_imported_from_another_module(tmp_path):
    root = with_files(tmp_path, {
        "cmir_tf/data/pipeline.py": "def make_dataset():\n    pass\n\n\ndef _options():\n    pass\n\n\n_x = 1\n",
        "cmir_tf/data/pair_pipeline.py": "from .pipeline import _options, _x, make_dataset\n",
        "cmir_tf/model/layers.py": "def dense():\n    from cmir_tf.data.pipeline import _options as opts\n",
        "cmir_tf/model/presets.py": "from cmir_tf import __version__\n",  # a dunder is no private name
    })
    assert check_package(root) == [
        "cmir_tf/data/pair_pipeline.py:1: imports private names _options, _x from cmir_tf.data.pipeline",
        "cmir_tf/model/layers.py:2: imports private name _options from cmir_tf.data.pipeline",
    ]


def test_no_private_name_is_used_as_an_attribute_of_an_imported_module(tmp_path):
    root = with_files(tmp_path, {
        "cmir_tf/model/layers.py": """
            import cmir_tf.data.pipeline
            import cmir_tf.data.pipeline as p
            from cmir_tf.data import pipeline
            from ..data import pipeline as relative


            def dense():
                return (pipeline._options(1), p._x, cmir_tf.data.pipeline._y, relative._z, pipeline.__doc__,
                        pipeline.make_dataset, cmir_tf.constants.PATCH)
            """,
        "cmir_tf/data/pairs.py": "from . import pipeline\n\nOPTIONS = pipeline._options\n",
    })
    assert check_package(root) == [
        "cmir_tf/data/pairs.py:3: uses private name _options of cmir_tf.data.pipeline",
        "cmir_tf/model/layers.py:8: uses private name _options of cmir_tf.data.pipeline",
        "cmir_tf/model/layers.py:8: uses private name _x of cmir_tf.data.pipeline",
        "cmir_tf/model/layers.py:8: uses private name _y of cmir_tf.data.pipeline",
        "cmir_tf/model/layers.py:8: uses private name _z of cmir_tf.data.pipeline",
    ]


def test_a_private_module_stays_in_its_room(tmp_path):
    # data/pipeline.py (CLEAN) imports its room's data/_impl.py: allowed
    root = with_files(tmp_path, {
        "cmir_tf/model/layers.py": "from cmir_tf.data import _impl\nimport cmir_tf.data._impl as impl\n",
    })
    assert check_package(root) == [
        "cmir_tf/model/layers.py:1: imports private module cmir_tf.data._impl of room data from model",
        "cmir_tf/model/layers.py:2: imports private module cmir_tf.data._impl of room data from model",
    ]


def test_relative_imports_resolve_one_and_two_levels_up(tmp_path):
    root = with_files(tmp_path, {
        "cmir_tf/model/presets.py": "AUDIO_PAIRS = 1\n",
        "cmir_tf/data/pipeline.py": "from ..model import presets\nfrom .. import errors\n",  # a module
        "cmir_tf/data/pairs.py": "from ..model.layers import dense\nfrom .pipeline import make_dataset\n",
        "cmir_tf/model/parts/deep.py": "from ...train import loop\nfrom ..layers import dense\n",
        "cmir_tf/model/parts/__init__.py": "from .. import build_model\n",  # a package __init__, 2 levels
    })
    assert check_package(root) == [
        "cmir_tf/data/pairs.py:1: imports cmir_tf.model.layers (model, floor 3) from data (floor 2)",
        "cmir_tf/data/pipeline.py:1: imports cmir_tf.model.presets (model, floor 3) from data (floor 2)",
        "cmir_tf/model/parts/__init__.py:1: imports build_model through cmir_tf.model (re-exported by "
        "cmir_tf/model/__init__.py): import it from its module cmir_tf/model/contrastive.py",
        "cmir_tf/model/parts/deep.py:1: imports cmir_tf.train.loop (train, floor 6) from model (floor 3)",
    ]


def test_a_cycle_through_a_function_level_import(tmp_path):
    distribute = '"""Distribution."""' + "\n" * 97 + "def make():\n    from .precision import needs_scaling\n"
    root = with_files(tmp_path, {
        "cmir_tf/model/distribute.py": distribute,
        "cmir_tf/model/precision.py": "from .distribute import make\n\n\ndef needs_scaling():\n    pass\n",
        "cmir_tf/data/a.py": "from . import b\n",
        "cmir_tf/data/b.py": "def f():\n    import cmir_tf.data.c\n",
        "cmir_tf/data/c.py": "# c\nfrom cmir_tf.data.a import x\n",
    })
    assert check_package(root) == [
        "cmir_tf/data/a.py:1: cycle cmir_tf.data.a → cmir_tf.data.b → cmir_tf.data.c → cmir_tf.data.a",
        "cmir_tf/model/distribute.py:99: cycle cmir_tf.model.distribute → cmir_tf.model.precision → "
        "cmir_tf.model.distribute",
    ]


def test_a_room_without_a_floor_and_a_module_that_is_not_there(tmp_path):
    root = with_files(tmp_path, {
        "cmir_tf/misc/__init__.py": '"""Misc."""\n',
        "cmir_tf/misc/tools.py": "from cmir_tf.model.layers import dense\n",
        "cmir_tf/train/loop.py": "from cmir_tf.pipeline import make_dataset\nimport cmir_tf.data.gone\n",
    })
    assert check_package(root) == [
        "cmir_tf/misc/__init__.py:1: room misc has no floor in FLOORS",
        "cmir_tf/train/loop.py:1: imports from cmir_tf.pipeline, which is no module of the package",
        "cmir_tf/train/loop.py:2: imports cmir_tf.data.gone, which is no module of the package",
    ]


def test_room_docstrings_say_what_the_room_holds_imports_and_exports(tmp_path):
    root = with_files(tmp_path, {
        "cmir_tf/data/__init__.py": "import lazy_loader\n",
        "cmir_tf/model/__init__.py": '"""Model."""\nimport lazy_loader\n__getattr__, __dir__, __all__ = '
                                     'lazy_loader.attach(__name__, submod_attrs={"contrastive": ["build_model"]})\n',
        "cmir_tf/evaluate/__init__.py": None,  # not written
    })
    assert check_room_docs(root) == [
        "cmir_tf/data/__init__.py:1: room data's __init__ has no docstring",
        "cmir_tf/evaluate/__init__.py:1: room evaluate has no __init__.py",
        "cmir_tf/model/__init__.py:1: room model's docstring has fewer than 3 lines (what the room holds, "
        "what it may import, its public names)",
        "cmir_tf/model/__init__.py:1: room model's docstring does not say what the room may import",
        "cmir_tf/model/__init__.py:1: room model's docstring does not name its public names build_model",
    ]
    assert check_room_docs(with_files(tmp_path / "clean", {})) == []


def test_every_exported_name_must_exist(tmp_path):
    package = "toyhouse_exports"  # a name of its own: the real cmir_tf is imported in this process
    files = {k.replace("cmir_tf", package, 1): v.replace("cmir_tf", package)
             for k, v in CLEAN.items()}
    files[f"{package}/model/__init__.py"] = room_init("model", {"contrastive": ["build_model", "build_modle"]})
    root = write(tmp_path, files)
    try:
        assert check_exported_names(root, package) == [
            f"{package}/model/__init__.py:1: exports build_modle from {package}.model.contrastive, "
            "which has no build_modle",
            f"{package}/model/__init__.py:1: {package}.model.__all__ names build_modle, which does not resolve: "
            "AttributeError(\"module 'toyhouse_exports.model.contrastive' has no attribute 'build_modle'\")",
        ]
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == package]:
            del sys.modules[name]


def test_a_room_init_that_imports_tensorflow_is_found(tmp_path):
    root = with_files(tmp_path, {
        "tensorflow.py": "",  # a stand-in: the probe only looks at sys.modules
        "cmir_tf/model/__init__.py": '"""Model."""\nimport os\n\nimport tensorflow\n',
    })
    assert check_no_eager_tensorflow(root, names=["cmir_tf.data", "cmir_tf.model"]) == [
        "cmir_tf/model/__init__.py:4: importing cmir_tf.model imports tensorflow",
    ]


def test_the_docs_name_only_paths_and_names_that_exist(tmp_path):
    write(tmp_path, {**CLEAN, "cmir_tf/data/pipeline.py": '"""Reads what `cmir_tf/old.py` wrote."""\n\n'
                                                          'def make_dataset():\n    """See cmir_tf.pipeline."""\n'})
    write(tmp_path, {
        "README.md": """
            # Toy
            See `docs/AUDIO.md`, [the records](tfrecords/README.md) and cmir_tf/data/pipeline.py.
            Old: `cmir_tf/pipeline.py`, `tests/test_gone.py`, benchmarks/*.py, docs/… and ci/nothing.sh.
            Runs write export/contr_g and tfrecords/melon (output folders); see tests/... and cmir_tf/gone/….
            `cmir_tf.data.pipeline.make_dataset`, cmir_tf.model.build_model, cmir_tf.errors.DataError, `cmir_tf.X`.
            Stale: `cmir_tf.pipeline.make_dataset`, cmir_tf.data.pipeline.gone; `python -m cmir_tf.train`,
            python -m cmir_tf.data, python -m cmir_tf.constants, `cmir_tf.variant` (a metadata key).
            """,
        "docs/AUDIO.md": "[back](../README.md), [gone](GONE.md)\n",
        "tfrecords/README.md": "Layout.\n",
        "tests/test_x.py": "",
        "benchmarks/b.py": "",
    })
    assert check_doc_paths(tmp_path, ignore_names=("variant",)) == [
        "README.md:3: cmir_tf/pipeline.py does not exist",
        "README.md:3: tests/test_gone.py does not exist",
        "README.md:3: ci/nothing.sh does not exist",
        "README.md:4: cmir_tf/gone/… does not exist",
        "README.md:6: cmir_tf.pipeline.make_dataset is no module or name of one",
        "README.md:6: cmir_tf.data.pipeline.gone is no module or name of one",
        "README.md:7: python -m cmir_tf.data is no command (no module cmir_tf/data.py, no cmir_tf/data/__main__.py)",
        "docs/AUDIO.md:1: link GONE.md does not exist",
        "cmir_tf/data/pipeline.py:1: cmir_tf/old.py does not exist",
        "cmir_tf/data/pipeline.py:4: cmir_tf.pipeline is no module or name of one",
    ]


# -- the real package --------------------------------------------------------------------------------------------------

def missing_rooms() -> list[str]:
    """The rooms of FLOORS that are not there: the room checks below must not pass on no rooms."""
    found = rooms(PACKAGE)
    return [f"cmir_tf/{room}/: room {room} (floor {floor}) does not exist" for room, floor in FLOORS.items()
            if room != GROUND and room not in found]


def test_package_layout_follows_its_floors():
    violations = check_package(PACKAGE)
    assert violations == [], f"{len(violations)} layout violations:\n" + "\n".join(violations)


def test_every_room_init_has_a_docstring_that_says_what_it_holds():
    problems = missing_rooms() + check_room_docs(PACKAGE)
    assert problems == [], "\n".join(problems)


def test_every_name_a_room_exports_exists():
    problems = missing_rooms() + check_exported_names(PACKAGE)
    assert problems == [], "\n".join(problems)


def test_importing_a_room_imports_no_tensorflow():
    problems = missing_rooms() + check_no_eager_tensorflow(PACKAGE)
    assert problems == [], "\n".join(problems)


def test_the_docs_and_docstrings_name_only_paths_and_names_that_exist():
    problems = check_doc_paths(REPO, ignore_names=METADATA_KEYS, exclude=("cmir_tf/moved.py",),
                               deprecated=tuple(MOVED))
    assert problems == [], f"{len(problems)} stale references:\n" + "\n".join(problems)


def test_the_flat_paths_of_0_1_import_the_moved_module_with_a_warning_naming_its_home():
    """Every old module path is the same module object as its new home (patching one patches the
    other), warns with the new path, and keeps the new module's own spec; a name that never existed
    still fails to import."""
    code = textwrap.dedent("""
        import importlib, json, warnings
        from cmir_tf.moved import MOVED
        out = {}
        for old, new in MOVED.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                alias = importlib.import_module("cmir_tf." + old)
            home = importlib.import_module("cmir_tf." + new)
            out[old] = [alias is home, home.__spec__.name, home.__name__,
                        [str(w.message) for w in caught if w.category is DeprecationWarning]]
        try:
            importlib.import_module("cmir_tf.no_such_module")
        except ModuleNotFoundError as e:
            out["missing"] = str(e)
        print(json.dumps(out))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    out = json.loads(run.stdout.splitlines()[-1])
    for old, new in MOVED.items():
        same, spec_name, name, warned = out[old]
        assert same and spec_name == name == f"cmir_tf.{new}", old
        assert warned == [f"cmir_tf.{old} moved to cmir_tf.{new}; import it from there (or the room's "
                          "public names)"], old
    assert out["missing"] == "No module named 'cmir_tf.no_such_module'"
    assert set(MOVED) >= {"pipeline", "pair_pipeline", "losses", "encoders", "rundir", "tfrecords", "melon"}


def test_the_readme_table_of_public_names_is_each_rooms_all():
    """README "Public import paths" lists, per room, exactly the names its ``__init__`` exports."""
    import importlib
    import re

    rows = re.findall(r"^\| `(cmir_tf\.\w+)` \| (.+) \|$", (REPO / "README.md").read_text(encoding="utf-8"), re.M)
    listed = {room: set(re.findall(r"`(\w+)`", names)) for room, names in rows}
    rooms = {f"cmir_tf.{name}" for name, floor in FLOORS.items() if name != GROUND}
    assert set(listed) == rooms
    for room in sorted(rooms):
        assert listed[room] == set(importlib.import_module(room).__all__) - {"main"}, room


def test_the_benchmarks_import_no_private_name():
    """The benchmark scripts use public names only: of the package, and of each other (benchmarks/signals.py
    holds what several share)."""
    import ast

    problems = []
    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno}: imports {', '.join(private)} "
                                    f"from {node.module}")
    assert problems == [], "\n".join(problems)
