# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Draw who imports whom in plugins/: docs/docsite/rst/architecture.svg.

    python3 docs/architecture.py            # (or `make architecture`) rewrite the picture
    python3 docs/architecture.py --check    # exit 1 when the committed picture is not the code's

The picture is read from the code, never drawn by hand: every Python file under
plugins/ is parsed with `ast`, and each import of the collection's module_utils
(`ansible_collections.kiosk.lxc.plugins.module_utils.<package>...`, absolute or
relative, at any depth of the file) becomes an edge from the importing plugin
or module_utils package to the imported package. Imports inside one package are
not drawn. The layout is a pure function of that graph (columns by the longest
import chain below a package, order within a column by a fixed number of
barycentre sweeps, names breaking ties), so the same code always gives the same
bytes and tests/unit/docs/test_architecture.py can fail when the picture is stale.

Standard library only, so it runs with any python3, before the venv exists.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

COLLECTION = "ansible_collections.kiosk.lxc.plugins"
MODULE_UTILS = COLLECTION + ".module_utils"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "docs" / "docsite" / "rst" / "architecture.svg"
# Plugin directories whose files are data for ansible-doc, not code that runs.
NOT_CODE = ("doc_fragments",)
# The one package everything imports (errors, metadata namespaces): drawn, but quietly.
BASE_PACKAGE = "common"


@dataclass
class Graph:
    """Plugins ("modules/lxc_domain"), module_utils packages and their modules, and the edges between them."""

    plugins: list[str] = field(default_factory=list)
    packages: dict[str, list[str]] = field(default_factory=dict)  # package -> its modules
    programs: set[str] = field(default_factory=set)  # "cgroup/hook": modules with a top-level main()
    edges: set[tuple[str, str]] = field(default_factory=set)  # (plugin or package, package)


def _dotted(path: Path, plugins_dir: Path) -> list[str]:
    return [COLLECTION.rsplit(".", 1)[0], "plugins", *path.relative_to(plugins_dir).with_suffix("").parts]


