"""Building, normalising and diffing LXC domain definitions, without libvirt.

STORED is what libvirt 9.0 on this platform returned from
XMLDesc(VIR_DOMAIN_XML_INACTIVE) after defining and once starting the guest
built from OPTIONS (captured by hand from the real libvirtd, with its defaults
and generated values); the integration tests check the same against libvirtd.
"""

from __future__ import annotations

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.namespaces import META_NS
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import spec as speclib
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import xmldef
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.manage import (
    Guest,
    plan_definition,
    plan_guest,
)
from lxml import etree

OPTIONS = {
    "name": "player1",
    "rootfs": "/",  # exists on every machine; the module only checks it is a directory
    "init": "/init",
    "init_args": ["a b", "c"],
    "memory": "64MiB",
    "capabilities": {"add": ["sys_nice"], "drop": ["CAP_SYS_MODULE"]},
    "filesystems": [
        {"type": "ram", "target": "/run", "size": "1MiB"},
        {"source": "/srv/media", "target": "/media", "readonly": True},
    ],
    "interfaces": [{"bridge": "kbr0"}],
    "hostdevs": ["/dev/snd/controlC0"],
    "privnet": True,
    "metadata": {"role": "player"},
}

STORED = f"""<domain type='lxc'>
  <name>player1</name>
  <uuid>10e2e3ff-84ec-4eef-a577-7581f68fef28</uuid>
  <metadata>
    <k:m xmlns:k="http://example.org/other">
      <a>1</a>
    </k:m>
    <kiosk:metadata xmlns:kiosk="{META_NS}">
      <kiosk:item key="role">player</kiosk:item>
    </kiosk:metadata>
  </metadata>
  <memory unit='KiB'>65536</memory>
  <currentMemory unit='KiB'>65536</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64'>exe</type>
    <init>/init</init>
    <initarg>a b</initarg>
    <initarg>c</initarg>
  </os>
  <features>
    <privnet/>
    <capabilities policy='default'>
      <sys_module state='off'/>
      <sys_nice state='on'/>
    </capabilities>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/lib/libvirt/libvirt_lxc</emulator>
    <filesystem type='mount' accessmode='passthrough'>
      <source dir='/'/>
      <target dir='/'/>
    </filesystem>
    <filesystem type='ram' accessmode='passthrough'>
      <source usage='1024' units='KiB'/>
      <target dir='/run'/>
    </filesystem>
    <filesystem type='mount' accessmode='passthrough'>
      <source dir='/srv/media'/>
      <target dir='/media'/>
      <readonly/>
    </filesystem>
    <interface type='bridge'>
      <mac address='52:54:00:91:a5:be'/>
      <source bridge='kbr0'/>
    </interface>
    <console type='pty'>
      <target type='lxc' port='0'/>
    </console>
    <hostdev mode='capabilities' type='misc'>
      <source>
        <char>/dev/snd/controlC0</char>
      </source>
    </hostdev>
  </devices>
</domain>
"""


def stored_guest(xml: str = STORED) -> Guest:
    return Guest(name="player1", dom=object(), xml=xml, state="stopped", autostart=False)


def plan(options: dict, xml: str | None = STORED):
    spec = speclib.validate(options)
    guest = stored_guest(xml) if xml else Guest(name=spec.name)
    return plan_definition(guest, speclib.mutator(spec))


def test_same_options_as_stored_plan_no_define():
    define_xml, before, after, changes = plan(OPTIONS)
    assert changes == []
    assert define_xml is None
    assert before == after


def test_omitted_options_keep_what_is_stored():
    define_xml, _before, _after, changes = plan({"name": "player1"})
    assert (define_xml, changes) == (None, [])


