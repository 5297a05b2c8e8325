"""Hotplug in a kiosk VM: unload and reload a real ALSA card, and time the guest getting it back.

Runs ON the kiosk (the VM of molecule/hotplug, as root; standard library
only) where the hotplug agent runs and a libvirt LXC guest was given the
card by its sound_passthrough selector. No Ansible runs meanwhile. Each
cycle:

- unplug: the card's platform device is unbound from its driver (what a
  USB unplug does: the card disconnects while the guest's sound server
  still holds it open; the write returns once every open file is closed,
  which is the agent's `pactl unload-module` in the guest), then the
  module is removed (`rmmod`; it refuses while any file is open);
- plug: t0 = just before `modprobe <module>`; then
  (a) `open`: a probe process in the guest's cgroup first opens the card's
      control node as the guest sees it (/proc/<guest init>/root/dev/snd/
      controlC<n>, so the guest's /dev and the guest's device cgroup both
      decide), polled every 5 ms;
  (b) `pactl`: `pactl subscribe` in the guest reports a new card, and
      `pactl list cards` in the guest then names the card;
  and, to split (b): `agent` is when the agent's journal line for the
  attach was written (after its `pactl load-module` returned: the grant,
  the nodes and PulseAudio's own loading of the card are all in it); the
  journal's monotonic clock is the bench's. Before the cycles, `spawn` is
  what one `pactl info` in the guest costs (the way the agent runs it:
  nsenter + pactl), the floor under any command the agent runs there.

The guest must lose the card on unplug and get it back on plug:
- the probe: ENODEV at once (the kernel's disconnect), then ENOENT or EPERM
  (the agent removed the node it made in the guest, or denied it in the
  device cgroup; `revoke` is the time from the unplug), OK after the plug;
- a witness node made on the VM with the control node's numbers, opened
  from the guest's cgroup (only libvirt's BPF device program decides):
  EPERM after the unplug, OK after the plug;
- `pactl list cards` in the guest: the card gone, then listed again.
Every command in the guest runs in its cgroup and all its namespaces (a
shell writes itself into the cgroup of the guest's init, then
`nsenter -a`), as `--user` (root by default) with XDG_RUNTIME_DIR
/run/user/<uid>; `--start-pulseaudio` starts that user's PulseAudio there.

    python3 hotplug_vm.py --guest player --card Dummy --module snd-dummy --cycles 20 [--json out.json]

Prints one line per cycle and the median and max of each latency; exits 1
if any cycle failed (the reason is printed), so verify can assert on it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import statistics
import subprocess
import sys
import threading
import time

PROBE = r"""
import errno, os, sys, time
init, card, procs = sys.argv[1], sys.argv[2], sys.argv[3]
with open(procs, "w") as fh:
    fh.write(str(os.getpid()))
number, last = None, None
while True:
    try:
        number = os.readlink(f"/proc/asound/{card}").removeprefix("card")
    except OSError:
        pass  # the card is gone: keep probing the node it had in the guest
    try:
        fd = os.open(f"/proc/{init}/root/dev/snd/controlC{number}", os.O_RDONLY)
        os.close(fd)
        state = "OK"
    except OSError as exc:
        state = errno.errorcode.get(exc.errno, str(exc.errno))
    if state != last:
        print(f"{time.monotonic():.6f} {state}", flush=True)
        last = state
    time.sleep(0.005)
"""

# Opens a node made on the VM (not in the guest) from the guest's cgroup: only the device cgroup decides
# (EPERM: denied; ENXIO/ENODEV: allowed, no such device; OK: allowed and there).
WITNESS = r"""
import errno, os, sys
with open(sys.argv[2], "w") as fh:
    fh.write(str(os.getpid()))
try:
    os.close(os.open(sys.argv[1], os.O_RDONLY))
    print("OK")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, str(exc.errno)))
