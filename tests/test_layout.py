"""The layout holds: who may import whom, no import cycles, dvc.yaml's deps cover the code each stage runs, and the
end-to-end tests live in tests/e2e.

Imports are read from the source (ast), none is executed: every ``import`` and ``from ... import`` of the project's
own packages, those inside functions included (the stages import their heavy libraries lazily, and the layering
holds for those too). Cycles are looked for among module-level imports only: an import inside a function runs after
every module involved has loaded, so it cannot leave one half-initialised.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.support import REPO

PACKAGES = ("spt", "study", "stages", "tools")
# what each package must not import: the library knows nothing of the study, the stages or the tools; the study
# nothing of the stages or the tools (the stages import both)
FORBIDDEN = {"spt": ("study", "stages", "tools"), "study": ("stages", "tools")}
ACYCLIC = ("spt", "study")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name."""
    return {module_name(path, root): path for package in packages for path in sorted((root / package).rglob("*.py"))}


def _statements(tree: ast.Module, module_level: bool):
    """Every node of ``tree``; with ``module_level``, not those inside a function (they run when it is called)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        pending.extend(ast.iter_child_nodes(node))


def imported_modules(path: Path, name: str, known: set[str], module_level: bool = False) -> set[str]:
    """The project modules that the module ``name`` (file ``path``) imports, each resolved to a module of
    ``known`` (``from spt import paths`` imports spt.paths; ``from spt.paths import LABELED`` imports spt.paths)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _statements(ast.parse(path.read_text(encoding="utf-8"), str(path)), module_level):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES, module_level: bool = False
                 ) -> dict[str, set[str]]:
    """module -> the project modules it imports (of ``packages``, under ``root``)."""
    found = modules(root, packages)
    return {name: imported_modules(path, name, set(found), module_level) for name, path in found.items()}


