#!/usr/bin/python
# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: sound_card_info
short_description: The host's ALSA sound cards, with the selectors that choose them
version_added: 0.1.0
description:
  - Lists every ALSA card udev knows on the host, with its number, id, name, kernel driver, USB ids and serial,
    udev C(ID_PATH) and its device nodes (C(controlC<n>), C(pcmC<n>D*), C(hwC<n>D*), C(midiC<n>D*)) with
    major and minor, plus the C(timer) and C(seq) nodes all cards share.
  - Each card carries the selector values (O(cards[].usb), O(cards[].id), O(cards[].name), O(cards[].path),
    O(cards[].serial)) that M(kiosk.lxc.sound_passthrough) accepts.
extends_documentation_fragment:
  - kiosk.lxc.sound_selectors
  - ansible.builtin.action_common_attributes
  - kiosk.lxc.attributes.no_diff
options:
  cards:
    description:
      - Return only the cards any of these selectors matches; a card matches a selector when it matches every
        key given. Omitted means every card.
  missing:
    description: What to do when a selector in O(cards) matches no card.
    type: str
    choices: [fail, ignore]
    default: ignore
requirements:
  - pyudev (C(python3-pyudev) on Debian)
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: What sound cards does this kiosk have?
  kiosk.lxc.sound_card_info:
  register: kiosk_sound

- name: The USB card from seed 000, failing when it is not plugged in
  kiosk.lxc.sound_card_info:
    cards:
      - usb: "0c76:161f"
    missing: fail
"""

RETURN = r"""
cards:
  description: The cards, by number.
  returned: always
  type: list
  elements: dict
  contains:
    number: {description: ALSA card number., type: int}
    id: {description: ALSA card id., type: str}
    name:
      description: Card name (from /proc/asound/cards, else the USB product or the PCI model).
      type: str
    driver:
      description: Kernel driver of the card's device, for example V(snd-usb-audio).
      type: str
    usb:
      description: USB V(vendor), V(product), V(serial) and V(name) (product string); null for other buses.
      type: dict
    path: {description: udev C(ID_PATH)., type: str}
    sys_path: {description: The card's sysfs path., type: str}
    nodes:
      description: Device nodes, each with V(name), V(path), V(major) and V(minor).
      type: list
      elements: dict
    selectors: {description: The selector values this card answers to., type: dict}
shared_nodes:
  description: The C(timer) and C(seq) nodes every card needs, like RV(cards[].nodes).
  returned: always
  type: list
  elements: dict
unmatched:
  description: Selectors of O(cards) that matched no card (with O(missing=ignore)).
  returned: always
  type: list
  elements: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.kiosk.lxc.plugins.module_utils.common import text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import discovery
from ansible_collections.kiosk.lxc.plugins.module_utils.sound.select import (
    SELECTOR_KEYS,
    card_selectors,
    choose,
    normalize_selector,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cards=dict(
                type="list",
                elements="dict",
                options={key: dict(type="str") for key in SELECTOR_KEYS},
            ),
            missing=dict(type="str", choices=["fail", "ignore"], default="ignore"),
        ),
        supports_check_mode=True,
    )
    if discovery.pyudev is None:
        module.fail_json(msg=missing_required_lib("pyudev"), exception=traceback.format_exc())
    try:
        text.check_params(module.params)  # every string may reach a file, a command or XML
        selectors = module.params["cards"]
        if selectors is not None:
            selectors = [normalize_selector(s) for s in selectors]
        found = discovery.discover()
        chosen = choose(found["cards"], selectors, module.params["missing"])
    except KioskError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    cards = [dict(card, selectors=card_selectors(card)) for card in chosen["cards"]]
    module.exit_json(
        changed=False,
        cards=cards,
        shared_nodes=found["shared_nodes"],
        unmatched=chosen["unmatched"],
    )


if __name__ == "__main__":
    main()
