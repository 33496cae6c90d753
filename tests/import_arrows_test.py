"""Which tfgraft modules may import which: the layering of the library.

Read from the source (every import statement, lazy ones inside functions
included), so a forbidden arrow fails here before it can form a circle.
"""

import ast
import glob
import os

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[: -len(".py")]
    parts = rel.split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path):
    """Every tfgraft name `path` imports (`from a import b` counts as
    `a.b`, whether b is a module or a name in a; `_module_of` tells)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = _module_name(path)
    if not path.endswith("__init__.py"):
        package = package.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                up = parts[: len(parts) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "tfgraft"}


def _library():
    pattern = os.path.join(ROOT, "tfgraft", "**", "*.py")
    paths = glob.glob(pattern, recursive=True)
    return {_module_name(p): _imports(p) for p in sorted(paths)}


def _module_graph():
    """`module -> the tfgraft modules it imports` (names resolved to the
    module that defines them)."""
    library = _library()
    graph = {}
    for module, imports in library.items():
        targets = set()
        for name in imports:
            while name and name not in library:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _circles(graph):
    """The strongly connected components of more than one module."""
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return found


def _under(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


def _offending(modules, allowed_in, forbidden):
    """`module -> forbidden imports` for modules under `allowed_in`."""
    bad = {}
    for module, imports in _library().items():
        if not any(_under(module, m) for m in modules):
            continue
        if any(_under(module, m) for m in allowed_in):
            continue
        hits = sorted(
            name for name in imports if any(_under(name, f) for f in forbidden)
        )
        if hits:
            bad[module] = hits
    return bad


class ImportArrowsTest(tf.test.TestCase):
    def test_runtime_never_imports_testing(self):
        # Fault injection is a callback registered from outside
        # (tfgraft/points.py), not an import of the test helpers.
        self.assertEqual(
            _offending(["tfgraft"], ["tfgraft.testing"], ["tfgraft.testing"]),
            {},
        )

    def test_training_is_a_leaf_loop_library(self):
        # Trainer, fit loop, checkpoints, optimizers, schedules, distribute:
        # no models, data or export. The job template that wires them to
        # those is `tfgraft/experiment.py`, above them.
        forbidden = [
            "tfgraft." + m
            for m in (
                "models",
                "data",
                "export",
                "experiment",
                "pretrained",
                "study",
                "grafting",
                "stripe",
                "ekg",
                "lwdna",
                "l1prune",
                "testing",
            )
        ]
        self.assertEqual(_offending(["tfgraft.training"], [], forbidden), {})

    def test_layers_import_no_method_package(self):
        methods = [
            "tfgraft." + m
            for m in ("grafting", "stripe", "ekg", "lwdna", "l1prune")
        ]
        forbidden = methods + [
            "tfgraft.training",
            "tfgraft.models",
            "tfgraft.data",
        ]
        self.assertEqual(_offending(["tfgraft.layers"], [], forbidden), {})

    def test_no_module_imports_itself_through_others(self):
        # Lazy imports count: a circle hidden inside a function is still
        # a circle (the data sources had one; `tfgraft/data/base.py` now
        # holds what they share).
        self.assertEqual(_circles(_module_graph()), [])

    def test_the_circle_finder_finds_a_circle(self):
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        self.assertEqual(_circles(graph), [["a", "b", "c"]])

    def test_data_sources_share_a_base_not_each_other(self):
        graph = _module_graph()
        for kind in ("folder_source", "tfds_source"):
            module = "tfgraft.data." + kind
            self.assertIn("tfgraft.data.base", graph[module])
            self.assertNotIn("tfgraft.data.sources", graph[module])

    def test_the_reader_sees_lazy_imports(self):
        imports = _library()
        # `tfgraft/testing/faults.py` imports the points module at its top.
        self.assertIn("tfgraft.points", imports["tfgraft.testing.faults"])
        self.assertIn("tfgraft.io", imports["tfgraft.training.loop"])
        # `experiment.py` imports `tfgraft.complexity` inside a function.
        graph = _module_graph()
        self.assertIn("tfgraft.complexity", graph["tfgraft.experiment"])
