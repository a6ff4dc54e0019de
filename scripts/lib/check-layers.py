#!/usr/bin/env python3
"""Checks cryo's layering from its #include lines (run by 'meson test --suite lint').

- common <- images, criu-glue, remote <- runtime: a layer includes only its
  own headers and those of the layers below it;
- a layer's private headers are included only inside it: images'
  archive-internal.h, criu-glue's internal.h, pb.h, criu-proto.h,
  libcriu-internals.h and ranges.h, the supervisor's supervisor/internal.h,
  remote's http.h;
- only criu-glue includes libcriu's headers (<criu/...>);
- no two modules (a .c and its .h) include each other in a circle (a header
  without a .c of its own, such as a private internal.h, is a leaf: it only
  gathers declarations of the module that includes it).
Tests (tests/) may include what they test. Prints each breach on a line of its
own and exits 1 if there is any."""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "."
LAYERS = {"common": [], "images": ["common"], "criu-glue": ["common"], "remote": ["common"],
          "runtime": ["common", "images", "criu-glue", "remote"]}
PRIVATE = {
    "images": {"archive-internal.h"},
    "criu-glue": {"internal.h", "pb.h", "criu-proto.h", "libcriu-internals.h", "ranges.h"},
    "runtime/supervisor": {"internal.h"},
    "remote": {"http.h"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def sources():
    for layer in LAYERS:
        for dirpath, _, names in os.walk(os.path.join(root, layer)):
            for n in sorted(names):
                if n.endswith((".c", ".h")):
                    yield os.path.relpath(os.path.join(dirpath, n), root)


def resolve(src, name):
    """The file a quoted include of src names: beside src first (as the
    compiler looks), then in the layers src may see."""
    here = os.path.normpath(os.path.join(os.path.dirname(src), name))
    if os.path.exists(os.path.join(root, here)):
        return here
    layer = src.split("/")[0]
    for d in [layer] + LAYERS[layer]:
        p = os.path.join(d, name)
        if os.path.exists(os.path.join(root, p)):
            return p
    return None


def module(path):
    """A module is a header and the files named after it: images/archive.h
    with archive-write.c, archive-read.c, archive-lazy.c and
    archive-internal.h."""
    base = os.path.splitext(path)[0]
    head, _, _ = os.path.basename(base).partition("-")
    prefix = os.path.join(os.path.dirname(base), head)
    if prefix != base and os.path.exists(os.path.join(root, prefix + ".h")):
        return prefix
    return base


errors = []
edges = {}
files = list(sources())
for src in files:
    layer = src.split("/")[0]
    with open(os.path.join(root, src), encoding="utf-8") as f:
        text = f.read()
    for kind, name in INCLUDE.findall(text):
        if kind == "<":
            if name.startswith("criu/") and layer != "criu-glue":
                errors.append(f"{src}: includes <{name}>: only criu-glue talks to libcriu")
            continue
        target = resolve(src, name)
        if target is None:
            errors.append(f'{src}: includes "{name}", which is not in its layer or below')
            continue
        tlayer = target.split("/")[0]
        if tlayer != layer and tlayer not in LAYERS[layer]:
            errors.append(f"{src}: includes {target}: {layer} may not use {tlayer}")
        tdir = os.path.dirname(target)
        if os.path.basename(target) in PRIVATE.get(tdir, ()) and os.path.dirname(src) != tdir:
            errors.append(f"{src}: includes {target}, private to {tdir}/")
        header_only = src.endswith(".h") and not any(
            module(other) == module(src) and other.endswith(".c") for other in files)
        if module(target) != module(src) and not header_only:
            edges.setdefault(module(src), set()).add(module(target))

# Circles among modules: a depth-first search for a back edge.
state = {}


def visit(m, path):
    state[m] = 1
    for n in sorted(edges.get(m, ())):
        if state.get(n) == 1:
            cycle = path[path.index(n):] + [n]
            errors.append("circle: " + " -> ".join(cycle))
        elif n not in state:
            visit(n, path + [n])
    state[m] = 2


for m in sorted(edges):
    if m not in state:
        visit(m, [m])

for e in errors:
    print(e)
sys.exit(1 if errors else 0)
