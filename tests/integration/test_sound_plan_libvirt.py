"""sound_passthrough's plan against the real libvirtd: the chosen card opens, the other does not.

Two fake cards: host-side `mknod` nodes (ALSA major 116, no driver behind
them) under the test's own dev directory, with the majors/minors of the
umockdev recording, so discovery runs for real (pyudev under umockdev) and
the plan's hostdev/filesystem entries point at real nodes libvirt can stat.
The test plays lxc_domain's part (read the inactive definition, mutate,
define), so it exercises exactly what the plan hands to edit_definition.
Inside the guest, open() on a node of the chosen card gives ENXIO (the
device cgroup let it through to the kernel), on the other card's EPERM.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import guest as guestlib
import libvirt
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import plan
from ansible_collections.kiosk.lxc.plugins.module_utils.sound.select import choose
from lxml import etree

_spec = importlib.util.spec_from_file_location(
    "umock", Path(__file__).resolve().parents[1] / "fixtures" / "umockdev" / "umock.py"
)
umock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(umock)

pytestmark = pytest.mark.skipif(not umock.available(), reason="umockdev-run is missing")

# guest path -> the probe index it gets
PROBES = [
    "/dev/snd/controlC1",  # chosen card
    "/dev/snd/pcmC1D0p",  # chosen card
    "/dev/snd/timer",  # shared, comes with any card
    "/dev/snd/controlC0",  # the other card
    "/dev/snd/pcmC0D0p",  # the other card
]


def _discover(dev_dir: Path) -> dict:
    return umock.run_json(
        umock.TWO_CARDS,
        "from ansible_collections.kiosk.lxc.plugins.module_utils.sound import discovery\n"
        f"print(json.dumps(discovery.discover(dev_dir={str(dev_dir)!r})))",
    )


def _fake_host(tmp_path: Path) -> tuple[Path, Path, dict]:
    """Nodes for both recorded cards under tmp/dev, and udev data under tmp/run/udev."""
    dev_dir = tmp_path / "dev"
    found = _discover(dev_dir)
    for node in [n for c in found["cards"] for n in c["nodes"]] + found["shared_nodes"]:
        guestlib.mknod_char(Path(node["path"]), node["major"], node["minor"], 0o660)
    udev_dir = tmp_path / "run" / "udev"
    (udev_dir / "data").mkdir(parents=True)
    (udev_dir / "data" / "+sound:card1").write_text("E:SOUND_INITIALIZED=1\n")
    return dev_dir, udev_dir, found


def _inactive(dom) -> etree._Element:
    return etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def test_chosen_card_opens_other_card_is_denied(libvirt_conn, guest_name, busybox_rootfs, tmp_path):
    dev_dir, udev_dir, found = _fake_host(tmp_path)
    chosen = choose(found["cards"], [{"usb": "0c76:161f"}], "fail")["cards"]
    want = plan.desired(
        cards=chosen,
        shared_nodes=found["shared_nodes"],
        selectors=[{"usb": "0c76:161f"}],
        dev_dir=str(dev_dir),
        udev_dir=str(udev_dir),
    )
    root = busybox_rootfs(
        "cat /run/udev/data/+sound:card1 > /out/udev 2>&1\n"
        "touch /run/guest-writable 2>/out/run.err && echo yes > /out/run\n" + guestlib.probe_loop(PROBES)
    )
    dom = libvirt_conn.defineXML(guestlib.domain_xml(guest_name, root))

    # lxc_domain's part: mutate the persistent definition, define it.
    xml = _inactive(dom)
    plan.make_mutate(want)(xml)
    dom = libvirt_conn.defineXML(etree.tostring(xml, encoding="unicode"))

    # libvirt's normalised definition is a fixed point of the plan: a second
    # run would change nothing (and restart nothing).
    normalised = _inactive(dom)
    again = etree.fromstring(etree.tostring(normalised))
    plan.make_mutate(want)(again)
    assert etree.tostring(again, encoding="unicode") == etree.tostring(normalised, encoding="unicode")

    dom.create()
    assert guestlib.wait_for_file(root / "out" / "started") == "1"
    for i in (0, 1, 2):
        got = guestlib.probe_result(root, i, "ENXIO")
        assert guestlib.ERRNO_TEXT["ENXIO"] in got, (PROBES[i], got)
    for i in (3, 4):
        got = guestlib.probe_result(root, i, "EPERM")
        assert guestlib.ERRNO_TEXT["EPERM"] in got, (PROBES[i], got)
    # udev data is visible read-only under the guest's own writable /run.
    assert guestlib.wait_for_file(root / "out" / "udev") == "E:SOUND_INITIALIZED=1"
    assert guestlib.wait_for_file(root / "out" / "run") == "yes"

    # state=absent: back to the definition the guest had before.
    dom.destroy()
    xml = _inactive(dom)
    plan.make_mutate(plan.desired(cards=[], shared_nodes=[], selectors=None, state="absent"))(xml)
    dom = libvirt_conn.defineXML(etree.tostring(xml, encoding="unicode"))
    assert not _inactive(dom).findall("devices/hostdev")
    assert [t.get("dir") for t in _inactive(dom).findall("devices/filesystem/target")] == ["/"]
    assert _inactive(dom).find("metadata") is None
