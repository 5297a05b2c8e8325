"""The one reader of bindep.txt, as the Makefile runs it (the system's python3) and as the host role's filter does."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common import bindep

TOP = pathlib.Path(__file__).resolve().parents[3]
SCRIPT = TOP / "plugins" / "module_utils" / "common" / "bindep.py"

TEXT = """\
# a comment
libvirt-daemon-system [platform:dpkg host test]
libvirt-dev [platform:dpkg test]   # trailing comment
python3-libvirt [platform:dpkg host]
testing-tool [platform:dpkg testing]

plain
"""


def test_a_profile_selects_its_lines_in_file_order_and_only_whole_words():
    assert bindep.packages(TEXT, "test") == ["libvirt-daemon-system", "libvirt-dev"]
    assert bindep.packages(TEXT, "host") == ["libvirt-daemon-system", "python3-libvirt"]
    assert bindep.packages(TEXT, "testing") == ["testing-tool"]


def test_a_line_it_cannot_read_is_named_by_number():
    with pytest.raises(ValueError, match=r"bindep.txt line 2: cannot read 'Bad Name \[test\]'"):
        bindep.packages("ok [test]\nBad Name [test]\n", "test")


def test_the_collections_own_list_names_what_a_bare_debian_lacks():
    text = (TOP / "bindep.txt").read_text()
    test = bindep.packages(text, "test")
    # python3 -m venv and libvirt-python's build need these on a bare Debian 12.
    assert {"python3-venv", "python3-dev", "libvirt-dev", "pkg-config", "gcc"} <= set(test)
    assert "python3-libvirt" in bindep.packages(text, "host")


def test_the_makefile_way_prints_one_name_a_line_and_refuses_an_empty_selection(tmp_path):
    """Run as the Makefile does: a separate python3 process with the file path, before any venv exists."""
    f = tmp_path / "bindep.txt"
    f.write_text(TEXT)
    out = subprocess.run([sys.executable, str(SCRIPT), "test", str(f)], capture_output=True, text=True, check=True)
    assert out.stdout == "libvirt-daemon-system\nlibvirt-dev\n"
    bad = subprocess.run([sys.executable, str(SCRIPT), "nothing", str(f)], capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert bad.stderr == "bindep.txt selects no package for profile 'nothing'\n"
