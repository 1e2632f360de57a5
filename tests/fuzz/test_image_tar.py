"""Property test (hypothesis) of jailpy.image.unpack, the hostile-tar reader: for any sequence of
members (names with ``..``, ``.``, absolute paths and whiteouts; files, directories, symlinks and
hard links aimed inside, outside and through each other; devices, fifos, setuid bits; duplicates),
the layer is unpacked or refused with LayerError (one line), and nothing is ever written outside
the layer's directory: a canary directory beside it stays as it was, and no entry below the layer
is a device, a fifo or setuid.  Bounded (max_examples), deterministic unless JAILPY_FUZZ_RANDOM=1."""

from __future__ import annotations

import io
import os
import shutil
import stat
import sys
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import image_helpers as h  # noqa: E402

from jailpy.image import unpack  # noqa: E402

_SCALE = max(1, int(os.environ.get("JAILPY_FUZZ_SCALE", "1")))
SETTINGS = settings(max_examples=300 * _SCALE, deadline=None, database=None,
                    derandomize=os.environ.get("JAILPY_FUZZ_RANDOM") != "1",
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

OUTSIDE = "@OUTSIDE@"  # replaced by the canary directory's absolute path
parts = st.sampled_from(["a", "b", "..", ".", "", ".wh.a", ".wh..wh..opq", ".wh..", "c d", OUTSIDE])
names = st.lists(parts, min_size=1, max_size=5).map("/".join)
kinds = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                         tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.AREGTYPE])
members = st.tuples(names, kinds, names, st.sampled_from([0o644, 0o755, 0o4755, 0o2755, 0o1777, 0o000, 0o7777]),
                    st.binary(max_size=64))


def _snapshot(d: str) -> list:
    out = []
    for top, dirs, files in os.walk(d):
        for n in sorted(dirs + files):
            st_ = os.lstat(os.path.join(top, n))
            data = open(os.path.join(top, n), "rb").read() if stat.S_ISREG(st_.st_mode) else None
            out.append((os.path.relpath(os.path.join(top, n), d), st_.st_mode, st_.st_nlink, data))
    return sorted(out)


@SETTINGS
@given(st.lists(members, max_size=12))
def test_nothing_is_written_outside_the_layer(ms):
    base = tempfile.mkdtemp(prefix="jailpy-tarprop-")
    try:
        layer, outside = os.path.join(base, "layer"), os.path.join(base, "outside")
        os.mkdir(layer)
        os.makedirs(os.path.join(outside, "a"))
        with open(os.path.join(outside, "a", "canary"), "w") as f:
            f.write("canary")
        before = _snapshot(outside)
        entries = []
        for name, kind, link, mode, data in ms:
            name = name.replace(OUTSIDE, outside.lstrip("/"))
            link = link.replace(OUTSIDE, outside)
            entries.append(h.entry(name, data if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else None, kind=kind,
                                   mode=mode, link=link))
        fd = os.open(layer, os.O_RDONLY | os.O_DIRECTORY)
        try:
            unpack.unpack(io.BytesIO(h.layer_tar(entries)), fd)
        except unpack.LayerError as e:
            assert "\n" not in str(e)
        finally:
            os.close(fd)
        assert sorted(os.listdir(base)) == ["layer", "outside"]
        assert _snapshot(outside) == before
        for top, dirs, files in os.walk(layer):
            for n in dirs + files:
                m = os.lstat(os.path.join(top, n)).st_mode
                assert stat.S_ISDIR(m) or stat.S_ISREG(m) or stat.S_ISLNK(m)
                assert not m & (stat.S_ISUID | stat.S_ISGID)
                if stat.S_ISLNK(m):
                    target = os.readlink(os.path.join(top, n))
                    rel = os.path.relpath(os.path.join(top, n), layer).split("/")
                    assert not unpack.link_escapes(rel, target)
    finally:
        shutil.rmtree(base, ignore_errors=True)
