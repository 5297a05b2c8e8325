"""Stored rules in <metadata>, and the libvirt hook's never-fail contract (no root, no libvirtd)."""

from __future__ import annotations

import io

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import hook, persist, rules
from ansible_collections.kiosk.lxc.plugins.module_utils.common.namespaces import DEVICES_NS

MAJORS = {"char": {"alsa": [116], "input": [13]}, "block": {}}


def spec(text):
    return rules.parse_spec(text)


def domain_xml(metadata: str, dom_id: str | None = "4242") -> str:
    ident = f" id='{dom_id}'" if dom_id else ""
    return f"<domain type='lxc'{ident}><name>g</name><metadata>{metadata}</metadata></domain>"


def stored(*rule_xml: str) -> str:
    return f"<kioskdev:devices xmlns:kioskdev='{DEVICES_NS}'>{''.join(rule_xml)}</kioskdev:devices>"


def test_metadata_round_trip_keeps_names():
    specs = [spec("c alsa:* rw"), spec("c 13:64 r")]
    text = persist.metadata_xml(specs)
    assert persist.specs_from_metadata(text) == (specs, [])
    assert persist.metadata_xml([]) is None


def test_rules_are_read_from_the_domain_xml_libvirt_gives_the_hook():
    xml = domain_xml(
        stored(
            "<kioskdev:rule type='c' major='alsa' minor='*' access='rw'/>",
            "<kioskdev:rule type='q' major='1' minor='1' access='r'/>",
        )
        + "<other:x xmlns:other='urn:other'><rule type='c' major='1' minor='1' access='r'/></other:x>"
    )
    specs, problems = persist.specs_from_domain_xml(xml)
    assert specs == [spec("c alsa:* rw")]  # another namespace's <rule> is not ours
    assert len(problems) == 1
    assert "device type 'q' is unknown" in problems[0]


def test_stored_rules_merge_by_resolved_major():
    before = [spec("c alsa:* r")]
    after = persist.stored_present(before, [spec("c 116:* w"), spec("c input:* rw")], MAJORS)
    assert [str(s) for s in after] == ["c alsa:* rw", "c input:* rw"]
    assert persist.stored_present(after, [spec("c alsa:* rw")], MAJORS) == after
    gone = persist.stored_absent(after, [spec("c 116:* rwm")], MAJORS)
    assert [str(s) for s in gone] == ["c input:* rw"]
    assert persist.stored_absent(gone, [spec("c input:* w")], MAJORS) == [spec("c input:* r")]


@pytest.mark.parametrize(
    ("argv", "stdin"),
    [
        (["lxc", "g", "started", "begin", "-"], "<not xml"),
        (
            ["lxc", "g", "started", "begin", "-"],
            domain_xml(stored("<kioskdev:rule type='c' major='nosuch' minor='*' access='rw'/>")),
        ),
        (
            ["lxc", "g", "started", "begin", "-"],
            domain_xml(stored("<kioskdev:rule type='c' major='1' minor='3' access='rw'/>"), None),
        ),
        (
            ["lxc", "g", "started", "begin", "-"],
            domain_xml(stored("<kioskdev:rule type='c' major='1' minor='3' access='rw'/>"), "999999999"),
        ),
        (["lxc"], ""),
    ],
)
def test_hook_never_fails_a_guest_start_and_logs_why(tmp_path, argv, stdin):
    log = tmp_path / "hook.log"
    assert hook.main(argv, io.StringIO(stdin), log_file=str(log)) == 0
    if len(argv) > 2:
        assert "guest g:" in log.read_text()


def test_hook_ignores_other_operations_without_reading_stdin(tmp_path):
    class Boom(io.StringIO):
        def read(self, *a):
            raise AssertionError("stdin read for a stop")

    log = tmp_path / "hook.log"
    for op in (["lxc", "g", "prepare", "begin", "-"], ["lxc", "g", "stopped", "end", "-"]):
        assert hook.main(op, Boom(), log_file=str(log)) == 0
    assert not log.exists()
