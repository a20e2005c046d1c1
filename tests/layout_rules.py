"""The house rules of the package layout (issue 18), checked from the source alone.

The package is a house: its ground floor is the modules directly in ``cmir_tf/`` (constants, errors, cli,
fileio, lock, workpool, moved); its rooms are the subpackages, each on the floor ``FLOORS`` gives it.

* A module imports modules of its own room and of rooms on a strictly lower floor. Two rooms on one floor
  (explore, evaluate) do not import each other.
* Doors: a room's ``__main__.py`` (a command line) may import any room. A room's ``__init__.py`` may
  import its own ``__main__`` (the lazy ``main`` wrapper behind the console scripts); no other module
  imports a ``__main__``.
* Inside the package, code imports a name from the module that defines it, never through a room's
  ``__init__`` (whose lazy re-exports are read from its ``lazy_loader.attach(..., submod_attrs={...})``).
* No private crossings: no ``from m import _x`` of another module, no ``m._x`` on an imported package
  module, no import of another room's ``_module``.
* No cycles in the module import graph, counting every import statement (module level or inside a
  function, absolute or relative).

``check_package`` and ``check_room_docs`` read the source with ``ast`` and import nothing from the package
they check; ``check_exported_names`` imports it (it asks the real modules for the names), and
``check_no_eager_tensorflow`` imports each room in a fresh subprocess. Every function returns violations
as ``relative/path.py:line: message`` strings, the path relative to the folder holding the package.
"""
from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

GROUND = "ground"
FLOORS = {"ground": 0, "audio": 1, "data": 2, "model": 3, "synth": 4, "prepare": 5, "train": 6, "export": 7,
          "embed": 8, "similar": 9, "explore": 10, "evaluate": 10}


def _private(name: str) -> bool:
    """``_x`` is private; dunders (``__version__``, ``__main__``, ``__init__``) are not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass
class Module:
    name: str  # dotted: cmir_tf.data.pipeline; a package's __init__ is the package's name
    path: Path
    rel: str  # cmir_tf/data/pipeline.py
    room: str  # "ground" for modules directly in the package folder
    is_init: bool
    is_main: bool
    tree: ast.Module = field(repr=False)


def rooms(root: Path) -> dict[str, Path]:
    """The rooms under the package folder ``root``: its subfolders holding Python files, by name."""
    found = {}
    for sub in sorted(Path(root).iterdir()):
        if sub.is_dir() and sub.name != "__pycache__" and any(sub.rglob("*.py")):
            found[sub.name] = sub
    return found


def discover(root: Path, package: str = "cmir_tf") -> dict[str, Module]:
    """Every module of the package, parsed, by dotted name."""
    root = Path(root)
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if "__pycache__" in parts:
            continue
        is_init = parts[-1] == "__init__"
        dotted = [package, *(parts[:-1] if is_init else parts)]
        room = parts[0] if len(parts) > 1 else GROUND
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        modules[".".join(dotted)] = Module(".".join(dotted), path, path.relative_to(root.parent).as_posix(), room,
                                           is_init, parts[-1] == "__main__", tree)
    return modules


def lazy_exports(tree: ast.Module) -> dict[str, str]:
    """Name → submodule (relative, as written) re-exported by ``lazy_loader.attach`` in an ``__init__``.

    Reads ``attach(__name__, submodules, submod_attrs)``'s dict literal (keyword or third positional
    argument, or a module-level name assigned a dict literal).
    """
    assigned = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned[target.id] = node.value
    exports = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if fname != "attach":
            continue
        arg = next((kw.value for kw in node.keywords if kw.arg == "submod_attrs"), None)
        if arg is None and len(node.args) >= 3:
            arg = node.args[2]
        if isinstance(arg, ast.Name):
            arg = assigned.get(arg.id)
        if arg is None:
            continue
        try:
            table = ast.literal_eval(arg)
        except ValueError:
            continue
        for submodule, names in table.items():
            for name in names:
                exports[name] = submodule
    return exports


def lazy_submodules(tree: ast.Module) -> list[str]:
    """The ``submodules`` list given to ``lazy_loader.attach`` (second positional or keyword)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fname = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if fname == "attach":
                arg = next((kw.value for kw in node.keywords if kw.arg == "submodules"), None)
                if arg is None and len(node.args) >= 2:
                    arg = node.args[1]
                try:
                    return list(ast.literal_eval(arg)) if arg is not None else []
                except ValueError:
                    return []
    return []


@dataclass
class _Edge:
    line: int
    target: str