"""


class Lines:
    """A child process whose stdout lines are kept with the monotonic time they arrived."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cond.notify_all()

    def wait_for(self, pred, since: float, timeout: float) -> tuple[float, str] | None:
        """The first line at or after `since` for which pred(line) holds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, line in self.lines:
                    if t >= since and pred(t, line):
                        return t, line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(min(left, 0.1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Guest:
    def __init__(self, name: str, user: str):
        with open(f"/run/libvirt/lxc/{name}.xml", encoding="utf-8") as fh:
            m = re.search(r"<init pid='(\d+)'", fh.read())
        if not m:
            raise SystemExit(f"guest {name}: no init pid in libvirt's status file")
        self.init = int(m.group(1))
        with open(f"/proc/{self.init}/cgroup", encoding="ascii") as fh:
            rel = next(line.split(":", 2)[2].strip() for line in fh if line.startswith("0::"))
        self.procs = f"/sys/fs/cgroup{rel}/cgroup.procs"
        self.user = user
        self.uid = int(self.run(["id", "-u", user]).stdout.strip())

    def root_argv(self, argv: list[str]) -> list[str]:
        """argv in the guest's cgroup and namespaces, as the guest's root."""
        return ["sh", "-c", f'echo $$ >"{self.procs}" && exec nsenter -t {self.init} -a -- "$@"', "in-guest", *argv]

    def argv(self, argv: list[str]) -> list[str]:
        """argv in the guest's cgroup and namespaces, as the user, with its runtime directory."""
        prefix = self.root_argv([])
        if self.user == "root":
            return [*prefix, "env", "XDG_RUNTIME_DIR=/run/user/0", "HOME=/root", *argv]
        who = [f"--reuid={self.user}", f"--regid={self.user}", "--init-groups"]
        env = [f"XDG_RUNTIME_DIR=/run/user/{self.uid}", f"HOME=/home/{self.user}"]
        return [*prefix, "setpriv", *who, "env", *env, *argv]

    def run(self, argv: list[str], user: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        full = self.argv(argv) if user else self.root_argv(argv)
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)

    def card_names(self) -> list[str]:
        """alsa.card_name of every card the user's PulseAudio lists (None if pactl fails)."""
        proc = self.run(["pactl", "list", "cards"], user=True)
        if proc.returncode != 0:
            return None
        return re.findall(r'alsa\.card_name = "([^"]*)"', proc.stdout)


PARTS_RE = re.compile(
    r"(\d+) ms after the event \(queue (\d+), guests (\d+), cards (\d+), cgroup and nodes (\d+), sound server (\d+)\)"
)
PARTS = ("agent_total", "queue", "guests", "cards", "device", "server")


def agent_done(since: float, timeout: float) -> tuple[float, dict] | None:
    """The agent's first journal line after `since` saying it attached a card: (monotonic time, ms per part)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = subprocess.run(
            ["journalctl", "-b", "-o", "json", "--no-pager", "-t", "kiosk-lxc-hotplug", "-n", "20"],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in proc.stdout.splitlines():
            entry = json.loads(line)
            when = int(entry.get("__MONOTONIC_TIMESTAMP", 0)) / 1e6
            message = str(entry.get("MESSAGE", ""))
            if when >= since and message.startswith("attach "):
                m = PARTS_RE.search(message)
                return when, dict(zip(PARTS, map(int, m.groups()), strict=True)) if m else {}
        time.sleep(0.2)
    return None


def calibrate() -> float:
    """Seconds a fixed pure-Python loop takes: run on another machine, the ratio is the VM's slowdown."""
    t = time.perf_counter()
    sum(i * i for i in range(1_000_000))
    return time.perf_counter() - t


def spawn_cost(guest: Guest, times: int = 5) -> float:
    """Median seconds of one `pactl info` in the guest as the user (nsenter, setpriv, pactl)."""
    took = []
    for _attempt in range(times):
        t = time.monotonic()
        guest.run(["pactl", "info"], user=True)
        took.append(time.monotonic() - t)
    return statistics.median(took)


def control_dev(card: str) -> tuple[int, int]:
    """(major, minor) of the card's control node on the VM."""
    number = os.readlink(f"/proc/asound/{card}").removeprefix("card")
    with open(f"/sys/class/sound/controlC{number}/dev", encoding="ascii") as fh:
        major, minor = fh.read().strip().split(":")
    return int(major), int(minor)


