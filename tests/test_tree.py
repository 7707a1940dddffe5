"""The shape of the tree: short modules, no import cycle, and each process importing only what it
runs (docs/ARCHITECTURE.md, "Layers")."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGES = ("speech_service", "deployments", "f5voice")
MAX_LINES = 300


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, anywhere in it (lazy imports too), outside
    `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    guarded = [node for node in ast.walk(tree)
               if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)]
    skipped = {id(n) for node in guarded for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def test_no_module_is_over_300_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_no_import_cycle():
    known = modules()
    graph = {name: imports(path, set(known)) - {name} for name, path in known.items()}

    def parent_packages(name):  # importing a.b.c runs a/__init__ and a/b/__init__ first, cycle-free here
        return {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}

    graph = {name: deps - parent_packages(name) for name, deps in graph.items()}
    state: dict[str, str] = {}

    def visit(name, path):
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                raise AssertionError(" -> ".join([*path, name, dep]))
            if dep not in state:
                visit(dep, [*path, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.slow  # a fresh interpreter each
@pytest.mark.parametrize("code", [
    "import deployments.ingress",
    "import serve_app",
    "from speech_service.http.app import create_app",
    "import f5voice.cli",
])
def test_the_ingress_the_http_package_and_the_cli_never_import_torch_or_f5(code):
    loaded = loaded_after(code)
    assert not {m for m in loaded if m.split(".")[0] in ("torch", "f5_tts", "torchaudio", "vocos")}, code


def test_the_cli_needs_only_httpx():
    known = modules()
    third_party = set()
    for name, path in known.items():
        if not name.startswith("f5voice"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                third_party |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                third_party.add(node.module.split(".")[0])
    assert third_party - set(sys.stdlib_module_names) - {"__future__", "f5voice"} == {"httpx"}


def test_only_the_synthesis_package_imports_torch_or_f5():
    """Outside `synthesis/` torch appears only where a device is asked for (`devices`, lazily) and
    in the offline model maker, which runs at set-up, never in a replica."""
    allowed = {"speech_service.devices", "speech_service.weights.offline"}
    offenders = []
    for name, path in modules().items():
        if name.startswith("speech_service.synthesis") or name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = {node.module.split(".")[0]}
            else:
                continue
            if roots & {"torch", "f5_tts", "vocos", "torchdiffeq"}:
                offenders.append(name)
    assert not offenders, offenders
