"""The package's shape: folders with one job each, small modules, and no import circle (imports inside functions
count). The direction between folders is import-linter's (pyproject.toml, run by .ci/run)."""

from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parent.parent / "kolors_app"
MAX_LINES = 400
MAX_TOP_LEVEL_MODULES = 10


def test_modules_are_small_and_few_sit_at_the_top():
    long = {str(path.relative_to(PACKAGE)): count for path in PACKAGE.rglob("*.py")
            if (count := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
    assert len(list(PACKAGE.glob("*.py"))) <= MAX_TOP_LEVEL_MODULES


def test_no_import_circle():
    graph = grimp.build_graph("kolors_app")
    modules = sorted(graph.modules)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(imported) == 1:
                circles.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, path + [imported])
        state[module] = 2

    for module in modules:
        if module not in state:
            visit(module, [module])
    assert circles == []
