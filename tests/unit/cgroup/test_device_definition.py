"""cgroup_device's stored rules go into a guest's definition through domain.manage, the one writer.

No libvirt here: the guest is what read_guest() returns for a stored
definition (the XML libvirt 9.0 gave back for a guest that also has another
module's and a foreign tool's metadata). tests/integration/test_cgroup_device.py
checks the same against the real libvirtd and the real hook.
"""

from __future__ import annotations

import re
from pathlib import Path

from agent_host import hook_host
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import device, persist, rules
from ansible_collections.kiosk.lxc.plugins.module_utils.common.namespaces import DEVICES_NS, META_NS
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import manage, xmldef

MAJORS = {"char": {"alsa": [116]}, "block": {}}

STORED = f"""<domain type='lxc'>
  <name>player1</name>
  <uuid>10e2e3ff-84ec-4eef-a577-7581f68fef28</uuid>
  <metadata>
    <x:keep xmlns:x="urn:someone-else">player1</x:keep>
    <kiosk:metadata xmlns:kiosk="{META_NS}">
      <kiosk:item key="kiosk">k1</kiosk:item>
    </kiosk:metadata>
  </metadata>
  <memory unit='KiB'>65536</memory>
  <os><type arch='x86_64'>exe</type><init>/sbin/init</init></os>
  <devices>
    <emulator>/usr/lib/libvirt/libvirt_lxc</emulator>
    <filesystem type='mount' accessmode='passthrough'><source dir='/srv/p1'/><target dir='/'/></filesystem>
  </devices>
</domain>
"""
# The same guest running an older definition: another module's change waits for a restart.
LIVE = STORED.replace("<domain type='lxc'>", "<domain type='lxc' id='4242'>").replace("65536", "32768")


def running(xml: str = STORED) -> manage.Guest:
    return manage.Guest(name="player1", dom=object(), xml=xml, live_xml=LIVE, state="running")


def stored_specs(xml: str) -> list[str]:
    specs, problems = persist.specs_from_domain_xml(xml)
    assert problems == []
    return [str(s) for s in specs]


def test_storing_rules_changes_only_our_metadata_and_never_restarts(tmp_path):
    want = device.desired({"domain": "player1", "rules": ["c alsa:* rw"], "state": "present"}, MAJORS)
    cur = device.Current(guest=running(), stored=[])
    result = device.plan(want, cur, hook_host(tmp_path), MAJORS)

    edit = result["definition"]
    assert edit.actions == ["define"], "a running guest keeps running: its cgroup has the rules already"
    assert edit.changes == ["metadata/kioskdev:devices (added)"]
    assert stored_specs(edit.define_xml) == ["c alsa:* rw"], "the hook reads back what was stored"
    after = xmldef.parse(edit.define_xml)
    assert after.find("metadata/{urn:someone-else}keep").text == "player1"
    assert after.find(f"metadata/{{{META_NS}}}metadata/{{{META_NS}}}item").text == "k1"
    assert "store 1 device rule(s) in guest 'player1' metadata" in result["actions"]
    assert result["changed"] is True


def test_the_same_rules_again_write_nothing(tmp_path):
    stored = [rules.parse_spec("c alsa:* rw")]
    xml = manage.plan_edit(running(), device.rules_mutate(stored)).define_xml
    want = device.desired({"domain": "player1", "rules": ["c 116:* r"], "state": "present"}, MAJORS)
    cur = device.Current(guest=running(xml), stored=device._stored(running(xml)))
    assert [str(s) for s in cur.stored] == ["c alsa:* rw"]
    result = device.plan(want, cur, hook_host(tmp_path), MAJORS)
    assert result["definition"] is None
    assert not any("metadata" in a for a in result["actions"])


def test_taking_the_last_rule_away_removes_our_element_and_keeps_the_others():
    xml = manage.plan_edit(running(), device.rules_mutate([rules.parse_spec("c 116:3 rw")])).define_xml
    assert DEVICES_NS in xml
    edit = manage.plan_edit(running(xml), device.rules_mutate([]), restart="never")
    assert edit.changes == ["metadata/kioskdev:devices (removed)"]
    assert DEVICES_NS not in edit.define_xml
    assert "urn:someone-else" in edit.define_xml and META_NS in edit.define_xml
    bare = STORED.replace(STORED[STORED.index("  <metadata>") : STORED.index("  <memory")], "")
    alone = manage.plan_edit(running(bare), device.rules_mutate([rules.parse_spec("c 116:3 rw")]))
    gone = manage.plan_edit(running(alone.define_xml), device.rules_mutate([]))
    assert xmldef.parse(gone.define_xml).find("metadata") is None, "a <metadata> left empty goes"


def test_domain_manage_is_the_one_writer_of_a_guests_definition():
    """#17: every part of a definition is a mutator through domain.manage; nothing else defines or sets metadata."""
    plugins = Path(__file__).resolve().parents[3] / "plugins"
    writes = re.compile(r"\.(defineXML|setMetadata|defineXMLFlags)\(")
    writers = sorted(
        str(path.relative_to(plugins)) for path in plugins.rglob("*.py") if writes.search(path.read_text("utf-8"))
    )
    assert writers == ["module_utils/domain/manage.py"]