def layering_violations(graph: dict[str, set[str]], forbidden: dict[str, tuple[str, ...]] = FORBIDDEN) -> list[str]:
    """Each import of a package by one that must not import it, as ``a imports b``."""
    return sorted(f"{module} imports {target}" for module, targets in graph.items() for target in targets
                  if target.split(".")[0] in forbidden.get(module.split(".")[0], ()))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of more than one module (or a module that
    imports itself), each sorted (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = lowlink[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = lowlink[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    lowlink[node] = min(lowlink[node], index[child])
                continue
            work.pop()
            if work:
                lowlink[work[-1][0]] = min(lowlink[work[-1][0]], lowlink[node])
            if lowlink[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return sorted(found)


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    """``start`` and every module it imports, directly or not."""
    seen, pending = {start}, [start]
    while pending:
        for target in graph.get(pending.pop(), ()):
            if target not in seen:
                seen.add(target)
                pending.append(target)
    return seen


# --------------------------------------------------------------------------------------------
# the repository


def test_the_graph_sees_the_whole_code_base():
    """A parse that found nothing would pass every check below."""
    graph = import_graph(REPO)
    assert {name.split(".")[0] for name in graph} == set(PACKAGES) and len(graph) > 40
    assert {"spt.paths", "study.run"} <= graph["stages.cli"]
    assert "spt.train.resume" in graph["spt.train.training_run"]
    assert "study.floors" in graph["stages.evaluate"]  # imported inside a function


def test_the_library_imports_no_study_stage_or_tool_and_the_study_no_stage_or_tool():
    assert layering_violations(import_graph(REPO)) == []


def test_no_import_cycles_in_the_library_and_the_study():
    graph = import_graph(REPO, ACYCLIC, module_level=True)
    assert graph and cycles(graph) == []


def test_every_stage_depends_on_the_code_it_runs():
    """A change to any module a stage imports (directly or not, at import or in a function) reruns it: one of its
    dvc.yaml deps covers the module's file. A training stage's command runs stages.launch, which execs the stage's
    module: both count."""
    graph = import_graph(REPO)
    files = modules(REPO)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage, spec in stages.items():
        module, *args = spec["cmd"].split(" -m ")[1].split()
        run = [module, f"stages.{args[0]}"] if module == "stages.launch" else [module]  # launch execs the stage
        code = {str(files[name].relative_to(REPO)) for started in run for name in closure(graph, started)}
        assert {f"{started.replace('.', '/')}.py" for started in run} <= code
        uncovered = {path for path in code
                     if not any(path == dep or path.startswith(f"{dep}/") for dep in spec["deps"])}
        assert not uncovered, f"dvc.yaml stage {stage} runs {sorted(uncovered)} but does not depend on them"


def test_end_to_end_tests_live_in_tests_e2e():
    """Each module under tests/e2e marks all its tests e2e (``pytestmark``); no test elsewhere carries the mark, so
    the folder is the tier."""
    tests = REPO / "tests"
    e2e = sorted((tests / "e2e").glob("test_*.py"))
    assert e2e
    for path in e2e:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        marks = [ast.unparse(node.value) for node in tree.body if isinstance(node, ast.Assign)
                 and any(isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets)]
        assert marks == ["pytest.mark.e2e"], path
    elsewhere = [path for path in tests.rglob("test_*.py") if "e2e" not in path.relative_to(tests).parts]
    assert elsewhere
    for path in elsewhere:
        assert not uses_the_e2e_mark(path.read_text(encoding="utf-8")), f"{path}: end-to-end tests go in tests/e2e"


def uses_the_e2e_mark(source: str) -> bool:
    """Whether ``source`` names ``<...>.mark.e2e`` (a decorator, pytestmark, pytest.param(marks=...))."""
    def is_mark(node: ast.expr) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "mark") or (isinstance(node, ast.Name)
                                                                             and node.id == "mark")

    return any(isinstance(node, ast.Attribute) and node.attr == "e2e" and is_mark(node.value)
               for node in ast.walk(ast.parse(source)))


# --------------------------------------------------------------------------------------------
# the checks themselves, on planted violations


def write_modules(root: Path, sources: dict[str, str]) -> Path:
    for name, source in sources.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


@pytest.fixture
def planted(tmp_path) -> Path:
    """A small code base with one of each fault: the library importing the study (inside a function), the study
    importing a stage, a cycle at module level in the library, and a function-level import that closes no cycle."""
    return write_modules(tmp_path, {
        "spt/__init__.py": "",
        "spt/paths.py": "from spt.config import Params\n",
        "spt/config.py": "import os\n\nfrom spt import paths\n",  # paths <-> config: a cycle
        "spt/data/__init__.py": "",
        "spt/data/splits.py": "from ..paths import LABELED\n\n\ndef draw():\n    from study.run import Run\n",
        "spt/data/sources.py": "def read():\n    from spt.data import splits\n",
        "study/__init__.py": "",
        "study/run.py": "import spt.data.sources\nfrom stages.cli import run_stage\n",
        "stages/__init__.py": "",
        "stages/cli.py": "from study.run import Run\nimport yaml\n",
        "tools/__init__.py": "",
    })


def test_imports_are_resolved_to_modules_wherever_they_are(planted):
    graph = import_graph(planted)
    assert graph["spt.data.splits"] == {"spt.paths", "study.run"}  # relative, and inside a function
    assert graph["spt.config"] == {"spt.paths"}  # from a package: the module; os is no project module
    assert graph["study.run"] == {"spt.data.sources", "stages.cli"}
    assert graph["spt.data.sources"] == {"spt.data.splits"}
    assert import_graph(planted, module_level=True)["spt.data.splits"] == {"spt.paths"}
    assert import_graph(planted, module_level=True)["spt.data.sources"] == set()


def test_the_layering_check_names_each_planted_violation(planted):
    assert layering_violations(import_graph(planted)) == ["spt.data.splits imports study.run",
                                                          "study.run imports stages.cli"]
    assert layering_violations({"stages.cli": {"study.run", "tools.sandbox"}, "study.run": {"spt.paths"}}) == []


def test_the_cycle_check_finds_planted_cycles_and_only_those(planted):
    assert cycles(import_graph(planted, ACYCLIC, module_level=True)) == [["spt.config", "spt.paths"]]
    # with the function-level imports, study.run -> spt.data.sources -> spt.data.splits -> study.run would close
    assert ["spt.data.sources", "spt.data.splits", "study.run"] in cycles(import_graph(planted, ACYCLIC))
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_e2e_mark_is_found_however_it_is_applied():
    assert uses_the_e2e_mark("import pytest\n\n@pytest.mark.e2e\ndef test_x():\n    pass\n")
    assert uses_the_e2e_mark("from pytest import mark\npytestmark = [mark.e2e]\n")
    assert not uses_the_e2e_mark("MARK = 'pytest.mark.e2e'\n")


def test_closure_follows_imports_to_the_end():
    assert closure({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a"}}, "a") == {"a", "b", "c"}
