"""docs/architecture.py: the docs site's picture of who imports whom is the code's, and cannot go stale.

The script is run on the real plugins/ tree and on small trees written here; nothing is mocked.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("kiosk_docs_architecture", REPO / "docs" / "architecture.py")
architecture = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = architecture  # dataclasses look their module up by name
_spec.loader.exec_module(architecture)

MU = "ansible_collections.kiosk.lxc.plugins.module_utils"


def test_the_committed_picture_is_what_the_code_gives():
    committed = (REPO / "docs" / "docsite" / "rst" / "architecture.svg").read_text(encoding="utf-8")
    now = architecture.render(architecture.collect(REPO / "plugins"))
    assert committed == now, "docs/docsite/rst/architecture.svg is stale: run `make architecture` and commit it"


def test_the_picture_shows_the_packages_and_the_daemons_entry_points():
    """Read from the real tree: a package or host program that exists is in the picture, by name."""
    graph = architecture.collect(REPO / "plugins")
    on_disk = {p.name for p in (REPO / "plugins" / "module_utils").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert on_disk <= set(graph.packages)
    assert {"cgroup/hook", "hotplug/agent"} <= graph.programs  # the libvirt hook and the hotplug agent
    assert ("modules/lxc_domain", "domain") in graph.edges
    svg = architecture.render(graph)
    for package in on_disk:
        assert f">{package}</text>" in svg
    assert ">hook  main()</text>" in svg


def write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def small_tree(root: Path) -> Path:
    plugins = root / "plugins"
    write(plugins, "modules/thing.py", f"from {MU}.alpha import one\nfrom {MU}.base.errors import KioskError\n")
    write(plugins, "doc_fragments/frag.py", f"from {MU}.gamma import z\n")  # documentation, not code: no edge
    write(plugins, "filter/f.py", f"import {MU}.gamma.z\n")
    write(
        plugins,
        "module_utils/alpha/one.py",
        "from . import two\n"  # within the package: not drawn
        "from ..gamma import z\n"  # relative, to another package
        f"def later():\n    from {MU} import beta\n",  # lazy, naming the package itself
    )
    write(plugins, "module_utils/alpha/two.py", "def main():\n    pass\n")
    write(plugins, "module_utils/beta/b.py", f"from {MU}.base.errors import KioskError\n")
    write(plugins, "module_utils/gamma/z.py", "import os\n")
    write(plugins, "module_utils/base/errors.py", "class KioskError(Exception):\n    pass\n")
    return plugins


def test_every_kind_of_import_becomes_an_edge(tmp_path, monkeypatch):
    monkeypatch.setattr(architecture, "BASE_PACKAGE", "base")
    graph = architecture.collect(small_tree(tmp_path))
    assert graph.edges == {
        ("modules/thing", "alpha"),
        ("modules/thing", "base"),
        ("filter/f", "gamma"),
        ("alpha", "gamma"),
        ("alpha", "beta"),
        ("beta", "base"),
    }
    assert graph.plugins == ["filter/f", "modules/thing"]
    assert graph.programs == {"alpha/two"}
    # Columns follow the import chains: alpha -> beta -> base, so alpha is left of beta.
    boxes = {b.name: b for b in architecture.layout(graph)[0]}
    assert boxes["modules/thing"].x < boxes["alpha"].x < boxes["beta"].x


def test_a_new_import_makes_the_committed_picture_stale(tmp_path, capsys):
    plugins = small_tree(tmp_path)
    svg = tmp_path / "architecture.svg"
    assert architecture.main(["--plugins", str(plugins), "--output", str(svg)]) == 0
    assert architecture.main(["--plugins", str(plugins), "--output", str(svg), "--check"]) == 0
    first = svg.read_text(encoding="utf-8")
    assert architecture.render(architecture.collect(plugins)) == first  # the same code, the same bytes

    write(plugins, "module_utils/gamma/z.py", f"import os\nfrom {MU}.beta import b\n")
    assert architecture.main(["--plugins", str(plugins), "--output", str(svg), "--check"]) == 1
    assert "run `make architecture`" in capsys.readouterr().err
    assert svg.read_text(encoding="utf-8") == first  # --check writes nothing
    assert architecture.main(["--plugins", str(plugins), "--output", str(svg)]) == 0
    assert svg.read_text(encoding="utf-8") != first
    assert architecture.main(["--plugins", str(plugins), "--output", str(svg), "--check"]) == 0