class _Checker:
    def __init__(self, root: Path, package: str):
        self.root = Path(root)
        self.package = package
        self.modules = discover(root, package)
        self.exports = {name: self.reexports(m) for name, m in self.modules.items() if m.is_init}
        self.violations: set[tuple[str, int, str]] = set()
        self.edges: dict[str, list[_Edge]] = {name: [] for name in self.modules}

    def reexports(self, init: Module) -> dict[str, str]:
        """Name → submodule an ``__init__`` re-exports: lazily (``submod_attrs``) or eagerly, by a top-level
        ``from .sub import name`` of one of its own modules (a submodule bound by name is no re-export)."""
        exports = dict(lazy_exports(init.tree))
        for stmt in init.tree.body:
            if not isinstance(stmt, ast.ImportFrom):
                continue
            base = self.base_of(init, stmt)
            if not base or not base.startswith(init.name + ".") or base not in self.modules:
                continue
            for alias in stmt.names:
                if alias.name != "*" and f"{base}.{alias.name}" not in self.modules:
                    exports[alias.asname or alias.name] = base[len(init.name) + 1:]
        return exports

    # -- helpers -------------------------------------------------------------------------------------------
    def report(self, module: Module, line: int, message: str):
        self.violations.add((module.rel, line, message))

    def ours(self, dotted: str | None) -> bool:
        return bool(dotted) and (dotted == self.package or dotted.startswith(self.package + "."))

    def defining(self, package: str, name: str) -> str | None:
        """The module a package's ``__init__`` re-exports ``name`` from, if it does."""
        sub = self.exports.get(package, {}).get(name)
        return f"{package}.{sub}" if sub is not None else None

    def rel_of(self, dotted: str) -> str:
        return self.modules[dotted].rel if dotted in self.modules else dotted.replace(".", "/") + ".py"

    def floor_text(self, room: str) -> str:
        return f"floor {FLOORS[room]}"

    # -- one import of `target` by `module` ------------------------------------------------------------------
    def use(self, module: Module, line: int, target: str):
        """Record the edge and check the floors, the doors and private modules."""
        if target == module.name:
            return
        self.edges[module.name].append(_Edge(line, target))
        other = self.modules[target]
        private_parts = [p for p in target.split(".")[1:] if _private(p)]
        if private_parts and other.room != module.room:
            self.report(module, line, f"imports private module {target} of room {other.room} from {module.room}")
        if other.is_main:
            if not (module.is_init and target == module.name + ".__main__"):
                self.report(module, line, f"imports {target}: only its room's __init__ may import a __main__ "
                                          f"(a command's door)")
            return
        if module.is_main or other.room == module.room:
            return
        if module.room not in FLOORS or other.room not in FLOORS:
            return  # reported once as a room without a floor
        mine, theirs = FLOORS[module.room], FLOORS[other.room]
        if theirs > mine:
            self.report(module, line, f"imports {target} ({other.room}, {self.floor_text(other.room)}) "
                                      f"from {module.room} ({self.floor_text(module.room)})")
        elif theirs == mine:
            self.report(module, line, f"imports {target} ({other.room}, {self.floor_text(other.room)}) "
                                      f"from {module.room} ({self.floor_text(module.room)}): rooms on one floor "
                                      f"do not import each other")

    def reexport(self, module: Module, line: int, package: str, name: str, verb: str):
        defining = self.defining(package, name)
        self.report(module, line, f"{verb} {name} through {package} (re-exported by "
                                  f"{self.rel_of(package)}): import it from its module {self.rel_of(defining)}")

    # -- the statements ----------------------------------------------------------------------------------------
    def base_of(self, module: Module, node: ast.ImportFrom) -> str | None:
        if not node.level:
            return node.module
        parts = module.name.split(".") if module.is_init else module.name.split(".")[:-1]
        if node.level - 1 > len(parts) - 1:
            return None
        parts = parts[: len(parts) - (node.level - 1)]
        return ".".join(parts + ([node.module] if node.module else []))

    def imports(self, module: Module) -> dict[str, str]:
        """Check every import statement of ``module``; return its bindings local name → module."""
        bindings = {}
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if not self.ours(alias.name):
                        continue
                    if alias.name not in self.modules:
                        self.report(module, node.lineno, f"imports {alias.name}, which is no module of the package")
                        continue
                    self.use(module, node.lineno, alias.name)
                    if alias.asname:
                        bindings[alias.asname] = alias.name
                    else:
                        bindings[alias.name.split(".")[0]] = self.package
            elif isinstance(node, ast.ImportFrom):
                base = self.base_of(module, node)
                if not self.ours(base):
                    continue
                if base not in self.modules:
                    self.report(module, node.lineno, f"imports from {base}, which is no module of the package")
                    continue
                private_names = []
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    if alias.name == "*":
                        self.use(module, node.lineno, base)
                    elif full in self.modules:
                        self.use(module, node.lineno, full)
                        bindings[alias.asname or alias.name] = full
                    elif self.defining(base, alias.name) and base != module.name:
                        defining = self.defining(base, alias.name)
                        if defining in self.modules:
                            self.use(module, node.lineno, defining)
                        self.reexport(module, node.lineno, base, alias.name, "imports")
                    else:
                        self.use(module, node.lineno, base)
                        if _private(alias.name):
                            private_names.append(alias.name)
                if private_names:
                    self.report(module, node.lineno, f"imports private name{'s' if len(private_names) > 1 else ''} "
                                                     f"{', '.join(private_names)} from {base}")
        return bindings

    def attributes(self, module: Module, bindings: dict[str, str]):
        """``pipeline._options``, ``cmir_tf.data.pipeline._x``, ``model.build_model`` (a re-export)."""
        checker = self

        class Visitor(ast.NodeVisitor):
            def visit_Attribute(self, node):
                chain, base = [], node
                while isinstance(base, ast.Attribute):
                    chain.append(base.attr)
                    base = base.value
                if not (isinstance(base, ast.Name) and base.id in bindings):
                    self.generic_visit(node)
                    return
                current = bindings[base.id]
                for part in reversed(chain):
                    if part.startswith("__") and part.endswith("__"):
                        break
                    candidate = f"{current}.{part}"
                    if candidate in checker.modules:
                        other = checker.modules[candidate]
                        if _private(part) and other.room != module.room:
                            checker.report(module, node.lineno, f"uses private module {candidate} of room "
                                                                f"{other.room} from {module.room}")
                        current = candidate
                        continue
                    if current == module.name:
                        break
                    if _private(part):
                        checker.report(module, node.lineno, f"uses private name {part} of {current}")
                    elif checker.defining(current, part):
                        checker.reexport(module, node.lineno, current, part, "uses")
                    break

        Visitor().visit(module.tree)

    # -- cycles -----------------------------------------------------------------------------------------------------
    def cycles(self):
        graph = {name: sorted({e.target for e in edges}) for name, edges in self.edges.items()}
        for component in _strongly_connected(graph):
            if len(component) < 2:
                continue
            inside = set(component)
            seen = set()
            for start in sorted(component):
                path = _shortest_cycle(graph, start, inside)
                turn = path.index(min(path))
                canonical = tuple(path[turn:] + path[:turn])
                if canonical in seen:
                    continue
                seen.add(canonical)
                first, second = canonical[0], canonical[1]
                line = min(e.line for e in self.edges[first] if e.target == second)
                self.report(self.modules[first], line,
                            "cycle " + " → ".join([*canonical, canonical[0]]))

    def run(self) -> list[str]:
        for name, room_dir in rooms(self.root).items():
            if name not in FLOORS:
                init = room_dir / "__init__.py"
                where = init if init.exists() else room_dir
                self.violations.add((where.relative_to(self.root.parent).as_posix(), 1,
                                     f"room {name} has no floor in FLOORS"))
        for module in self.modules.values():
            bindings = self.imports(module)
            self.attributes(module, bindings)
        self.cycles()
        return [f"{path}:{line}: {message}" for path, line, message in sorted(self.violations)]


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative: no recursion limit on long chains)."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, ()))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(sorted(component))
    return result


