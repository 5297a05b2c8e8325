# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    # The card selectors (module_utils/sound/select.py SELECTOR_KEYS) of kiosk.lxc.sound_card_info and
    # kiosk.lxc.sound_passthrough. Each module gives O(cards) its own description, and the fragment adds the rest.
    DOCUMENTATION = r"""
options:
  cards:
    type: list
    elements: dict
    suboptions:
      usb:
        description: USB V(vendor:product) in hex, for example V(0c76:161f).
        type: str
      id: {description: ALSA card id (the bracketed name in C(/proc/asound/cards))., type: str}
      name: {description: Card name or USB product string (case-insensitive)., type: str}
      path:
        description: udev C(ID_PATH) of the card (a port, stable across re-plugs).
        type: str
      serial: {description: USB serial number., type: str}
"""
