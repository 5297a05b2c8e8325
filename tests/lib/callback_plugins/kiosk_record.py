# Test-only callback: writes every task result as JSON lines to $KIOSK_RECORD_FILE,
# so tests read what a module returned instead of scraping screen output.
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: kiosk_record
type: aggregate
short_description: record task results as JSON lines (kiosk.lxc tests)
description: Writes one JSON object per task result to the file named by KIOSK_RECORD_FILE.
requirements: [enable in configuration]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kiosk_record"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, result, status):
        path = os.environ.get("KIOSK_RECORD_FILE")
        if not path:
            return
        record = {
            "task": result.task_name if hasattr(result, "task_name") else result._task.get_name(),
            "host": result._host.get_name(),
            "status": status,
            "result": result._result,
        }
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")

    def v2_runner_on_ok(self, result):
        self._write(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._write(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._write(result, "unreachable")
