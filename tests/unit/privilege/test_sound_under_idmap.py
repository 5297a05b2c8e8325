"""sound_passthrough's plan in a guest with a user namespace: the hostdev nodes, no bind of /dev/snd."""

from __future__ import annotations

from ansible_collections.kiosk.lxc.plugins.module_utils.sound import plan
from lxml import etree

GUEST = """<domain type='lxc'><name>p</name>{idmap}<devices>
<filesystem type='mount'><source dir='/srv/p'/><target dir='/'/></filesystem></devices></domain>"""
IDMAP = ("<idmap><uid start='0' target='100000' count='65536'/>"
         "<gid start='0' target='100000' count='65536'/></idmap>")  # fmt: skip
CARD = {"nodes": [{"path": "/dev/snd/controlC1"}, {"path": "/dev/snd/pcmC1D0p"}]}


def _mutated(idmap: str, want):
    root = etree.fromstring(GUEST.format(idmap=idmap))
    plan.make_mutate(want)(root)
    return root


def _targets(root):
    return [f.find("target").get("dir") for f in root.findall("devices/filesystem")]


def test_under_idmap_the_card_nodes_come_only_from_hostdevs():
    want = plan.desired(cards=[CARD], shared_nodes=[{"path": "/dev/snd/timer"}], selectors=None)
    mapped, plain = _mutated(IDMAP, want), _mutated("", want)
    chars = ["/dev/snd/controlC1", "/dev/snd/pcmC1D0p", "/dev/snd/timer"]
    assert [c.text for c in mapped.findall("devices/hostdev/source/char")] == chars
    assert "/dev/snd" not in _targets(mapped) and "/dev/snd" in _targets(plain)
    assert _targets(mapped) == ["/", "/run", "/run/udev"]
    # A second pass changes nothing; the metadata does not claim the bind it left out.
    again = etree.tostring(mapped)
    plan.make_mutate(want)(mapped)
    assert etree.tostring(mapped) == again
    assert "/dev/snd" not in (plan.read_metadata(mapped) or {})["filesystems"]


def test_a_guest_that_gets_an_idmap_loses_the_bind_it_had():
    want = plan.desired(cards=[CARD], shared_nodes=[], selectors=None)
    root = _mutated("", want)
    root.insert(1, etree.fromstring(IDMAP))
    plan.make_mutate(want)(root)
    assert "/dev/snd" not in _targets(root)
