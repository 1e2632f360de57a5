"""jailpy.userns: where a sandbox's host ids come from (root's range settings) and the maps of a
slot.  Pure functions over the environment and /etc files; no namespace is made here."""

from __future__ import annotations

import pytest

from jailpy import userns
from jailpy.errors import HostError, PolicyError


@pytest.fixture(autouse=True)
def _no_jailpy_config(monkeypatch, tmp_path):
    monkeypatch.delenv(userns.ID_RANGE_ENV, raising=False)
    monkeypatch.setattr(userns, "ID_RANGE_FILE", str(tmp_path / "id-range"))


def test_root_range_from_the_environment(monkeypatch):
    monkeypatch.setenv("JAILPY_ID_RANGE", "1880000000:100")
    rng = userns.root_range()
    assert (rng.uid, rng.gid, rng.count, rng.slots, rng.helper) == (1880000000, 1880000000, 100, 50, False)
    assert rng.source == "JAILPY_ID_RANGE"


def test_root_range_from_the_file(tmp_path):
    (tmp_path / "id-range").write_text("# jailpy's ids\n1880000000:64   # 32 sandboxes\n")
    rng = userns.root_range()
    assert (rng.uid, rng.count, rng.source) == (1880000000, 64, userns.ID_RANGE_FILE)


def test_the_environment_wins_over_the_file(monkeypatch, tmp_path):
    (tmp_path / "id-range").write_text("1880000000:64\n")
    monkeypatch.setenv("JAILPY_ID_RANGE", "1890000000:8")
    assert userns.root_range().uid == 1890000000


@pytest.mark.parametrize("text,why", [
    ("1880000000", "FIRST:COUNT"),
    ("abc:10", "FIRST:COUNT"),
    ("1880000000:1", "at least 2"),
    ("65000:1000", "65534"),
    ("0:65536", "includes uid 0"),
    ("4294967000:1000", "below 4294967295"),
])
def test_bad_root_ranges_are_refused_with_the_reason(monkeypatch, text, why):
    monkeypatch.setenv("JAILPY_ID_RANGE", text)
    with pytest.raises(HostError, match=why):
        userns.root_range()


def test_a_file_with_two_ranges_is_refused(tmp_path):
    (tmp_path / "id-range").write_text("1880000000:64\n1890000000:64\n")
    with pytest.raises(HostError, match="one line"):
        userns.root_range()


def test_default_root_range_is_the_documented_block(monkeypatch):
    monkeypatch.setattr(userns, "_subid_range", lambda *a: None)  # as if there were no user jailpy
    rng = userns.root_range()
    assert (rng.uid, rng.count) == (0x70000000, 65536) == userns.DEFAULT_ROOT_RANGE
    # clear of systemd's DynamicUser, nobody, the nspawn container ranges and 2^31
    assert rng.uid > 1879048191 and rng.uid + rng.count <= 0x7FFE0000


def test_slot_maps_root_and_the_program_id_to_the_slots_own_host_ids():
    rng = userns.IdRange(1880000000, 1890000000, 64, "test", False)
    plan = userns.slot_plan(rng, 3, 0, 0, single=False)
    assert plan.uid_map == ((0, 1880000006, 1),) and plan.gid_map == ((0, 1890000006, 1),)
    assert plan.host_uids == (1880000006,) and "host uid 1880000006" in plan.description
    plan = userns.slot_plan(rng, 3, 1000, 1000, single=False)
    assert plan.uid_map == ((0, 1880000006, 1), (1000, 1880000007, 1))
    assert plan.gid_map == ((0, 1890000006, 1), (1000, 1890000007, 1))
    assert (plan.uid, plan.gid) == (1000, 1000) and plan.host_uids == (1880000006, 1880000007)
    single = userns.slot_plan(rng, 3, 1000, 5, single=True)
    assert single.uid_map == ((1000, 1880000006, 1),) and single.gid_map == ((5, 1890000006, 1),)


def test_slots_never_overlap():
    rng = userns.IdRange(1880000000, 1880000000, 64, "test", False)
    seen: set[int] = set()
    for slot in range(rng.slots):
        ids = set(userns.slot_plan(rng, slot, 7, 7, single=False).host_uids)
        assert not ids & seen and all(1880000000 <= i < 1880000064 for i in ids)
        seen |= ids


def test_ids_the_kernel_cannot_map_are_a_policy_error():
    rng = userns.IdRange(1880000000, 1880000000, 64, "test", False)
    with pytest.raises(PolicyError):
        userns.slot_plan(rng, 0, 0xFFFFFFFF, 0, single=False)