def test_new_guest_gets_defaults_and_escaped_values():
    value = "</kiosk:item><evil/>&'\""
    define_xml, before, _after, changes = plan({"name": "player1", "rootfs": "/", "metadata": {"x": value}}, xml=None)
    assert before == "" and changes == ["(new guest)"]
    root = etree.fromstring(define_xml)
    assert root.get("type") == "lxc"
    assert root.findtext("os/init") == speclib.NEW_GUEST_INIT
    assert root.findtext("memory") == str(512 * 1024)
    assert root.find("devices/console").get("type") == "pty"
    # The value arrives as text, not as markup.
    assert root.find(f"metadata/{{{META_NS}}}metadata/{{{META_NS}}}item").text == value
    assert root.find(".//evil") is None


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"memory": "128MiB"}, ["memory", "currentMemory"]),
        ({"memory": 64}, []),
        ({"memory": "65536KiB"}, []),
        ({"vcpu": 2}, ["vcpu"]),
        ({"init_args": ["a b"]}, ["os/initarg[2] (removed)"]),
        # moved to another bridge, the interface keeps its MAC
        ({"interfaces": [{"bridge": "kbr1"}]}, ["devices/interface/source@bridge"]),
        (
            {"interfaces": [{"bridge": "kbr0"}, {"network": "n"}]},
            ["devices/interface[2] (added)"],
        ),
        (
            {"interfaces": [{"bridge": "kbr0", "mac": "52:54:00:00:00:01"}]},
            ["devices/interface/mac@address"],
        ),
        ({"hostdevs": []}, ["devices/hostdev (removed)"]),
        ({"privnet": False}, ["features/privnet (removed)"]),
        (
            {
                "idmap": {
                    "uid": {"start": 0, "target": 100000, "count": 65536},
                    "gid": {"start": 0, "target": 100000, "count": 65536},
                }
            },
            ["idmap (added)"],
        ),
        (
            {"capabilities": {"policy": "deny"}},
            [
                "features/capabilities@policy",
                "features/capabilities/sys_module (removed)",
                "features/capabilities/sys_nice (removed)",
            ],
        ),
        ({"metadata": {"role": "spare"}}, ["metadata/kiosk:metadata/kiosk:item"]),
        (
            {"filesystems": [{"type": "ram", "target": "/run", "size": "2MiB"}]},
            [
                "devices/filesystem[2]/source@usage",
                "devices/filesystem[3] (removed)",
            ],
        ),
    ],
)
def test_one_changed_option_is_the_one_changed_field(options, expected):
    define_xml, _before, _after, changes = plan({"name": "player1", **options})
    assert changes == expected
    assert (define_xml is not None) == bool(expected)


def test_redefine_keeps_uuid_generated_mac_and_libvirt_fill_ins():
    define_xml, *_rest = plan({"name": "player1", "memory": "128MiB"})
    root = etree.fromstring(define_xml)
    assert root.findtext("uuid") == "10e2e3ff-84ec-4eef-a577-7581f68fef28"
    assert root.find("devices/interface/mac").get("address") == "52:54:00:91:a5:be"
    assert root.findtext("devices/emulator") == "/usr/lib/libvirt/libvirt_lxc"
    assert root.findtext("resource/partition") == "/machine"


def test_foreign_metadata_survives_options_and_xml_mode():
    other = etree.fromstring(STORED).find("metadata/{http://example.org/other}m")
    for options in ({"metadata": {}}, {"xml": "<domain type='lxc'><name>player1</name></domain>"}):
        define_xml, *_rest = plan({"name": "player1", **options})
        root = etree.fromstring(define_xml)
        kept = root.find("metadata/{http://example.org/other}m")
        assert etree.tostring(kept, method="c14n") == etree.tostring(other, method="c14n")
        assert root.find(f"metadata/{{{META_NS}}}metadata") is None