def _shortest_cycle(graph: dict[str, list[str]], start: str, inside: set[str]) -> list[str]:
    """The shortest path start → … → start within one strongly connected component (BFS)."""
    parent = {start: None}
    queue = [start]
    for node in queue:
        for child in graph[node]:
            if child not in inside:
                continue
            if child == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return list(reversed(path))
            if child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle")  # pragma: no cover — a component of ≥ 2 always has one


def check_package(root: Path, package: str = "cmir_tf") -> list[str]:
    """Every violation of the floors, doors, re-exports, private names and cycles, as ``path:line: what``.

    ``root`` is the package folder (``Path(cmir_tf.__file__).parent``); nothing is imported from it.
    """
    return _Checker(Path(root), package).run()


# -- the room __init__s -----------------------------------------------------------------------------------------------

def room_names(init_tree: ast.Module) -> list[str]:
    """The public names a room's ``__init__`` exports lazily (its ``__all__``)."""
    return sorted(set(lazy_exports(init_tree)) | set(lazy_submodules(init_tree)))


def check_room_docs(root: Path, package: str = "cmir_tf") -> list[str]:
    """Each room has an ``__init__.py`` whose docstring says, in several lines, what the room holds, what
    it may import (the word "import" appears) and its public names (each name of its ``__all__`` appears)."""
    root = Path(root)
    problems = []
    for name, room_dir in rooms(root).items():
        init = room_dir / "__init__.py"
        rel = init.relative_to(root.parent).as_posix()
        if not init.exists():
            problems.append(f"{rel}:1: room {name} has no __init__.py")
            continue
        tree = ast.parse(init.read_text(encoding="utf-8"))
        doc = ast.get_docstring(tree)
        if not doc:
            problems.append(f"{rel}:1: room {name}'s __init__ has no docstring")
            continue
        if len([line for line in doc.splitlines() if line.strip()]) < 3:
            problems.append(f"{rel}:1: room {name}'s docstring has fewer than 3 lines (what the room holds, "
                            f"what it may import, its public names)")
        if "import" not in doc.lower():
            problems.append(f"{rel}:1: room {name}'s docstring does not say what the room may import")
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", doc))
        missing = [n for n in room_names(tree) if n not in words]
        if missing:
            problems.append(f"{rel}:1: room {name}'s docstring does not name its public names {', '.join(missing)}")
    return problems


