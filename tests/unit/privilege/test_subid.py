"""Subordinate id ranges in /etc/subuid and /etc/subgid (plain Python, scratch files)."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.subid import ranges


@pytest.fixture
def files(tmp_path):
    uid, gid = tmp_path / "subuid", tmp_path / "subgid"
    uid.write_text("# kept as it is\nalice:100000:65536\n")
    gid.write_text("alice:100000:65536\nbob:300000:1000\n")
    return {"subuid": str(uid), "subgid": str(gid)}


def ensure(files, check_mode=False, **params):
    return ranges.ensure(params, check_mode=check_mode, **files)


def test_a_new_owner_gets_the_lowest_range_free_in_both_files(files):
    got = ensure(files, name="player1")
    assert (got["start"], got["count"], got["changed"]) == (165536, 65536, True)
    # bob's gid range (300000-300999) is free in subuid, but not reused there either.
    got2 = ensure(files, name="player2", count=200000)
    assert got2["start"] == 301000
    text = Path(files["subuid"]).read_text()
    assert text.startswith("# kept as it is\nalice:100000:65536\n")
    assert "player1:165536:65536\n" in text and "player1:165536:65536\n" in Path(files["subgid"]).read_text()


def test_second_run_and_check_mode_change_nothing(files):
    first = ensure(files, name="player1")
    before = Path(files["subuid"]).read_text(), os.stat(files["subuid"]).st_ino
    assert ensure(files, check_mode=True, name="player1")["changed"] is False
    again = ensure(files, name="player1")
    assert again["changed"] is False and again["start"] == first["start"]
    assert (Path(files["subuid"]).read_text(), os.stat(files["subuid"]).st_ino) == before


def test_check_mode_plans_the_same_range_and_writes_nothing(files):
    text = Path(files["subuid"]).read_text()
    planned = ensure(files, check_mode=True, name="player1")
    assert planned["changed"] and planned["actions"] == [f"write {files['subuid']}", f"write {files['subgid']}"]
    assert Path(files["subuid"]).read_text() == text
    assert ensure(files, name="player1")["start"] == planned["start"]


def test_an_explicit_start_overlapping_another_owner_fails_before_writing(files):
    text = Path(files["subgid"]).read_text()
    with pytest.raises(KioskError, match=r"^start: 299000-364535 for 'p' overlaps the range 300000-300999 of 'bob'$"):
        ensure(files, name="p", start=299000)
    assert Path(files["subgid"]).read_text() == text


def test_absent_releases_only_that_owner_and_keeps_the_mode(files):
    os.chmod(files["subuid"], 0o600)
    ensure(files, name="player1")
    assert ensure(files, name="player1", state="absent")["changed"]
    text = Path(files["subuid"]).read_text()
    assert "player1" not in text and "alice:100000:65536" in text
    assert os.stat(files["subuid"]).st_mode & 0o777 == 0o600
    assert ensure(files, name="player1", state="absent")["changed"] is False


def test_concurrent_runs_never_share_a_range(files):
    starts = []

    def one(n):
        starts.append(ensure(files, name=f"g{n}")["start"])

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(starts)) == 8
    entries = ranges.read(files["subuid"])[files["subuid"]]
    spans = sorted((e[1], e[1] + e[2]) for e in entries if isinstance(e, tuple))
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


@pytest.mark.parametrize(
    ("params", "option"),
    [({"name": "a:b"}, "name"), ({"name": "a", "count": 0}, "count"), ({"name": "a", "start": 0}, "start"),
     ({"name": "a", "start": 2**32 - 10}, "start"), ({"name": "a", "state": "gone"}, "state")],
)  # fmt: skip
def test_bad_options_name_the_option(params, option):
    with pytest.raises(KioskError) as err:
        ranges.desired(params)
    assert err.value.msg.startswith(f"{option}: ") and "\n" not in err.value.msg
