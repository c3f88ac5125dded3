#!/usr/bin/env python3
"""Fails when a module of src/ imports one above it, when the modules
import each other in a cycle, or when a module is missing from the maps a
reader starts from: the layer table of src/lib.rs and docs/architecture.md.

The layers are those of docs/architecture.md. A module is a top-level
module of the crate (src/routing/route.rs belongs to `routing`); an import
is any `crate::<module>` path in its files (in `use` lines, grouped
`use crate::{a, b}` lines, and inline paths). A module may import only
modules of a lower layer; `backends` may be imported only by the layers
that wire a node (the node and the tools), never by routing or anything
under it. Run by scripts/test.sh; prints every offending import with its
file and line.
"""

import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Lower number = lower layer. Modules of one layer may not import each other.
LAYERS = {
    # bottom: the wire contract, configuration and small helpers
    "cause": 0, "lock": 0, "http_client": 0, "process": 0, "redact": 0, "protocol": 0, "health": 0, "rate": 0,
    "config": 1, "metrics": 1,
    "auth": 2, "tls": 2, "resume": 2,
    # ports, and the backends behind them
    "presence": 3, "bus": 3, "inbox": 3, "history": 3, "hooks": 3, "events": 3,
    "backends": 4,
    # the core, bottom up
    "hub": 5,
    "routing": 6,
    "session": 7,
    "node": 8,
    # transport
    "http": 9, "server": 9,
    # running a node
    "runtime": 10,
    # the binary's own tools (src/tools/, not part of the library)
    "tools": 11,
}
# Modules of the binary, not of the library: in the maps, but not in
# lib.rs's table (main.rs declares them).
BINARY_MODULES = {"tools"}
ROOT = os.path.join(SRC, "..")
# Who may import the backends: those that choose and connect them.
BACKENDS_USERS = {"node", "runtime"}

USE_GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\}", re.S)
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def module_of(path):
    rel = os.path.relpath(path, SRC)
    head = rel.split(os.sep)[0]
    return head[:-3] if head.endswith(".rs") else head


def strip_comments(text):
    """The code of a file without its comments (doc links are not
    dependencies), line numbers kept."""
    return re.sub(r"//[^\n]*", "", text)


def imports(path):
    """(line number, imported module) for every crate path in a file."""
    text = strip_comments(open(path, encoding="utf-8").read())
    found = []
    for m in USE_GROUP.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        for item in m.group(1).split(","):
            name = item.strip().split("::")[0].strip()
            if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and name not in ("self", "super"):
                found.append((line, name))
    for m in PATH.finditer(text):
        found.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return found


def main():
    problems = []
    edges = {}
    for root, _, files in os.walk(SRC):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            module = module_of(path)
            if module in ("lib", "main"):
                continue
            if module not in LAYERS:
                problems.append(f"{path}: module `{module}` has no layer in scripts/check-layers.py")
                continue
            for line, target in imports(path):
                if target == module or target not in LAYERS:
                    continue
                edges.setdefault(module, set()).add(target)
                where = f"{os.path.relpath(path, os.path.join(SRC, '..'))}:{line}"
                if LAYERS[target] >= LAYERS[module]:
                    problems.append(
                        f"{where}: `{module}` (layer {LAYERS[module]}) imports `{target}` "
                        f"(layer {LAYERS[target]}): an arrow pointing up or sideways"
                    )
                elif target == "backends" and module not in BACKENDS_USERS:
                    problems.append(
                        f"{where}: `{module}` imports `backends`: only the node and the tools "
                        "may know which backends there are"
                    )
    # A cycle needs an arrow pointing up, so the checks above catch it too;
    # this names it plainly.
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                problems.append("module cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    problems += missing_from_maps()
    if problems:
        print("check-layers: the layering of src/ is broken:", file=sys.stderr)
        for p in sorted(set(problems)):
            print("  " + p, file=sys.stderr)
        sys.exit(1)
    print(f"check-layers: {len(edges)} modules, {sum(len(v) for v in edges.values())} "
          "imports, all pointing down, no cycle")


def top_level_modules():
    """Every top-level module of src/: a file (not lib.rs or main.rs) or a
    directory."""
    found = set()
    for entry in os.listdir(SRC):
        if entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            found.add(entry[:-3])
        elif os.path.isdir(os.path.join(SRC, entry)):
            found.add(entry)
    return found


def missing_from_maps():
    """A module a reader cannot find on the maps: lib.rs's layer table (its
    rows name modules as [`name`]) and docs/architecture.md (as `name`)."""
    lib = open(os.path.join(SRC, "lib.rs"), encoding="utf-8").read()
    table = "\n".join(l for l in lib.splitlines() if l.startswith("//! |"))
    in_table = set(re.findall(r"\[`([a-z_]+)`\]", table))
    architecture = open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8").read()
    problems = []
    for module in sorted(top_level_modules()):
        if module not in LAYERS:
            problems.append(f"src/{module}: module `{module}` has no layer in scripts/check-layers.py")
        if module not in BINARY_MODULES and module not in in_table:
            problems.append(f"src/lib.rs: module `{module}` is missing from the layer table")
        if f"`{module}`" not in architecture:
            problems.append(f"docs/architecture.md: module `{module}` is not on the map")
    return problems


if __name__ == "__main__":
    main()