def check_exported_names(root: Path, package: str = "cmir_tf") -> list[str]:
    """Every name a room re-exports exists in the module its ``submod_attrs`` names, and every name of
    the room's ``__all__`` resolves. Imports the package (``root.parent`` must be importable)."""
    root = Path(root)
    added = str(root.parent) not in sys.path
    if added:
        sys.path.insert(0, str(root.parent))
    eager = os.environ.pop("EAGER_IMPORT", None)  # name by name, each failure on its own line
    try:
        return _exported_names(root, package)
    finally:
        if added:
            sys.path.remove(str(root.parent))
        if eager is not None:
            os.environ["EAGER_IMPORT"] = eager


def _exported_names(root: Path, package: str) -> list[str]:
    problems = []
    for name, room_dir in rooms(root).items():
        init = room_dir / "__init__.py"
        if not init.exists():
            continue
        rel = init.relative_to(root.parent).as_posix()
        tree = ast.parse(init.read_text(encoding="utf-8"))
        room = f"{package}.{name}"
        for attr, sub in sorted(lazy_exports(tree).items()):
            try:
                module = importlib.import_module(f"{room}.{sub}")
            except Exception as error:  # noqa: BLE001 — reported, whatever it is
                problems.append(f"{rel}:1: {room}.{sub} (exporting {attr}) does not import: {error!r}")
                continue
            if not hasattr(module, attr):
                problems.append(f"{rel}:1: exports {attr} from {room}.{sub}, which has no {attr}")
        try:
            package_module = importlib.import_module(room)
        except Exception as error:  # noqa: BLE001
            problems.append(f"{rel}:1: {room} does not import: {error!r}")
            continue
        for attr in getattr(package_module, "__all__", []):
            try:
                getattr(package_module, attr)
            except Exception as error:  # noqa: BLE001
                problems.append(f"{rel}:1: {room}.__all__ names {attr}, which does not resolve: {error!r}")
    return problems


_PROBE = r"""
import importlib, sys, traceback
root = sys.argv[2]
class Watch:
    where = None
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" and Watch.where is None:
            ours = [f for f in traceback.extract_stack() if f.filename.startswith(root)]
            Watch.where = ours[-1] if ours else None
        return None
sys.meta_path.insert(0, Watch())
importlib.import_module(sys.argv[1])
if "tensorflow" in sys.modules:
    w = Watch.where
    print(f"{w.filename}:{w.lineno}" if w else "?")
"""