def test_xml_mode_hand_written_equivalent_is_no_change():
    hand = (
        """<domain type='lxc'>
      <name>player1</name>
      <memory unit='MiB'>64</memory>
      <metadata><kiosk:metadata xmlns:kiosk="META_NS"><kiosk:item key="role">player</kiosk:item>
      </kiosk:metadata></metadata>
      <os><type>exe</type><init>/init</init><initarg>a b</initarg><initarg>c</initarg></os>
      <features><capabilities><sys_nice state='on'/><sys_module state='off'/></capabilities>
        <privnet/></features>
      <devices>
        <console type='pty'/>
        <hostdev mode='capabilities' type='misc'><source><char>/dev/snd/controlC0</char></source>
        </hostdev>
        <interface type='bridge'><source bridge='kbr0'/></interface>
        <filesystem type='mount'><source dir='/'/><target dir='/'/></filesystem>
        <filesystem type='ram'><source usage='1048576' units='bytes'/><target dir='/run'/>
        </filesystem>
        <filesystem><source dir='/srv/media'/><target dir='/media'/><readonly/></filesystem>
      </devices>
    </domain>"""
    ).replace("META_NS", META_NS)
    _define, _before, _after, changes = plan({"name": "player1", "xml": hand})
    assert changes == []
    _define, _before, _after, changes = plan(
        {"name": "player1", "xml": hand.replace("<memory unit='MiB'>64", "<memory unit='GiB'>1")}
    )
    assert changes == ["memory", "currentMemory"]


@pytest.mark.parametrize(
    ("value", "unit", "kib"),
    [("64", "MiB", 65536), ("1000", None, 1000), ("1000000", "b", 977), ("64", "MB", 62500), ("1", "G", 1048576)],
)
def test_to_kib_rounds_up_like_libvirt(value, unit, kib):
    assert xmldef.to_kib(value, unit) == kib


def test_diff_fields_names_added_and_removed_elements():
    a = etree.fromstring("<d><x a='1'>t</x><y/><y/></d>")
    b = etree.fromstring("<d><x a='2'>u</x><y/><z/></d>")
    assert xmldef.diff_fields(a, b) == ["x@a", "x", "y[2] (removed)", "z (added)"]


def test_inherit_matches_macs_by_what_the_interface_connects_to():
    current = etree.fromstring(
        "<domain><devices>"
        "<interface type='bridge'><mac address='52:54:00:00:00:0a'/><source bridge='a'/></interface>"
        "<interface type='network'><mac address='52:54:00:00:00:0b'/><source network='n'/>"
        "</interface></devices></domain>"
    )
    desired = etree.fromstring(
        "<domain><devices><interface type='network'><source network='n'/></interface>"
        "<interface type='bridge'><source bridge='new'/></interface></devices></domain>"
    )
    xmldef.inherit(desired, current)
    macs = [el.find("mac") for el in desired.findall("devices/interface")]
    assert macs[0].get("address") == "52:54:00:00:00:0b"
    assert macs[1] is None  # a new bridge: libvirt generates one


def test_describe_reads_the_user_fields():
    info = xmldef.describe(xmldef.normalise(etree.fromstring(STORED)))
    assert info["memory"] == "64MiB" and info["memory_kib"] == 65536
    assert info["capabilities"] == {"policy": "default", "add": ["sys_nice"], "drop": ["sys_module"]}
    assert info["interfaces"] == [{"type": "bridge", "source": "kbr0", "mac": "52:54:00:91:a5:be"}]
    assert [m["target"] for m in info["mounts"]] == ["/", "/run", "/media"]
    assert info["mounts"][1]["size"] == "1MiB"
    assert info["metadata"] == {"role": "player"}
    assert info["hostdevs"] == ["/dev/snd/controlC0"]


def test_malformed_xml_is_one_sentence_naming_the_option():
    with pytest.raises(KioskError, match=r"^Guest 'player1': xml is not well-formed XML"):
        plan({"name": "player1", "xml": "<domain type='lxc'><name>player1</name>"})


# What libvirt shows for the running guest: STORED plus runtime-only parts.
LIVE = (
    STORED.replace("<domain type='lxc'>", "<domain type='lxc' id='20481'>")
    .replace("<source bridge='kbr0'/>", "<source bridge='kbr0'/><target dev='vnet2'/><guest dev='eth0'/>")
    .replace("<console type='pty'>", "<console type='pty' tty='/dev/pts/0'><source path='/dev/pts/0'/>")
    .replace("<target type='lxc' port='0'/>", "<target type='lxc' port='0'/><alias name='console0'/>")
)


