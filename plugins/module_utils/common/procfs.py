# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one parser each of /proc/self/mountinfo, /proc/devices and /proc/asound/cards.

Plain Python, no ansible imports. Each takes the file's path, so tests hand it
a file of their own.

/proc/asound/cards holds strings a USB device chose (its iProduct and
iManufacturer become a card's short and long name) and a device can put a
newline in them, so that the rest of its string reads as a line of a card of
its own. The kernel writes each card as exactly two lines, an index line and
a description line, in increasing order of card number; a file that is not
exactly that (a forged index line in a description's place, a number out of
order or twice, a control character) is refused as a whole: its cards are
then named from udev alone, never from a line a device may have written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"
PROC_DEVICES = "/proc/devices"
ASOUND_CARDS = "/proc/asound/cards"

# sound/core/init.c: "%2i [%-15s]: %s - %s\n" then "                      %s\n".
CARD_INDEX_RE = re.compile(r" ?(\d+) \[([A-Za-z0-9_-]{1,16}) *\]: (\S+) - (.*)")
CARD_DESCRIPTION_RE = re.compile(r" {22}(.*)")
NO_CARDS = "--- no soundcards ---"
_CONTROL_RE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    fstype: str
    source: str
    super_options: tuple[str, ...]


def _unoctal(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mountinfo(path: str = MOUNTINFO) -> list[Mount]:
    """The mounts of path's mount namespace, in the kernel's order."""
    out = []
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            left, sep, right = line.rstrip("\n").partition(" - ")
            fields, tail = left.split(" "), right.split(" ")
            if not sep or len(fields) < 6 or len(tail) < 3:
                continue
            out.append(Mount(_unoctal(fields[4]), tail[0], _unoctal(tail[1]), tuple(tail[2].split(","))))
    return out


def proc_devices(path: str = PROC_DEVICES) -> dict[str, dict[str, list[int]]]:
    """{'char': {name: [major, ...]}, 'block': {...}} from /proc/devices."""
    table: dict[str, dict[str, list[int]]] = {"char": {}, "block": {}}
    section = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            text = line.strip()
            if text.startswith("Character devices"):
                section = "char"
            elif text.startswith("Block devices"):
                section = "block"
            elif text and section:
                number, _sep, name = text.partition(" ")
                if number.isdigit() and name:
                    table[section].setdefault(name.strip(), []).append(int(number))
    return table


def asound_cards(path: str = ASOUND_CARDS) -> dict[int, dict]:
    """{number: {"id", "alsa_driver", "name"}}; {} without ALSA or when the file is forged."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return {}
    return parse_asound_cards(text)


def parse_asound_cards(text: str) -> dict[int, dict]:
    """The strict parse of asound_cards(): exactly index line + description line per card, or nothing."""
    if text.strip() == NO_CARDS or _CONTROL_RE.search(text):
        return {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 2:
        return {}
    cards: dict[int, dict] = {}
    for index_line, description_line in zip(lines[::2], lines[1::2], strict=True):
        index = CARD_INDEX_RE.fullmatch(index_line)
        forged = CARD_INDEX_RE.fullmatch(description_line.strip()) is not None
        if index is None or forged or not CARD_DESCRIPTION_RE.fullmatch(description_line):
            return {}
        number = int(index.group(1))
        if cards and number <= max(cards):
            return {}
        cards[number] = {
            "id": index.group(2),
            "alsa_driver": index.group(3),
            "name": index.group(4).strip(),
        }
    return cards
