"""The hotplug lab: the real agent under umockdev, with cards that come and go.

Used by test_hotplug.py and bench/hotplug.py. umockdev's Testbed (through
GObject introspection) is what can *send* uevents; it needs python3-gi and
gir1.2-umockdev-1.0, which exist for Debian's /usr/bin/python3 and not in
the project's .venv. So the agent runs in a child: `umockdev-wrapper
/usr/bin/python3 -c DRIVER`, the same interpreter the host role runs the
agent with. In the child a testbed holds the onboard card 0 and the shared
timer/seq of tests/fixtures/umockdev/two_cards.umockdev; the agent's own
pyudev monitor and worker threads run for real (libvirt, cgroup files,
/proc/<init>/root). On "plug" the driver adds the recording's USB card 1
(seed 000's KT USB Audio) and sends its uevents, on "unplug" the remove
uevents, and answers with the event time and when the agent was done.

What is not real: the kernel never saw these cards. umockdev sends every
/sys path into the testbed, so the driver links the testbed's sys/fs/cgroup
to the real /sys/fs/cgroup: the cgroup writes are the real ones. The card nodes are
`mknod`-made (major 116, no driver) in the test's own directory, which
the agent is told with --dev-dir the way sound_passthrough is told
host_dev_dir.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import guest as guestlib
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug.guests import init_pid

REPO = Path(__file__).resolve().parents[2]
RECORDING = REPO / "tests" / "fixtures" / "umockdev" / "two_cards.umockdev"
SYSTEM_PYTHON = "/usr/bin/python3"
CARD1 = "/sys/devices/platform/xhci-hcd.0.auto/usb1/1-1/1-1:1.0/sound/card1"
# card 1's nodes (ALSA major 116) as in the recording, and the shared ones
CARD1_NODES = {"controlC1": 10, "pcmC1D0p": 9, "pcmC1D0c": 8}
CARD0_NODES = {"controlC0": 7, "hwC0D0": 5, "midiC0D0": 6, "pcmC0D0p": 4, "pcmC0D0c": 3}
SHARED_NODES = {"seq": 1, "timer": 33}

_spec = importlib.util.spec_from_file_location("umock", REPO / "tests" / "fixtures" / "umockdev" / "umock.py")
umock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(umock)


def split_recording() -> tuple[str, str]:
    """(the host without the USB card, the USB card's chain) from the two-card recording."""
    blocks = RECORDING.read_text(encoding="utf-8").strip().split("\n\n")
    # without N: lines: umockdev 0.17 keeps a removed device's /dev entry and aborts on its re-add;
    # udev still knows the nodes by their DEVNAME property
    usb = [
        "\n".join(ln for ln in b.splitlines() if not ln.startswith("N: "))
        for b in blocks
        if "/usb1/" in b.splitlines()[0]
    ]
    rest = [b for b in blocks if "/usb1/" not in b.splitlines()[0]]
    return "\n\n".join(rest) + "\n", "\n\n".join(usb) + "\n"


def make_fake_host(tmp_path: Path) -> dict:
    """The host's side: card 0 and the shared nodes exist; card 1 is not plugged yet."""
    for name, minor in {**CARD0_NODES, **SHARED_NODES}.items():
        guestlib.mknod_char(tmp_path / "dev" / "snd" / name, 116, minor, 0o660)
    (tmp_path / "run" / "udev" / "data").mkdir(parents=True)
    base, _plug = split_recording()
    recording = tmp_path / "card0.umockdev"
    recording.write_text(base, encoding="utf-8")
    return {"dev": tmp_path / "dev", "udev": tmp_path / "run" / "udev", "recording": recording, "tmp": tmp_path}


def plug_nodes(host, present: bool) -> None:
    """What the kernel's devtmpfs does on the host when card 1 comes or goes."""
    for name, minor in CARD1_NODES.items():
        path = host["dev"] / "snd" / name
        if present:
            guestlib.mknod_char(path, 116, minor, 0o660)
        elif path.exists():
            path.unlink()


def start_guests(conn, host, guests: dict) -> dict:
    """Running guests {name: (root, selector)} that sound_passthrough gave their selector
    with missing: ignore (no card yet), in one ansible-playbook run."""
    tasks = []
    for name, (root, selector) in guests.items():
        conn.defineXML(guestlib.domain_xml(name, root)).create()
        args = {
            "domain": name,
            "cards": [selector],
            "missing": "ignore",
            "host_dev_dir": str(host["dev"]),
            "host_udev_dir": str(host["udev"]),
            "udev_data_dir": str(host["tmp"] / "udev-data"),
            "shutdown_timeout": 1,
        }
        tasks.append({"kiosk.lxc.sound_passthrough": args})
    for result in umock.run_tasks(host["recording"], tasks):
        assert result["_status"] == "changed" and result["nodes"] == [], result
    doms = {name: conn.lookupByName(name) for name in guests}
    for name, dom in doms.items():
        assert dom.isActive()
        guestlib.wait_for_file(guests[name][0] / "out" / "probe.0")
    return doms


def witness(dom, minors: dict) -> None:
    """Nodes of the given numbers at /witness in the guest, made from the host (guests may not mknod)."""
    init = init_pid(dom.ID())
    for name, minor in minors.items():
        guestlib.mknod_char(Path(f"/proc/{init}/root/witness/{name}"), 116, minor, 0o666)


DRIVER = r"""
import json, os, sys, threading, time
sys.path.insert(0, sys.argv[1])
import gi
gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug.agent import Agent, make_logger

spec = json.loads(sys.argv[2])
tb = UMockdev.Testbed.new()
tb.add_from_string(spec["base"])
# umockdev sends every /sys path to the testbed; the device cgroup must stay the real one
os.makedirs(tb.get_root_dir() + "/sys/fs", exist_ok=True)
os.symlink("/sys/fs/cgroup", tb.get_root_dir() + "/sys/fs/cgroup")
agent = Agent(spec["uri"], dev_dir=spec["dev_dir"], logger=make_logger(spec["log_file"]), only=spec["only"])
observer = agent.monitor()
stop = threading.Event()
worker = threading.Thread(target=agent.work, args=(stop, spec["rescan"]), daemon=True)
worker.start()
card = spec["card"]
nodes = [card + "/" + n for n in spec["nodes"]]
# every device the plug adds, children first (the recording's order): the USB parents go too
chain = ["/sys" + line[3:] for line in spec["plug"].splitlines() if line.startswith("P: ")]


def settle(count):
    deadline = time.monotonic() + 10
    while agent.handled < count and time.monotonic() < deadline:
        time.sleep(0.002)
    return agent.handled >= count


def say(**what):
    print(json.dumps(what), flush=True)


say(ready=True)
for line in sys.stdin:
    cmd = line.strip()
    base = agent.handled
    if cmd in ("plug", "plug-add", "plug-init"):
        t = time.monotonic()
        sent = 0
        if cmd != "plug-init":
            tb.add_from_string(spec["plug"])  # umockdev sends an add for each device it adds
            sent += len(spec["nodes"]) + 1
        if cmd != "plug-add":
            # what udev's 78-sound-card.rules does once the card's nodes are set up: the card was
            # added without SOUND_INITIALIZED, the change brings it
            tb.set_property(card, "SOUND_INITIALIZED", "1")
            tb.uevent(card, "change")
            sent += 1
    elif cmd == "unplug":
        t = time.monotonic()
        for path in chain:
            tb.uevent(path, "remove")
        for path in chain:
            tb.remove_device(path)
        sent = len(nodes) + 1
    elif cmd == "quit":
        break
    else:
        say(error=cmd)
        continue
    ok = settle(base + sent)
    say(cmd=cmd, event=t, done=time.monotonic(), settled=ok, ledger=sorted(agent.ledger))
stop.set()
observer.send_stop()
"""


class Lab:
    """The agent in a umockdev child; plug() / unplug() return the driver's answer."""

    def __init__(
        self, dev_dir: Path, log_file: Path, only: list[str], uri: str = "lxc:///system", rescan: float = 30.0
    ):
        """only: the guest name patterns the agent may touch (this machine has other people's guests)."""
        if not only:
            raise ValueError("the lab agent must be limited to the test's own guests")
        base, plug = split_recording()
        # as udev has it on the card's add: SOUND_INITIALIZED comes with the change (the driver's plug)
        plug = "".join(line for line in plug.splitlines(keepends=True) if line.strip() != "E: SOUND_INITIALIZED=1")
        # umockdev's add sends events for the card's interface/usb parents too; count only sound ones
        spec = {
            "base": base,
            "plug": plug,
            "card": CARD1,
            "nodes": sorted(CARD1_NODES),
            "dev_dir": str(dev_dir),
            "log_file": str(log_file),
            "uri": uri,
            "rescan": rescan,
            "only": list(only),
        }
        self.log_file = log_file
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        self.proc = subprocess.Popen(
            [
                "umockdev-wrapper",
                SYSTEM_PYTHON,
                "-c",
                DRIVER,
                str(REPO / "build" / "collections"),
                json.dumps(spec),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._answer()

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the hotplug driver died: {self.proc.stderr.read()}\nlog: {self.log()}")
        return json.loads(line)

    def send(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def plug(self) -> dict:
        return self.send("plug")

    def unplug(self) -> dict:
        return self.send("unplug")

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8") if self.log_file.exists() else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, AssertionError, ValueError):
                self.send("quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
