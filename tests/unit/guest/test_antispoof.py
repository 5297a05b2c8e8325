"""The guest's bridge port filter in its definition (plain Python: the XML the guest module writes)."""

from __future__ import annotations

from ansible_collections.kiosk.lxc.plugins.module_utils.domain.xmldef import etree
from ansible_collections.kiosk.lxc.plugins.module_utils.guest import antispoof

MAC = "52:54:00:12:34:56"
XML = (
    "<domain type='lxc'><name>g</name><devices>"
    f"<interface type='bridge'><mac address='{MAC}'/><source bridge='br0'/></interface>"
    "<interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br1'/></interface>"
    "</devices></domain>"
)


def mutated(xml: str, ip, port="kgabc") -> etree._Element:
    root = etree.fromstring(xml)
    antispoof.make_mutate(MAC, ip, port)(root)
    return root


def test_a_static_lease_binds_the_port_to_the_mac_and_the_address():
    root = mutated(XML, "10.0.3.20")
    ours, other = root.findall("devices/interface")
    assert antispoof.describe(ours) == {"filter": "clean-traffic", "parameters": {"IP": "10.0.3.20"}}
    assert [c.tag for c in ours] == ["mac", "source", "target", "filterref"]  # libvirt's own order
    assert ours.find("target").get("dev") == "kgabc"
    assert antispoof.describe(other) is None and other.find("target") is None  # not the guest's: left alone


def test_without_a_static_lease_the_mac_only():
    assert antispoof.describe(mutated(XML, None).find("devices/interface")) == {
        "filter": "no-mac-spoofing",
        "parameters": {},
    }


def test_a_stored_filter_and_port_are_replaced_not_added_to():
    once = etree.tostring(mutated(XML, "10.0.3.20"))
    twice = mutated(once.decode(), "10.0.3.21", "kgother")
    iface = twice.find("devices/interface")
    assert len(iface.findall("filterref")) == 1 and len(iface.findall("target")) == 1
    assert antispoof.describe(iface)["parameters"] == {"IP": "10.0.3.21"}
    assert iface.find("target").get("dev") == "kgother"
    # the same wish twice: the same XML (so a second run has nothing to change)
    assert etree.tostring(mutated(once.decode(), "10.0.3.20")) == once


def test_the_port_name_is_fixed_per_guest_and_fits_ifnamsiz():
    a, b = antispoof.port_name("kiosk1/player"), antispoof.port_name("kiosk1/player2")
    assert a == antispoof.port_name("kiosk1/player") and a != b
    assert len(a) <= 15 and a.startswith("kg") and a.isalnum()


def test_a_stored_definition_without_a_filter_is_told_apart_and_false_takes_it_off():
    assert not antispoof.has_filter(XML, MAC)
    filtered = etree.tostring(mutated(XML, "10.0.3.20")).decode()
    assert antispoof.has_filter(filtered, MAC) and not antispoof.has_filter(filtered, "52:54:00:00:00:01")
    root = etree.fromstring(filtered)
    antispoof.remove_mutate(MAC)(root)
    assert not antispoof.has_filter(etree.tostring(root).decode(), MAC)
