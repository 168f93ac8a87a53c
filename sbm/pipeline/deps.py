"""dvc.yaml's code dependencies, computed from the import graph.

A stage's `deps` list its script and every sbm module the script imports, transitively
(DVC's cache key: editing a module reruns exactly the stages that import it). All sbm
imports are absolute and at module level (tests/test_layers.py holds the package to that),
so the graph is read off the source without importing anything.

    python -m sbm.pipeline.deps           # print the stages whose deps are out of date
    python -m sbm.pipeline.deps --write   # rewrite those lists in dvc.yaml in place
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path


def module_file(name: str, root: Path) -> Path | None:
    """sbm/a/b.py (or sbm/a/b/__init__.py) for the dotted module `name`, None if not in the tree."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path, root: Path) -> set[str]:
    """Dotted names of the sbm modules `path` imports directly (`from sbm.x.y import z`,
    `from sbm.x import y` with y a module, `import sbm.x.y`), packages' __init__ included."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "sbm":
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names
                       if module_file(f"{node.module}.{a.name}", root) is not None)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "sbm")
    for name in list(out):  # importing sbm.a.b runs sbm/__init__.py and sbm/a/__init__.py first
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return {n for n in out if module_file(n, root) is not None}


def sbm_files(script: Path, root: Path) -> list[str]:
    """Every sbm source file `script` imports, transitively, as sorted paths relative to root;
    packages' __init__.py files hold no code (tests/test_layers.py), so they are left out."""
    seen: set[str] = set()
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop(), root):
            if name not in seen:
                seen.add(name)
                todo.append(module_file(name, root))
    files = (module_file(n, root) for n in seen)
    return sorted(str(f.relative_to(root)) for f in files if f.name != "__init__.py")  # empty: see test_layers


_STAGE = re.compile(r"^  (\w+):\n", re.M)
_SCRIPT = re.compile(r"(stages/\w+\.py)")


def sync(dvc_yaml: Path, write: bool = False) -> list[str]:
    """Stages of dvc_yaml whose sbm deps differ from their script's imports (rewritten in
    place, sorted, right after the script's own line, when `write`)."""
    root = dvc_yaml.parent
    text = dvc_yaml.read_text()
    starts = [m.start() for m in _STAGE.finditer(text)] + [len(text)]
    stale, pieces = [], [text[:starts[0]]]
    for a, b in zip(starts, starts[1:]):
        block = text[a:b]
        name = _STAGE.match(block).group(1)
        script = _SCRIPT.search(block).group(1)
        want = sbm_files(root / script, root)
        have = re.findall(r"^      - (sbm/\S+)\n", block, re.M)
        if have != want:
            stale.append(name)
            block = re.sub(r"^      - sbm/\S+\n", "", block, flags=re.M)
            block = block.replace(f"      - {script}\n", f"      - {script}\n" + "".join(f"      - {f}\n" for f in want), 1)
        pieces.append(block)
    if write and stale:
        dvc_yaml.write_text("".join(pieces))
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dvc-yaml", default="dvc.yaml", type=Path)
    ap.add_argument("--write", action="store_true", help="rewrite the stale deps lists in place")
    args = ap.parse_args(argv)
    stale = sync(args.dvc_yaml, write=args.write)
    verb = "rewrote" if args.write else "out of date"
    print(f"{verb}: {', '.join(stale)}" if stale else "dvc.yaml deps match the imports")
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
