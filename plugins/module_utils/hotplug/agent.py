# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""kiosk-lxc-hotplug: the host's agent that hands hot-plugged sound cards to running guests.

A pyudev monitor on subsystem `sound` only puts (action, sys_path) on a
queue: it runs in the agent's own process, never in a udev worker, and
never waits for anything. One worker thread takes the events in order,
reads the card (sound.discovery) and the running guests with their stored
selectors (libvirt), plans (hotplug.plan) and applies each action
(hotplug.apply), one guest at a time: an error in one guest is logged and
the next guest is served. Every few seconds without events the worker
reconciles: a guest started since a card arrived gets it then.

Logs go to syslog (the journal) through /dev/log where there is one, to a
log file otherwise. Installed by kiosk.lxc.hotplug_agent with this package
beside it, run by /usr/bin/python3 (python3-pyudev, python3-libvirt,
python3-lxml).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import logging
import logging.handlers
import os
import queue
import signal
import sys
import threading
import time

from ansible_collections.kiosk.lxc.plugins.module_utils.common import text, virt
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.files import write_atomic
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import apply, guestrun, plan
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import guests as guestlib
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import discovery, udevdata
from ansible_collections.kiosk.lxc.plugins.module_utils.sound.discovery import pyudev

NAME = "kiosk-lxc-hotplug"
LOG_FILE = "/var/log/kiosk-lxc/hotplug.log"
SYSLOG_SOCKET = "/dev/log"
RESCAN_SECONDS = 5.0
KIOSK_USER = "kiosk"
USER_RE = r"[a-z_][a-z0-9_-]{0,31}"
WAKE = 0.5