def witness(guest: Guest, dev: tuple[int, int]) -> str:
    """What open() of a node with these numbers, made on the VM, gives from the guest's cgroup.

    The node is made in the VM's /dev (devtmpfs): /run and /tmp are nodev, where open() gives EACCES.
    """
    path = f"/dev/kiosk-hotplug-witness-{dev[0]}-{dev[1]}"
    if not os.path.exists(path):
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(*dev))
    proc = subprocess.run(
        [sys.executable, "-c", WITNESS, path, guest.procs], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or proc.stderr.strip()


def start_pulseaudio(guest: Guest) -> None:
    group = "root" if guest.user == "root" else guest.user
    guest.run(["install", "-d", "-m", "0700", "-o", guest.user, "-g", group, f"/run/user/{guest.uid}"])
    proc = guest.run(["pulseaudio", "--start", "--exit-idle-time=-1"], user=True)
    if proc.returncode != 0:
        raise SystemExit(f"pulseaudio --start in the guest failed: {proc.stdout}{proc.stderr}")


def sh(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip()}")


def unplug(card: str, module: str, timeout: float) -> None:
    """Disconnect the card from its driver, then remove the module.

    The unbind returns only once no file of the card is open any more (the
    kernel waits, uninterruptibly), so it runs in a child that is waited for
    with a timeout: if the guest's sound server never lets go, the cycle
    fails instead of hanging.
    """
    device = os.path.realpath(f"/sys/class/sound/{os.readlink(f'/proc/asound/{card}')}/device")
    driver = os.path.realpath(f"{device}/driver")
    child = subprocess.Popen(["sh", "-c", 'echo "$1" >"$2"', "unbind", os.path.basename(device), f"{driver}/unbind"])
    try:
        if child.wait(timeout) != 0:
            raise RuntimeError(f"unbinding {device} from {driver} failed")
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"unbinding {card} did not return in {timeout:.0f} s: a file stayed open") from None
    sh("rmmod", module)