def check_no_eager_tensorflow(root: Path, package: str = "cmir_tf", names: list[str] | None = None) -> list[str]:
    """Importing a room (alone, in a fresh interpreter) puts no "tensorflow" in ``sys.modules``.

    One subprocess per room, all started at once. ``names`` defaults to the package and each room.
    """
    root = Path(root).resolve()
    if names is None:
        names = [package] + [f"{package}.{room}" for room in rooms(root)]
    env = {k: v for k, v in os.environ.items() if k != "EAGER_IMPORT"}  # lazy_loader's own switch: keep lazy
    env["PYTHONPATH"] = os.pathsep.join([str(root.parent), *filter(None, [env.get("PYTHONPATH")])])
    running = {name: subprocess.Popen([sys.executable, "-c", _PROBE, name, str(root)], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(root.parent))
               for name in names}
    problems = []
    for name, process in running.items():
        out, err = process.communicate(timeout=300)
        init = root.joinpath(*name.split(".")[1:], "__init__.py")
        rel = init.relative_to(root.parent).as_posix()
        if process.returncode:
            problems.append(f"{rel}:1: import {name} failed: {err.strip().splitlines()[-1] if err.strip() else ''}")
        elif out.strip():
            where = out.strip()
            if where != "?":
                path, line = where.rsplit(":", 1)
                where = f"{Path(path).relative_to(root.parent).as_posix()}:{line}"
            else:
                where = f"{rel}:1"
            problems.append(f"{where}: importing {name} imports tensorflow")
    return problems


# -- the paths and names the docs give --------------------------------------------------------------------------------

DOC_FILES = ("README.md", "docs/*.md", "tfrecords/README.md", "export/README.md")
# Top-level folders that are also the CLI's output folders (`export/contr_cf_g`, `tfrecords/melon`): a path
# under them is the repository's only when it names a Markdown file.
OUTPUT_ROOTS = ("export", "tfrecords")
# Where a repository path may start (besides any top-level folder there is): a path under a folder
# that is gone is stale too.
REPO_ROOTS = ("cmir_tf", "docs", "tests", "benchmarks", "ci", ".ci", "export", "tfrecords")
PLACEHOLDERS = {"X", "Y", "NAME", "CMD"}


def _defined_names(body: list[ast.stmt]) -> set[str]:
    """The names a module (or class) body binds at its top level, through if/try/with/for blocks."""
    names = set()
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                for node in ast.walk(target):
                    if isinstance(node, ast.Name):
                        names.add(node.id)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                names.add(alias.asname or alias.name.split(".")[0])
        for block in ("body", "orelse", "finalbody"):
            if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names |= _defined_names(getattr(stmt, block, []) or [])
        for handler in getattr(stmt, "handlers", []) or []:
            names |= _defined_names(handler.body)
    return names


class _Names:
    """Resolves ``cmir_tf.a.b.attr`` against the source tree, statically."""

    def __init__(self, root: Path, package: str):
        self.root, self.package = Path(root), package
        self.modules = discover(root, package)

    def module_file(self, dotted: str) -> Path | None:
        return self.modules[dotted].path if dotted in self.modules else None

    def resolves(self, dotted: str) -> bool:
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            module = ".".join(parts[:cut])
            if module in self.modules:
                return self.attributes(module, parts[cut:])
        return False

    def attributes(self, module: str, attrs: list[str]) -> bool:
        if not attrs:
            return True
        tree = self.modules[module].tree
        exports = lazy_exports(tree)
        first = attrs[0]
        if first in exports:
            defining = f"{module}.{exports[first]}"
            return defining in self.modules and self.attributes(defining, attrs)
        defined = _defined_names(tree.body)
        if first not in defined:
            return "__getattr__" in defined and not exports
        classes = [s for s in tree.body if isinstance(s, ast.ClassDef) and s.name == first]
        if len(attrs) > 1 and classes:
            return attrs[1] in _defined_names(classes[0].body) or any(
                isinstance(s, ast.FunctionDef) and s.name == "__init__" for s in classes[0].body)
        return True

    def runnable(self, dotted: str) -> bool:
        """``python -m dotted`` runs: a plain module, or a package with a ``__main__``."""
        module = self.modules.get(dotted)
        return module is not None and (not module.is_init or f"{dotted}.__main__" in self.modules)


_PATH = r"(?<![\w./-])((?:{roots})/[\w./*…-]*)"
_DOTTED = r"(?<![\w./-])(-m\s+)?({package}(?:\.[A-Za-z_]\w*)+)"


def _texts(repo: Path, package: str, exclude: tuple[str, ...]):
    """(relative file, line number, text) of every doc file line and every package docstring line."""
    for pattern in DOC_FILES:
        for path in sorted(repo.glob(pattern)):
            rel = path.relative_to(repo).as_posix()
            if rel in exclude:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                yield rel, number, line
    for path in sorted((repo / package).rglob("*.py")):
        rel = path.relative_to(repo).as_posix()
        if "__pycache__" in rel or rel in exclude:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
                first = node.body[0]
                if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                        and isinstance(first.value.value, str)):
                    for offset, line in enumerate(first.value.value.splitlines()):
                        yield rel, first.lineno + offset, line