class OneLine(logging.Filter):
    """Every record's message as one line: a guest's pactl answer or a USB device's name is data."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = text.escape(record.getMessage()), None
        return True


def make_logger(log_file: str | None = None, syslog_socket: str = SYSLOG_SOCKET) -> logging.Logger:
    """The agent's logger: syslog (the journal) when present and no file is asked for, else a file."""
    logger = logging.getLogger(NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if log_file is None and os.path.exists(syslog_socket):
        handler = logging.handlers.SysLogHandler(address=syslog_socket)
        handler.setFormatter(logging.Formatter(f"{NAME}[%(process)d]: %(message)s"))
    else:
        path = log_file or LOG_FILE
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(OneLine())
    logger.addHandler(handler)
    return logger


class Agent:
    """The queue, the ledger and the worker; `monitor()` feeds it from udev."""

    def __init__(
        self,
        uri=virt.DEFAULT_URI,
        *,
        context=None,
        dev_dir="/dev",
        proc_root="/proc",
        logger=None,
        run=None,
        only=None,
        kiosk_user=KIOSK_USER,
    ):
        self.uri = uri
        self.only = list(only) if only else None  # guest name patterns served (None: all)
        self.context = context if context is not None else pyudev.Context()
        self.dev_dir = dev_dir
        self.proc_root = proc_root
        self.log = logger or make_logger()
        self.run = run or guestrun.run
        self.kiosk_user = kiosk_user  # whose sound server is told, in each guest
        self.queue: queue.Queue = queue.Queue()
        self.ledger: dict = {}
        self.refreshed: dict = {}  # guest name -> controller pid whose own udev data was refreshed
        self._conn = None
        self.handled = 0  # events handled, for tests and the benchmark

    # ------------------------------------------------------------ the udev side
    def enqueue(self, device) -> None:
        """The monitor's callback: no I/O, no lock held, returns at once."""
        self.queue.put((device.action, device.sys_path, time.monotonic()))

    def monitor(self):
        """A started pyudev observer thread feeding the queue with sound events."""
        mon = pyudev.Monitor.from_netlink(self.context)
        mon.filter_by("sound")
        observer = pyudev.MonitorObserver(mon, callback=self.enqueue, name=f"{NAME}-udev", daemon=True)
        observer.start()
        return observer

    # ------------------------------------------------------------ reading
    def _guests(self) -> list[dict]:
        error = None
        for _attempt in range(2):  # libvirtd restarted, or not answering yet: once more
            try:
                if self._conn is None:
                    self._conn = virt.connect(self.uri)
                found = guestlib.running_guests(self._conn)
            except KioskError as exc:
                error = exc
                continue
            except virt.libvirt.libvirtError as exc:
                self._conn = None
                error = KioskError(f"Reading the guests from {self.uri} failed: {exc}")
                continue
            if self.only is None:
                return found
            return [g for g in found if any(fnmatch.fnmatchcase(g["name"], p) for p in self.only)]
        raise error

    def _host(self) -> dict:
        return discovery.discover(self.context, proc_root=self.proc_root, dev_dir=self.dev_dir, records=True)

    def ready(self, card: dict) -> bool:
        """Whether ALSA and udev have finished the card, so a guest can be given it.

        ALSA made its control node (plan.card_complete), and udev's database
        has SOUND_INITIALIZED on the card: 78-sound-card.rules sets it on the
        change it sends once the control node is set up, and udev
        runs that change only after every earlier event of the card's nodes
        (a parent's event waits for its children's), so their group and mode,
        which the guest's copies take, are set. PulseAudio's udev-detect waits
        for the same property. Seen in the kiosk VM before: attached on the
        card's add, a node was still root 0600 and the kiosk user's PulseAudio
        could not open the card.

        The card's udev record (for the guest's own udev data) is taken from
        that same reading: one taken earlier may predate SOUND_INITIALIZED.
        """
        if not plan.card_complete(card):
            return False
        try:
            device = pyudev.Devices.from_sys_path(self.context, card["sys_path"])
        except pyudev.DeviceNotFoundError:
            return False
        if device.get("SOUND_INITIALIZED") != "1":
            return False
        card["udev"] = udevdata.record(device)
        return True

    # ------------------------------------------------------------ the worker
    def handle(self, action: str, sys_path: str, received: float | None = None) -> list[dict]:
        """One udev event, start to end; returns the plan actions it applied.

        `received` (monotonic) is when the monitor got the event: each action's
        journal line says how long after it the guest had the card, and where
        the time went.
        """
        kind = plan.event_kind(action, sys_path)
        if kind is None:
            return []
        clock = {"event": received if received is not None else time.monotonic(), "start": time.monotonic()}
        guests = self._guests()
        clock["guests"] = time.monotonic()
        for name in plan.forget_stopped(self.ledger, guests):
            self.log.info("guest '%s' stopped or restarted: its hotplugged cards are forgotten", name)
        if kind == "detach":
            actions = plan.plan_detach(plan.card_syspath(sys_path), guests, self.ledger)
            clock["cards"] = clock["guests"]
        else:
            host = self._host()
            clock["cards"] = time.monotonic()
            card = next((c for c in host["cards"] if c["sys_path"] == sys_path), None)
            if card is None or not self.ready(card):
                return []  # not set up yet: its change event (or the next rescan) follows
            if not plan.guests_for(card, guests):
                self.log.info("card %s (%s) matches no running guest: it stays closed", card["number"], card["name"])
            actions = plan.plan_attach(card, guests, self.ledger, host["shared_nodes"])
        self.apply(actions, f"{action} {sys_path}", clock)
        return actions

    def reconcile(self) -> list[dict]:
        """Every present card to every running guest that wants it and lacks it."""
        guests = self._guests()
        for name in plan.forget_stopped(self.ledger, guests):
            self.log.info("guest '%s' stopped or restarted: its hotplugged cards are forgotten", name)
        host = self._host()
        cards = [card for card in host["cards"] if self.ready(card)]
        actions = plan.plan_reconcile(cards, guests, self.ledger, host["shared_nodes"])
        self.apply(actions, "rescan")
        self.refresh_udev(guests, host, cards)
        return actions

    def refresh_udev(self, guests: list[dict], host: dict, ready: list[dict]) -> None:
        """Each guest's own udev data made that of the cards it wants that are present now, once per guest start.

        Attach and detach keep a running guest's records, but not what happened
        while the agent or the guest was not running: after a host reboot the
        directory still holds the records of a card unplugged meanwhile, or of
        one that came back with another number (the ids are device numbers).
        A wanted card udev has not finished yet keeps what it has: its attach
        writes its records once it is ready.
        """
        done = {card["sys_path"] for card in ready}
        for guest in guests:
            if not guest.get("udev_dir") or self.refreshed.get(guest["name"]) == guest["pid"]:
                continue
            pending = {
                ident
                for card in host["cards"]
                if card["sys_path"] not in done and plan.wants(guest, card)
                for ident in udevdata.card_ids(card, host["shared_nodes"])
            }
            want = udevdata.records([c for c in ready if plan.wants(guest, c)], host["shared_nodes"])
            try:
                change = udevdata.plan(guest["udev_dir"], want)
                if change is not None:
                    change["remove"] = [ident for ident in change["remove"] if ident not in pending]
                steps = udevdata.apply(change)
            except (KioskError, OSError) as exc:
                msg = exc.msg if isinstance(exc, KioskError) else str(exc)
                self.log.error("guest '%s': refreshing its udev data failed: %s", guest["name"], msg)
                continue
            self.refreshed[guest["name"]] = guest["pid"]
            for step in steps:
                self.log.info("guest '%s' (on rescan): %s, from the cards present now", guest["name"], step)

    def apply(self, actions: list[dict], cause: str, clock: dict | None = None) -> None:
        for action in actions:
            begun = time.monotonic()
            try:
                steps, shared, parts = apply.apply_action(action, self.dev_dir, self.run, self.kiosk_user)
            except (KioskError, OSError) as exc:
                msg = exc.msg if isinstance(exc, KioskError) else str(exc)
                self.log.error("%s (on %s) failed: %s", plan.describe(action), cause, msg)
                continue
            except Exception as exc:  # one guest's failure never stops the others
                self.log.exception("%s (on %s) failed unexpectedly: %r", plan.describe(action), cause, exc)
                continue
            plan.record(self.ledger, action, shared)
            done = "; ".join(steps) or "nothing to change"
            self.log.info("%s (on %s): %s; %s", plan.describe(action), cause, done, timing(clock, begun, parts))

    def work(self, stop: threading.Event, rescan: float = RESCAN_SECONDS) -> None:
        """The worker loop: events in order, a reconcile when idle for `rescan` seconds.

        It wakes at least every WAKE seconds to see `stop` (a signal handler
        only sets it: taking the queue's lock there could deadlock).
        """
        idle_since = time.monotonic()
        while not stop.is_set():
            try:
                action, sys_path, received = self.queue.get(timeout=min(rescan, WAKE))
            except queue.Empty:
                if time.monotonic() - idle_since >= rescan:
                    self.safely(self.reconcile)
                    idle_since = time.monotonic()
                continue
            self.safely(self.handle, action, sys_path, received)
            self.handled += 1
            idle_since = time.monotonic()

    def safely(self, func, *args) -> None:
        try:
            func(*args)
        except KioskError as exc:
            self.log.error("%s", exc.msg)
        except Exception as exc:  # the agent keeps running whatever one event does
            self.log.exception("unexpected error: %r", exc)


def timing(clock: dict | None, begun: float, parts: dict) -> str:
    """Where one action's time went, in ms: from the udev event when there was one."""
    ms = {k: round(v * 1000) for k, v in parts.items()}
    own = f"cgroup and nodes {ms['device']}, sound server {ms['server']}"
    if clock is None:
        return f"took {ms['device'] + ms['server']} ms ({own})"
    total = round((begun - clock["event"]) * 1000) + ms["device"] + ms["server"]
    waited = round((clock["start"] - clock["event"]) * 1000)
    guests = round((clock["guests"] - clock["start"]) * 1000)
    cards = round((clock["cards"] - clock["guests"]) * 1000)
    return f"{total} ms after the event (queue {waited}, guests {guests}, cards {cards}, {own})"


def _write_pidfile(path: str) -> None:
    write_atomic(path, f"{os.getpid()}\n", mode=0o644)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=NAME, description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default=virt.DEFAULT_URI)
    parser.add_argument("--dev-dir", default="/dev", help="where the host's device nodes are")
    parser.add_argument(
        "--log-file", default=None, help=f"log here instead of syslog (default without /dev/log: {LOG_FILE})"
    )
    parser.add_argument("--rescan", type=float, default=RESCAN_SECONDS, help="seconds without events between rescans")
    parser.add_argument("--pidfile", default=None)
    parser.add_argument("--once", action="store_true", help="reconcile once and exit")
    parser.add_argument("--only", action="append", help="serve only guests whose name matches this pattern")
    parser.add_argument(
        "--kiosk-user", default=KIOSK_USER, help="the guests' user whose sound server is told (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    missing = [name for name, mod in (("pyudev", pyudev), ("libvirt", virt.libvirt)) if mod is None]
    if guestlib.etree is None:
        missing.append("lxml")
    if missing:
        sys.stderr.write(f"{NAME}: missing Python libraries: {', '.join(missing)}\n")
        return 1
    logger = make_logger(args.log_file)
    try:
        text.fullmatch("--kiosk-user", args.kiosk_user, USER_RE, "is not a user name")
    except KioskError as exc:
        sys.stderr.write(f"{NAME}: {exc.msg}\n")
        return 1
    agent = Agent(args.uri, dev_dir=args.dev_dir, logger=logger, only=args.only, kiosk_user=args.kiosk_user)
    if args.once:
        agent.safely(agent.reconcile)
        return 0
    if args.pidfile:
        _write_pidfile(args.pidfile)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    observer = agent.monitor()
    logger.info("started: watching sound cards for the guests on %s", args.uri)
    agent.safely(agent.reconcile)
    try:
        agent.work(stop, args.rescan)
    finally:
        observer.send_stop()
        logger.info("stopped")
        if args.pidfile:
            with contextlib.suppress(OSError):
                os.unlink(args.pidfile)
    return 0
