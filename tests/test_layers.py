"""The package is layered: each layer imports only the layers below it, never upward or in a
circle, and every sbm import is absolute and at module level (so the import graph, which is
also dvc.yaml's code dependencies, can be read off the source: `sbm.pipeline.deps`)."""

import ast
from pathlib import Path

import pytest

from sbm.pipeline.deps import imported_modules, sbm_files

ROOT = Path(__file__).resolve().parents[1]
#: lowest first; a module of layer i may import layers 0..i (its own included)
LAYERS = ["errors", "config", "io", "core", "nets", "models", "text", "latent", "train", "distill", "eval",
          "pipeline", "__main__"]
MODULES = sorted(p for p in (ROOT / "sbm").rglob("*.py"))


def _name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # the package itself
        return -1
    assert parts[1] in LAYERS, f"{module}: not in any layer; add its package to LAYERS (and DESIGN.md)"
    return LAYERS.index(parts[1])


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_imports_go_only_downward(path):
    here = _layer(_name(path))
    upward = sorted(m for m in imported_modules(path, ROOT) if _layer(m) > here)
    assert not upward, f"{_name(path)} (layer {LAYERS[here]}) imports a higher layer: {upward}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_sbm_imports_are_absolute_and_at_module_level(path):
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            pytest.fail(f"{_name(path)}:{node.lineno}: relative import; write `from sbm.… import …`")
        is_sbm = (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sbm") or (
            isinstance(node, ast.Import) and any(a.name.split(".")[0] == "sbm" for a in node.names))
        if is_sbm and id(node) not in top:
            pytest.fail(f"{_name(path)}:{node.lineno}: sbm import inside a function or block; move it to the top")


def test_no_import_cycles():
    graph = {_name(p): {m for m in imported_modules(p, ROOT) if m.count(".") > 0} for p in MODULES}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_package_inits_hold_no_code():
    """dvc.yaml leaves __init__.py files out of the deps, which is sound only while they are empty."""
    for init in (ROOT / "sbm").rglob("__init__.py"):
        body = ast.parse(init.read_text()).body
        code = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
                and not (isinstance(n, ast.Assign) and init.parent.name == "sbm")]  # sbm.__version__
        assert not code, f"{init.relative_to(ROOT)}: holds code; move it into a module"


def test_the_walker_follows_transitive_imports(tmp_path):
    """sbm_files on a known chain: measured -> eval.evaluator -> nets.classifier -> nets.score
    (three hops), and nothing of training or text."""
    script = tmp_path / "s.py"
    script.write_text("from sbm.pipeline.measured import load_measured\n")
    files = sbm_files(script, ROOT)
    for f in ("sbm/pipeline/measured.py", "sbm/eval/evaluator.py", "sbm/nets/classifier.py", "sbm/nets/score.py"):
        assert f in files, (f, files)
    assert not [f for f in files if f.startswith(("sbm/train/", "sbm/text/", "sbm/distill/"))], files


def test_a_caption_helper_is_a_dependency_of_the_text_stages_only():
    from sbm.config.params import read_yaml

    stages = read_yaml(ROOT / "dvc.yaml")["stages"]
    users = {name for name, st in stages.items()
             if "sbm/text/captions.py" in [d if isinstance(d, str) else next(iter(d)) for d in st["deps"]]}
    assert users == {"train_text", "evaluate_text", "sample", "distill", "evaluate_distill"}, users