def imported_packages(tree: ast.AST, dotted: list[str]) -> set[str]:
    """The module_utils packages a parsed file imports; `dotted` is the file's own module path."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's package upwards
                base = dotted[: len(dotted) - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from ...module_utils import cgroup` names the package in the alias.
            targets = [module + "." + alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            if target.startswith(MODULE_UTILS + "."):
                found.add(target[len(MODULE_UTILS) + 1 :].split(".")[0])
    return found


def _has_main(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)


def collect(plugins_dir: Path) -> Graph:
    """Read every Python file under plugins_dir into a Graph."""
    graph = Graph()
    utils = plugins_dir / "module_utils"
    for path in sorted(plugins_dir.rglob("*.py")):
        rel = path.relative_to(plugins_dir)
        if rel.name == "__init__.py" or rel.parts[0] in NOT_CODE or "__pycache__" in rel.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        dotted = _dotted(path, plugins_dir)
        if path.is_relative_to(utils):
            inner = path.relative_to(utils)
            if len(inner.parts) < 2:
                continue  # a file directly in module_utils belongs to no package
            source = inner.parts[0]
            graph.packages.setdefault(source, []).append("/".join(inner.with_suffix("").parts[1:]))
            if _has_main(tree):
                graph.programs.add(inner.with_suffix("").as_posix())
        else:
            source = rel.with_suffix("").as_posix()
            graph.plugins.append(source)
        for target in imported_packages(tree, dotted):
            if target != source:
                graph.edges.add((source, target))
    for target in sorted({t for _source, t in graph.edges}):
        graph.packages.setdefault(target, [])  # imported, but holds no file (yet): still drawn
    return graph


# ---------------------------------------------------------------- layout

CHAR_W = 6.7  # DejaVu Sans Mono advances 0.602 em: 6.62 px at 11 px (module lines)
HEAD_W = 7.5  # and 7.22 px at 12 px (bold names)
LINE_H = 15
PAD = 8
HEAD_H = 22
COL_GAP = 110
ROW_GAP = 16
MARGIN = 20
TOP = 58


@dataclass
class Box:
    name: str
    title: str
    lines: list[str]
    kind: str  # "plugin" or "package"
    col: int = 0
    x: float = 0
    y: float = 0
    w: float = 0
    h: float = 0


def _depths(graph: Graph) -> dict[str, int]:
    """Longest chain of package imports below each package (0: imports no other package)."""
    deps = {p: sorted(t for s, t in graph.edges if s == p) for p in graph.packages}
    depth: dict[str, int] = {}

    def visit(p: str, path: tuple[str, ...]) -> int:
        if p in depth:
            return depth[p]
        below = [visit(q, (*path, p)) + 1 for q in deps[p] if q not in path]  # a cycle is cut where it closes
        depth[p] = max(below, default=0)
        return depth[p]

    for p in sorted(graph.packages):
        visit(p, ())
    return depth


def drawn(graph: Graph) -> set[tuple[str, str]]:
    """The edges drawn as arrows: all but those into the base package, which its box counts instead."""
    return {(s, t) for s, t in graph.edges if t != BASE_PACKAGE}


def _base_lines(graph: Graph) -> list[str]:
    users = {s for s, t in graph.edges if t == BASE_PACKAGE}
    others = sorted(set(graph.packages) - users - {BASE_PACKAGE})
    plugins = len(users & set(graph.plugins))
    packages = "every other package" + (f" but {', '.join(others)}" if others else "")
    return ["imported by", packages, f"and {plugins} of {len(graph.plugins)} plugins"]


def layout(graph: Graph) -> tuple[list[Box], int, int]:
    """Boxes placed in columns (plugins, then packages by import depth), and the width and height of the whole."""
    depth = _depths(graph)
    top = max(depth.values(), default=0)
    boxes: dict[str, Box] = {}
    for name in graph.plugins:
        boxes[name] = Box(name, name, [], "plugin", col=0)
    for name, modules in graph.packages.items():
        lines = [m + ("  main()" if f"{name}/{m}" in graph.programs else "") for m in sorted(modules)]
        if name == BASE_PACKAGE:
            lines += ["", *_base_lines(graph)]
        boxes[name] = Box(name, name, lines, "package", col=1 + top - depth[name])
    base = boxes.get(BASE_PACKAGE)
    if base is not None and base.name not in {t for _source, t in drawn(graph)}:
        # No arrow goes to it: it stands under the last column instead of in a column of its own.
        base.col = max([b.col for b in boxes.values() if b is not base and b.kind == "package"], default=base.col)
    columns: dict[int, list[Box]] = {}
    for box in sorted(boxes.values(), key=lambda b: (b is base, b.name)):
        columns.setdefault(box.col, []).append(box)
    neighbours: dict[str, list[str]] = {b: [] for b in boxes}
    for s, t in sorted(drawn(graph)):
        neighbours[s].append(t)
        neighbours[t].append(s)
    order = sorted(columns)
    for _sweep in range(4):  # barycentre sweeps, right then left: each box near the boxes it is joined to
        for cols, side in ((order[1:], -1), (order[-2::-1], 1)):
            for col in cols:
                rank = {b.name: (i + 0.5) / len(c) for c in columns.values() for i, b in enumerate(c)}

                def centre(box: Box, rank=rank, side=side) -> tuple[float, str]:
                    near = [rank[n] for n in neighbours[box.name] if (boxes[n].col - box.col) * side > 0]
                    return (sum(near) / len(near) if near else rank[box.name], box.name)

                columns[col].sort(key=lambda box: (box is base, *centre(box)))
    for col in order:
        width = max(max([len(b.title) * HEAD_W] + [len(t) * CHAR_W for t in b.lines]) for b in columns[col])
        for box in columns[col]:
            box.w = round(max(width + 2 * PAD, 110))
            box.h = HEAD_H + len(box.lines) * LINE_H + (PAD if box.lines else 0)
    stacks = {col: sum(b.h for b in columns[col]) + ROW_GAP * (len(columns[col]) - 1) for col in order}
    height = max(stacks.values(), default=0)
    x = MARGIN
    for col in order:  # columns side by side, each centred on the tallest
        y = TOP + (height - stacks[col]) / 2
        for box in columns[col]:
            box.x, box.y = x, round(y)
            y += box.h + ROW_GAP
        x += columns[col][0].w + COL_GAP
    width = x - COL_GAP + MARGIN
    return [b for col in sorted(columns) for b in columns[col]], round(width), round(TOP + height + 70)


# ---------------------------------------------------------------- SVG

STYLE = """\
    .plugin { fill: #ffffff; stroke: #333; stroke-width: 1.2; }
    .package { fill: #fff6e0; stroke: #b07d12; stroke-width: 1.4; }
    .base { fill: #f3f6fa; stroke: #7a8ca3; stroke-width: 1.2; }
    .name { font-weight: bold; font-size: 12px; }
    .mod { font-size: 11px; fill: #333; }
    .title { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; font-weight: bold; font-size: 15px; }
    .note { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; font-size: 12px; fill: #222; }
    .use { stroke: #4a6a8a; stroke-width: 1.1; fill: none; opacity: 0.75; marker-end: url(#arrow); }
    .dep { stroke: #8a5a00; stroke-width: 1.6; fill: none; marker-end: url(#arrow); }"""


def _spread(box: Box, count: int, index: int) -> float:
    """The y of the index-th of count edges leaving or entering a box, spread over its height."""
    inner = box.h - 8
    return round(box.y + 4 + inner * (index + 1) / (count + 1), 1)


def render(graph: Graph) -> str:
    boxes, width, height = layout(graph)
    at = {b.name: b for b in boxes}
    out_edges: dict[str, list[tuple[str, str]]] = {}
    in_edges: dict[str, list[tuple[str, str]]] = {}
    for s, t in sorted(drawn(graph)):
        out_edges.setdefault(s, []).append((s, t))
        in_edges.setdefault(t, []).append((s, t))
    for lst in out_edges.values():
        lst.sort(key=lambda e: (at[e[1]].y, e[1]))
    for lst in in_edges.values():
        lst.sort(key=lambda e: (at[e[0]].y, at[e[0]].col, e[0]))
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<!-- Generated by docs/architecture.py from the imports in plugins/: do not edit by hand;"
        " run `make architecture`. -->",
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"',
        '     font-family="DejaVu Sans Mono, monospace" font-size="11">',
        "  <title>kiosk.lxc: plugins, module_utils packages, and who imports whom</title>",
        "  <defs>",
        '    <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6"'
        ' orient="auto-start-reverse">',
        '      <path d="M0,0 L10,5 L0,10 z" fill="#555"/>',
        "    </marker>",
        "    <style>",
        STYLE,
        "    </style>",
        "  </defs>",
        f'  <text class="title" x="{MARGIN}" y="28">Plugins and module_utils packages: an arrow is an import</text>',
        f'  <text class="note" x="{MARGIN}" y="46">Generated from the code by docs/architecture.py;'
        " packages further right are imported by those to their left.</text>",
    ]
    for s, t in sorted(drawn(graph), key=lambda e: (at[e[0]].col, at[e[0]].y, at[e[1]].y, e)):
        a, b = at[s], at[t]
        x1, y1 = a.x + a.w, _spread(a, len(out_edges[s]), out_edges[s].index((s, t)))
        x2, y2 = b.x, _spread(b, len(in_edges[t]), in_edges[t].index((s, t)))
        bend = max(40, (x2 - x1) / 2)
        cls = "use" if a.kind == "plugin" else "dep"
        lines.append(f'  <path class="{cls}" d="M {x1} {y1} C {x1 + bend} {y1}, {x2 - bend} {y2}, {x2 - 1} {y2}"/>')
    for box in boxes:
        cls = "plugin" if box.kind == "plugin" else ("base" if box.name == BASE_PACKAGE else "package")
        lines.append(f'  <rect class="{cls}" x="{box.x}" y="{box.y}" width="{box.w}" height="{box.h}" rx="4"/>')
        lines.append(f'  <text class="name" x="{box.x + PAD}" y="{box.y + 15}">{escape(box.title)}</text>')
        for i, text in enumerate(box.lines):
            y = box.y + HEAD_H + LINE_H * i + 10
            lines.append(f'  <text class="mod" x="{box.x + PAD + 6}" y="{y}">{escape(text)}</text>')
    legend_y = height - 40
    lines += [
        f'  <text class="note" x="{MARGIN}" y="{legend_y}">Left: the plugins (modules, inventory, filters).'
        " Boxes: module_utils packages and their modules; main(): also runs as a program of its own.</text>",
        f'  <text class="note" x="{MARGIN}" y="{legend_y + 18}">Blue: a plugin imports a package. Brown: a package'
        f" imports another. Imports of {BASE_PACKAGE} are counted in its box, imports within a package"
        " are not drawn.</text>",
        "</svg>",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--plugins", type=Path, default=REPO / "plugins", help="the plugins directory to read")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the SVG to write")
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 when the SVG is stale")
    args = parser.parse_args(argv)
    svg = render(collect(args.plugins))
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    if args.check:
        if current != svg:
            print(f"{args.output} is not what the code gives: run `make architecture`", file=sys.stderr)
            return 1
        return 0
    if current != svg:
        args.output.write_text(svg, encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