def _path_exists(repo: Path, ref: str) -> bool:
    if ref.endswith("…"):  # `ci/…`, `cmir_tf/data/pipe…`: any path that starts so
        ref = ref[:-1]
        return bool(list(repo.glob(ref.rstrip("/") + "*")) if not ref.endswith("/") else (repo / ref).is_dir())
    if "*" in ref:
        return bool(list(repo.glob(ref)))
    return (repo / ref).exists()


def _deprecation_notes(repo: Path, rel: str) -> set[int]:
    """Line numbers of a Markdown file's paragraphs that mention ``DeprecationWarning`` (migration notes)."""
    if not rel.endswith(".md"):
        return set()
    lines, notes, block = (repo / rel).read_text(encoding="utf-8").splitlines(), set(), []
    for number, line in enumerate([*lines, ""], 1):
        if line.strip():
            block.append(number)
            continue
        if any("DeprecationWarning" in lines[n - 1] for n in block):
            notes.update(block)
        block = []
    return notes


def _source_folders(repo: Path) -> set[str]:
    """The repository's top-level folders that hold sources: those git tracks a file in (outputs a run
    leaves, ``data/`` and ``runs/``, are not; a path the docs give inside one is relative to something
    else, e.g. ``data/melon.py`` under ``cmir_tf/``), or every folder where the tree is not a checkout."""
    listed = None
    if (repo / ".git").exists():
        try:
            listed = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True,
                                    check=True, timeout=60).stdout.splitlines()
        except (OSError, subprocess.SubprocessError):
            pass
    if listed:
        return {name.split("/")[0] for name in listed if "/" in name}
    return {p.name for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".git")} - {"__pycache__", ".pytest_cache"}


def check_doc_paths(repo: Path, package: str = "cmir_tf", ignore_names: tuple[str, ...] = (),
                    exclude: tuple[str, ...] = (), deprecated: tuple[str, ...] = ()) -> list[str]:
    """Every repository path and every dotted ``package.a.b`` name the docs and docstrings give exists.

    ``ignore_names``: first components after the package that are not modules (the JSON keys of export
    metadata, ``cmir_tf.variant``); ``exclude``: files not to read (relative to ``repo``);
    ``deprecated``: old module names still importable as aliases (``cmir_tf.moved.MOVED``), accepted only
    in a paragraph that mentions ``DeprecationWarning`` (a migration note), stale anywhere else.
    """
    repo = Path(repo)
    roots = sorted(_source_folders(repo) | {package, *REPO_ROOTS})
    path_re = re.compile(_PATH.format(roots="|".join(re.escape(r) for r in roots)))
    dotted_re = re.compile(_DOTTED.format(package=re.escape(package)))
    link_re = re.compile(r"\]\(([\w./-]+)(?:#[\w-]*)?\)")
    names = _Names(repo / package, package)
    problems, notes = [], {}
    for rel, number, line in _texts(repo, package, exclude):
        for match in path_re.finditer(line):
            ref = match.group(1).rstrip(".,;:")  # a sentence's punctuation (`docs/...` becomes `docs/`)
            top = ref.split("/")[0]
            if top in OUTPUT_ROOTS and not ref.endswith(".md"):
                continue
            if ref.rstrip("/") == top and (repo / top).is_dir():
                continue
            if not _path_exists(repo, ref):
                problems.append(f"{rel}:{number}: {ref} does not exist")
        if rel.endswith(".md"):
            for match in link_re.finditer(line):
                target = match.group(1)
                if not path_re.fullmatch(target) and not ((repo / rel).parent / target).exists():
                    problems.append(f"{rel}:{number}: link {target} does not exist")
        for match in dotted_re.finditer(line):
            run, dotted = match.group(1), match.group(2)
            parts = dotted.split(".")
            if PLACEHOLDERS & set(parts) or parts[1] in ignore_names:
                continue
            if parts[1] in deprecated and number in notes.setdefault(rel, _deprecation_notes(repo, rel)):
                continue
            if run:
                if not names.runnable(dotted):
                    problems.append(f"{rel}:{number}: python -m {dotted} is no command (no module "
                                    f"{dotted.replace('.', '/')}.py, no {dotted.replace('.', '/')}/__main__.py)")
            elif not names.resolves(dotted):
                problems.append(f"{rel}:{number}: {dotted} is no module or name of one")
    return problems