def running_guest(live: str = LIVE) -> Guest:
    return Guest(name="player1", dom=object(), xml=STORED, live_xml=live, state="running")


@pytest.mark.parametrize(
    ("options", "restart", "actions", "pending"),
    [
        ({}, "on_change", [], False),  # runtime-only parts of the live XML are no change
        ({"memory": 128}, "on_change", ["define", "restart"], False),
        ({"memory": 128}, "never", ["define"], True),
    ],
)
def test_running_guest_restart_policy(options, restart, actions, pending):
    spec = speclib.validate({"name": "player1", **options})
    plan = plan_guest(running_guest(), speclib.mutator(spec), state="running", restart=restart,
                      autostart=None)  # fmt: skip
    assert (plan.actions, plan.restart_pending) == (actions, pending)


def test_running_an_older_definition_is_a_pending_restart():
    older = LIVE.replace("<memory unit='KiB'>65536", "<memory unit='KiB'>32768")
    spec = speclib.validate({"name": "player1"})
    never = plan_guest(running_guest(older), speclib.mutator(spec), state=None, restart="never",
                       autostart=None)  # fmt: skip
    assert (never.actions, never.restart_pending) == ([], True)
    on_change = plan_guest(running_guest(older), speclib.mutator(spec), state=None,
                           restart="on_change", autostart=None)  # fmt: skip
    assert on_change.actions == ["restart"]


# ------------------------------------------------------------------ the keys only kiosk.lxc.guest writes
GUEST_STORED = STORED.replace(
    '<kiosk:item key="role">player</kiosk:item>',
    '<kiosk:item key="kiosk">kiosk1</kiosk:item><kiosk:item key="profile">confined</kiosk:item>'
    '<kiosk:item key="role">player</kiosk:item>',
)


def _items(define_xml: str) -> dict:
    return xmldef.metadata_items(etree.fromstring(define_xml))


@pytest.mark.parametrize("key", ["kiosk", "profile"])
def test_lxc_domain_refuses_the_keys_kiosk_lxc_guest_records(key):
    """A domain lxc_domain defines is never one prune may remove, nor given a profile by it."""
    with pytest.raises(KioskError) as err:
        speclib.validate({"name": "player1", "rootfs": "/", "metadata": {"role": "x", key: "kiosk1"}})
    assert f"metadata.{key} is reserved" in err.value.msg and "\n" not in err.value.msg
    xml = f"""<domain type='lxc'><name>player1</name><metadata><kiosk:metadata xmlns:kiosk="{META_NS}">
      <kiosk:item key="role">x</kiosk:item><kiosk:item key="{key}">kiosk1</kiosk:item>
      </kiosk:metadata></metadata></domain>"""
    with pytest.raises(KioskError) as err:
        speclib.validate({"name": "player1", "xml": xml})
    assert f"xml sets the metadata key '{key}'" in err.value.msg and "\n" not in err.value.msg


@pytest.mark.parametrize(
    "options",
    [{"metadata": {"role": "spare"}}, {"metadata": {}}, {"xml": "<domain type='lxc'><name>player1</name></domain>"}],
)
def test_lxc_domain_keeps_a_guests_kiosk_and_profile_when_it_replaces_its_metadata(options):
    """A guest of kiosk.lxc.guest is not hidden from its prune by lxc_domain's metadata or xml."""
    define_xml, *_rest = plan({"name": "player1", **options}, xml=GUEST_STORED)
    items = _items(define_xml)
    assert {k: items.get(k) for k in ("kiosk", "profile")} == {"kiosk": "kiosk1", "profile": "confined"}
    assert items.get("role") == options.get("metadata", {}).get("role")


def test_kiosk_lxc_guest_sets_its_keys():
    spec = speclib.validate({"name": "player1", "metadata": {"kiosk": "kiosk2"}}, guest_keys=True)
    define_xml, *_rest = plan_definition(stored_guest(GUEST_STORED), speclib.mutator(spec))
    assert _items(define_xml) == {"kiosk": "kiosk2"}
