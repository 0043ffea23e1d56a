#!/usr/bin/env python3
"""Import graph of the agent crate: files, arrows, cycles and arrows against the floors.

Usage: scripts/import-graph.py [--verbose] [SRC_DIR]   (default: agent/src)

Reads every non-test `.rs` file under SRC_DIR (skipping `tests.rs`, `tests/` and whatever
follows `#[cfg(test)] mod tests`), collects the `crate::…`, `super::…` and `self::…` paths of
its `use` items and inline paths, and resolves each to the file that defines that module.

Figures printed:
* files and arrows (file → file, self-arrows dropped);
* cycles: strongly connected components of more than one file, leaving out a folder's
  `mod.rs` declaring and re-exporting its own children (and at top-level module
  granularity, ignoring arrows inside one top-level module);
* arrows against the floors: a file importing a top-level module on a higher floor than its
  own, with the floors of `agent/src/lib.rs`'s `# Layout` (FLOORS below, top first).
"""

import os
import re
import sys
from collections import defaultdict

# Top first. A module imports only its own floor or those below it.
FLOORS = [
    ["main", "cli", "daemon", "exporter", "dashboard", "lock", "readiness"],
    ["server"],
    ["intake", "flags"],
    ["admission"],
    ["executor"],
    ["strategy"],
    ["app"],
    ["health", "traffic", "artifact", "reach", "fsguard"],
    ["supervisor"],
    ["config", "secrets"],
    ["audit", "state", "ledger", "progress", "clock", "error", "job", "telemetry", "metrics", "shutdown"],
]


def floor_of(top):
    for i, names in enumerate(FLOORS):
        if top in names:
            return i
    return None


def strip_tests(text):
    m = re.search(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod tests\s*\{", text)
    if m:
        text = text[: m.start()]
    # Out-of-line test modules declared with `#[cfg(test)] mod tests;` are files we skip.
    return text


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"//.*$", "", line) for line in text.splitlines())


def expand_use(tree):
    """`a::{b, c::{d, e}}` → ['a::b', 'a::c::d', 'a::c::e']"""
    tree = tree.strip()
    depth = 0
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                prefix = tree[:i]
                inner = tree[i + 1 : tree.rindex("}")]
                parts, cur, d = [], "", 0
                for c in inner:
                    if c == "," and d == 0:
                        parts.append(cur)
                        cur = ""
                        continue
                    if c == "{":
                        d += 1
                    if c == "}":
                        d -= 1
                    cur += c
                parts.append(cur)
                out = []
                for p in parts:
                    if p.strip():
                        out.extend(expand_use(prefix + p.strip()))
                return out
            depth += 1
    return [re.sub(r"\s+as\s+\w+$", "", tree)]


def module_of(path, src):
    rel = os.path.relpath(path, src)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def resolve(mod_parts, files):
    """Longest prefix of mod_parts that is a file module."""
    for n in range(len(mod_parts), 0, -1):
        key = tuple(mod_parts[:n])
        if key in files:
            return key
    return None


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    verbose = "--verbose" in sys.argv
    src = args[0] if args else "agent/src"
    files = {}
    for root, dirs, names in os.walk(src):
        dirs[:] = [d for d in dirs if d != "tests"]
        for name in names:
            if not name.endswith(".rs") or name == "tests.rs" or name == "test_util.rs":
                continue
            path = os.path.join(root, name)
            parts = module_of(path, src)
            if parts in ([], ["main"]) and name == "lib.rs":
                continue
            files[tuple(parts)] = path
    edges = defaultdict(set)
    for me, path in files.items():
        with open(path, encoding="utf-8") as f:
            text = strip_comments(strip_tests(f.read()))
        paths = []
        for m in re.finditer(r"\buse\s+([^;]+);", text):
            paths.extend(expand_use(m.group(1)))
        paths.extend(re.findall(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", text))
        for p in paths:
            segs = [s for s in re.split(r"\s*::\s*", p.strip()) if s]
            if not segs:
                continue
            if segs[0] == "crate":
                target = segs[1:]
            elif segs[0] == "self":
                target = list(me) + segs[1:]
            elif segs[0] == "super":
                # `super` of a/b.rs and of a/b/mod.rs is a.
                base = list(me)
                while segs and segs[0] == "super":
                    base = base[:-1]
                    segs = segs[1:]
                target = base + segs
            else:
                continue
            t = resolve(target, files)
            if t is not None and t != me:
                edges[me].add(t)

    n_edges = sum(len(v) for v in edges.values())
    print(f"files: {len(files)}  arrows: {n_edges}")

    # Tarjan's strongly connected components.
    def sccs(nodes, adj):
        index, low, stack, on, out = {}, {}, [], set(), []
        counter = [0]

        def strong(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in adj.get(v, ()):
                if w not in index:
                    strong(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

        sys.setrecursionlimit(10000)
        for v in nodes:
            if v not in index:
                strong(v)
        return out

    # A folder's mod.rs declaring and re-exporting its own children is not a loop; arrows
    # from a module down into its own descendants are left out of the cycle search.
    down = {a: {b for b in bs if b[: len(a)] != a} for a, bs in edges.items()}
    file_cycles = sccs(list(files), down)
    print(f"cycles between files: {len(file_cycles)}")
    for c in file_cycles:
        print("  " + " <-> ".join("/".join(x) for x in c))

    top_edges = defaultdict(set)
    for a, bs in edges.items():
        for b in bs:
            if a[0] != b[0]:
                top_edges[a[0]].add(b[0])
    tops = sorted({k[0] for k in files})
    top_cycles = sccs(tops, top_edges)
    print(f"cycles between top-level modules: {len(top_cycles)}")
    for c in top_cycles:
        print("  " + " <-> ".join(c))

    against = []
    unplaced = set()
    for a, bs in sorted(edges.items()):
        fa = floor_of(a[0])
        for b in sorted(bs):
            fb = floor_of(b[0])
            if fa is None:
                unplaced.add(a[0])
            if fb is None:
                unplaced.add(b[0])
            if fa is not None and fb is not None and fb < fa:
                against.append((a, b))
    print(f"arrows against the floors: {len(against)}")
    for a, b in against:
        print(f"  {'/'.join(a)} -> {'/'.join(b)}")
    if unplaced:
        print(f"modules on no floor: {', '.join(sorted(unplaced))}")
    if verbose:
        for a in sorted(edges):
            print("/".join(a), "->", ", ".join("/".join(b) for b in sorted(edges[a])))


if __name__ == "__main__":
    main()
