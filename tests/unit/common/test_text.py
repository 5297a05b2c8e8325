"""Control characters: escaped in lines, refused in module parameters."""

from __future__ import annotations

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common import text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError


def test_escape_makes_one_line_of_anything():
    assert text.escape("card\n0 [x]\r\t\x1b[2J\x7f\u2028") == "card\\n0 [x]\\r\\t\\x1b[2J\\x7f\\u2028"
    assert text.escape("KT USB Audio") == "KT USB Audio"


@pytest.mark.parametrize(
    ("params", "option"),
    [
        ({"name": "br0\n"}, "name"),
        ({"dhcp_hosts": [{"mac": "52:54:00:00:00:01", "name": "ok"}, {"name": "a\nb"}]}, "dhcp_hosts[1].name"),
        ({"packages": ["vim", "x\x00"]}, "packages[1]"),
        ({"metadata": {"role\n": "x"}}, "metadata"),
    ],
)
def test_check_params_names_the_option(params, option):
    with pytest.raises(KioskError) as err:
        text.check_params(params)
    assert err.value.msg.startswith(f"{option}: ")
    assert "\n" not in err.value.msg


def test_check_params_passes_clean_values_and_skipped_options():
    text.check_params({"name": "br0", "count": 3, "xml": "<domain>\n</domain>", "opt": None}, skip=("xml",))


def test_fullmatch_refuses_a_trailing_newline():
    with pytest.raises(KioskError, match=r"^user: 'kiosk\\n' is not a user name$"):
        text.fullmatch("user", "kiosk\n", r"[a-z_][a-z0-9_-]{0,31}", "is not a user name")
    assert text.fullmatch("user", "kiosk", r"[a-z_][a-z0-9_-]{0,31}", "is not a user name") == "kiosk"