def wait_listed(guest: Guest, card: str, listed: bool, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = guest.card_names()
        if names is not None and (card in names) == listed:
            return True
        time.sleep(0.2)
    return False


def cycle(guest: Guest, probe: Lines, events: Lines, args) -> dict:
    card, module, timeout = args.card, args.module, args.timeout
    out: dict = {}
    before = control_dev(card)
    t = time.monotonic()
    unplug(card, module, timeout)
    out["unplug_s"] = time.monotonic() - t
    # The kernel's disconnect gives ENODEV at once; EPERM or ENOENT is the agent's doing.
    lost = probe.wait_for(lambda _t, line: line.split()[1] in ("EPERM", "ENOENT"), t, timeout)
    if lost is None:
        return {**out, "error": f"the guest kept {card}'s control node and access to it after the unplug"}
    out["lost"] = lost[1].split()[1]
    out["revoke_s"] = float(lost[1].split()[0]) - t
    out["cgroup_after_unplug"] = witness(guest, before)
    if out["cgroup_after_unplug"] != "EPERM":
        return {**out, "error": f"the guest's device cgroup still allows {before} after the unplug"}
    if not wait_listed(guest, card, False, timeout):
        return {**out, "error": f"the guest's PulseAudio still lists {card} after the unplug"}
    time.sleep(0.5)  # let the agent settle: the plug must not race the unplug's actions
    t0 = time.monotonic()
    sh("modprobe", module)
    out["modprobe_s"] = time.monotonic() - t0
    got = probe.wait_for(lambda _t, line: line.endswith(" OK"), t0, timeout)
    if got is None:
        return {**out, "error": f"the guest never opened {card}'s control node after the modprobe"}
    out["open_s"] = float(got[1].split()[0]) - t0
    new = events.wait_for(lambda _t, line: "'new' on card" in line, t0, timeout)
    if new is None:
        return {**out, "error": "the guest's PulseAudio reported no new card after the modprobe"}
    out["pactl_s"] = new[0] - t0
    done = agent_done(t0, timeout)
    if done is not None:
        out["agent_s"] = done[0] - t0
        out["parts_ms"] = done[1]
    if not wait_listed(guest, card, True, timeout):
        return {**out, "error": f"the guest's PulseAudio does not list {card} after the modprobe"}
    out["cgroup_after_plug"] = witness(guest, control_dev(card))
    if out["cgroup_after_plug"] != "OK":
        return {**out, "error": f"the guest's device cgroup does not allow {card} after the modprobe"}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guest")
    parser.add_argument("--card", default="Dummy", help="ALSA card id (/proc/asound/<id>)")
    parser.add_argument("--module", default="snd-dummy")
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--user", default="root", help="whose PulseAudio in the guest")
    parser.add_argument("--start-pulseaudio", action="store_true")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds each step may take")
    parser.add_argument("--json", help="write every cycle's figures here")
    parser.add_argument("--calibrate", action="store_true", help="only time the fixed loop (best of 3), and exit")
    args = parser.parse_args(argv)
    if args.calibrate:
        print(f"{min(calibrate() for _attempt in range(3)) * 1000:.1f} ms")
        return 0

    if not args.guest:
        parser.error("--guest is required")
    guest = Guest(args.guest, args.user)
    if args.start_pulseaudio:
        start_pulseaudio(guest)
    if not wait_listed(guest, args.card, True, max(args.timeout, 120.0)):  # the user's server may still start
        print(f"FAIL before any cycle: the guest's PulseAudio does not list {args.card}: {guest.card_names()}")
        return 1
    loop = min(calibrate() for _attempt in range(3))
    print(f"calibration: the fixed loop (--calibrate) takes {loop * 1000:.1f} ms here", flush=True)
    spawn = spawn_cost(guest)
    print(f"spawn: one pactl info in the guest takes {spawn * 1000:.1f} ms (median of 5)", flush=True)
    probe = Lines([sys.executable, "-c", PROBE, str(guest.init), args.card, guest.procs])
    events = Lines(guest.argv(["pactl", "subscribe"]))
    results = []
    try:
        if probe.wait_for(lambda _t, line: line.endswith(" OK"), 0, args.timeout) is None:
            print(f"FAIL before any cycle: the guest cannot open {args.card}: {probe.lines}")
            return 1
        for i in range(args.cycles):
            try:
                res = cycle(guest, probe, events, args)
            except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
                res = {"error": str(exc)}
            if "error" in res:  # what the guest had then: its nodes, with owner and mode
                listing = ["ls", "-ln", f"/proc/{guest.init}/root/dev/snd"]
                nodes = subprocess.run(listing, capture_output=True, text=True, check=False)
                res["guest_dev_snd"] = nodes.stdout.strip().replace("\n", " | ")
            results.append(res)
            figures = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items())
            print(f"cycle {i + 1}: {figures}", flush=True)
            if "error" in res:
                break
    finally:
        probe.stop()
        events.stop()
        if not os.path.exists(f"/proc/asound/{args.card}"):  # a failed cycle leaves the card as it found it
            subprocess.run(["modprobe", args.module], check=False)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"calibration_s": loop, "spawn_s": spawn, "cycles": results}, fh, indent=1)
    ok = [r for r in results if "error" not in r]
    for key in ("open_s", "agent_s", "pactl_s", "modprobe_s", "unplug_s", "revoke_s"):
        ms = [r[key] * 1000 for r in ok]
        if ms:
            print(f"{key[:-2]:8s} median {statistics.median(ms):7.1f} ms  max {max(ms):7.1f} ms  ({len(ms)} cycles)")
    for part in PARTS:
        ms = [r["parts_ms"][part] for r in ok if part in r.get("parts_ms", {})]
        if ms:
            print(f"agent's {part:12s} median {statistics.median(ms):7.1f} ms  max {max(ms):7.1f} ms")
    failed = [r["error"] for r in results if "error" in r]
    if failed:
        print(f"FAIL: {failed[0]}")
        return 1
    print(f"PASS: {len(ok)} cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
