"""The parts of hotplug.apply that need no guest: sound server commands, id maps, module listing."""

from __future__ import annotations

import os

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import apply

CARD = {"number": 1, "id": "Audio", "name": "KT USB Audio", "sys_path": "/sys/x/card1", "nodes": []}
LISTING = (
    "0\tmodule-device-restore\t\n"
    '7\tmodule-alsa-card\tdevice_id="0" name="pci-0000_00_1f.3" card_name="alsa_card.pci"\n'
    "12\tmodule-alsa-card\tdevice_id=1 name=kiosk-Audio card_name=alsa_card.kiosk-Audio tsched=yes\n"
    '15\tmodule-alsa-card\tdevice_id="11" name="x"\n'
)


def server(kind="pulseaudio", uid=1000):
    return {"kind": kind, "pid": 4242, "uid": uid, "gid": uid, "env": {"XDG_RUNTIME_DIR": f"/run/user/{uid}"}}


def test_pulseaudio_gets_the_card_module_loaded_by_card_number():
    (cmd,) = apply.server_commands(server(), "attach", CARD)
    assert cmd[:3] == ["pactl", "load-module", "module-alsa-card"]
    assert "device_id=1" in cmd and "card_name=alsa_card.kiosk-Audio" in cmd


def test_pulseaudio_unloads_only_the_modules_of_that_card():
    assert apply.server_commands(server(), "detach", CARD) == [["pactl", "list", "modules", "short"]]
    assert apply.alsa_card_modules(LISTING, 1) == ["12"]
    assert apply.alsa_card_modules(LISTING, 0) == ["7"]
    assert apply.alsa_card_modules(LISTING, 11) == ["15"]
    assert apply.alsa_card_modules(LISTING, 2) == []


def test_pipewire_and_the_fallbacks_restart_user_or_system_units():
    assert apply.server_commands(server("pipewire"), "attach", CARD) == [
        ["systemctl", "--user", "restart", "wireplumber.service"]
    ]
    assert apply.fallback_command(server()) == ["systemctl", "--user", "restart", "pulseaudio.service"]
    assert apply.fallback_command(server("pulseaudio", uid=0)) == ["systemctl", "restart", "pulseaudio.service"]


def test_commands_enter_the_servers_namespaces_as_its_user(tmp_path):
    """A server in our own user namespace: no -U, ids unchanged (a fake /proc says so)."""
    for pid in ("4242", str(os.getpid())):
        (tmp_path / pid / "ns").mkdir(parents=True)
        (tmp_path / pid / "ns" / "user").symlink_to("user:[4026531837]")
    argv = apply.in_guest(server(), ["pactl", "info"], proc=str(tmp_path))
    assert argv[:3] == ["nsenter", "-t", "4242"]
    assert "-U" not in argv and argv[argv.index("-S") + 1] == "1000"
    assert "XDG_RUNTIME_DIR=/run/user/1000" in argv and argv[-2:] == ["pactl", "info"]


def test_a_server_in_a_user_namespace_is_entered_with_its_ids_inside(tmp_path):
    me = str(os.getpid())
    for pid, ns in (("4242", "user:[1]"), (me, "user:[2]")):
        (tmp_path / pid / "ns").mkdir(parents=True)
        (tmp_path / pid / "ns" / "user").symlink_to(ns)
    (tmp_path / "4242" / "uid_map").write_text("0 100000 65536\n")
    (tmp_path / "4242" / "gid_map").write_text("0 100000 65536\n")
    srv = dict(server(), uid=101000, gid=101000)
    argv = apply.in_guest(srv, ["pactl", "info"], proc=str(tmp_path))
    assert "-U" in argv and argv[argv.index("-S") + 1] == "1000" and argv[argv.index("-G") + 1] == "1000"


def test_id_maps_both_ways(tmp_path):
    idmap = tmp_path / "gid_map"
    idmap.write_text("         0     100000      65536\n")
    assert apply.guestlib.map_id(29, str(idmap), inward=False) == 100029
    assert apply.guestlib.map_id(100029, str(idmap), inward=True) == 29
    assert apply.guestlib.map_id(29, str(tmp_path / "none"), inward=False) == 29


@pytest.fixture
def one_server(monkeypatch):
    """The guest runs one PulseAudio; commands are recorded as they would run inside it."""
    monkeypatch.setattr(apply, "in_guest", lambda srv, argv, proc="/proc": argv)
    return []


def test_a_refusing_server_is_restarted(one_server):
    ran = one_server

    def run(init, argv, timeout):
        ran.append(argv)
        return (1, "", "Connection refused") if argv[0] == "pactl" else (0, "", "")

    done = apply.tell_servers(1, "attach", CARD, [server()], run)
    assert ran[-1] == ["systemctl", "--user", "restart", "pulseaudio.service"]
    assert "failed: Connection refused" in done[0]


def test_detach_unloads_what_the_listing_shows(one_server):
    ran = one_server

    def run(init, argv, timeout):
        ran.append(argv)
        return (0, LISTING, "") if argv[:2] == ["pactl", "list"] else (0, "", "")

    apply.tell_servers(1, "detach", CARD, [server()], run)
    assert ran == [["pactl", "list", "modules", "short"], ["pactl", "unload-module", "12"]]


def test_servers_that_never_answer_cost_one_budget_in_all(one_server):
    """Each command takes all the time it is given: the guest's servers together get SERVER_BUDGET."""
    clock = {"now": 0.0}
    given = []

    def run(init, argv, timeout):
        given.append(timeout)
        clock["now"] += timeout
        return 124, "", "no answer"

    servers = [dict(server(), pid=4242 + i) for i in range(5)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(apply.time, "monotonic", lambda: clock["now"])
        done = apply.tell_servers(1, "attach", CARD, servers, run, budget=6.0)
    assert sum(given) == pytest.approx(6.0) and clock["now"] == pytest.approx(6.0), given
    assert done[-1] == "sound servers: 6 s spent, the rest not told"
