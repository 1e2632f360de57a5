"""A malicious-layer corpus against jailpy.image.unpack (a hostile tar), and the store's refusals of
lying images (jailpy.image.prepare).  Each tar is made here with tarfile; every case checks that
nothing was written outside the layer's directory (a canary directory beside it, and a canary
file an absolute path or a symlink aims at)."""

from __future__ import annotations

import gzip
import io
import os
import stat
import sys
import tarfile
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import image_helpers as h  # noqa: E402
from image_helpers import store  # noqa: E402,F401 - a fixture

from jailpy.errors import PolicyError  # noqa: E402
from jailpy.image import unpack  # noqa: E402

E = h.entry
DIR, SYM, LNK = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE


@pytest.fixture()
def box(tmp_path: Path):
    """``(layer, outside)``: an empty layer directory and a canary directory beside it."""
    layer = tmp_path / "layer"
    layer.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary").write_text("untouched\n")
    yield layer, outside
    assert sorted(os.listdir(tmp_path)) == ["layer", "outside"], "something was written beside the layer"
    assert os.listdir(outside) == ["canary"] and (outside / "canary").read_text() == "untouched\n"


def run(layer: Path, entries, raw: bytes | None = None) -> unpack.Stats:
    fd = os.open(layer, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return unpack.unpack(io.BytesIO(raw if raw is not None else h.layer_tar(entries)), fd)
    finally:
        os.close(fd)


def refused(layer: Path, entries, match: str, raw: bytes | None = None) -> None:
    with pytest.raises(unpack.LayerError, match=match) as info:
        run(layer, entries, raw)
    assert "\n" not in str(info.value)


def test_an_ordinary_layer_unpacks(box):
    layer, _ = box
    stats = run(layer, [E("d", kind=DIR, mode=0o750), E("d/f", b"data", mode=0o640), E("d/l", kind=SYM, link="f"),
                        E("d/abs", kind=SYM, link="/etc/passwd"), E("d/hl", kind=LNK, link="d/f"),
                        E("implicit/parent/file", b"x")])
    assert (layer / "d/f").read_bytes() == b"data"
    assert stat.S_IMODE((layer / "d/f").stat().st_mode) == 0o640
    assert stat.S_IMODE((layer / "d").stat().st_mode) == 0o750
    assert os.readlink(layer / "d/l") == "f" and os.readlink(layer / "d/abs") == "/etc/passwd"
    assert (layer / "d/hl").stat().st_ino == (layer / "d/f").stat().st_ino
    assert (layer / "implicit/parent/file").read_bytes() == b"x"
    assert stats.files == 2 and stats.bytes == 5 and stats.dropped == {}


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "a/b/../../../escape", "..", "./../escape"])
def test_dot_dot_is_refused(box, name):
    layer, _ = box
    refused(layer, [E(name, b"pwned")], "'..' component")


def test_absolute_path_is_refused(box):
    layer, outside = box
    refused(layer, [E(str(outside / "canary"), b"pwned")], "absolute path")


@pytest.mark.parametrize("target", ["../outside/canary", "../../x", "a/../../..", "../"])
def test_symlink_out_of_the_layer_is_refused(box, target):
    layer, _ = box
    refused(layer, [E("link", kind=SYM, link=target)], "outside the layer")


def test_a_write_through_a_symlinked_directory_is_refused(box):
    """An absolute symlink is kept (resolved in the sandbox's root) but nothing is written through it."""
    layer, outside = box
    refused(layer, [E("d", kind=SYM, link=str(outside)), E("d/canary", b"pwned")], "not a directory in this layer")
    refused(layer, [E("e", kind=SYM, link=str(outside)), E("e/sub/new", b"pwned")], "not a directory in this layer")


def test_a_duplicate_replaces_a_symlink_instead_of_writing_through_it(box):
    layer, outside = box
    run(layer, [E("s", kind=SYM, link=str(outside / "canary")), E("s", b"replaced"),
                E("x", b"first"), E("x", b"second"), E("y", b"file"), E("y", kind=DIR), E("y/z", b"below")])
    assert (layer / "s").read_bytes() == b"replaced" and not (layer / "s").is_symlink()
    assert (layer / "x").read_bytes() == b"second"
    assert (layer / "y/z").read_bytes() == b"below"


def test_a_directory_replaced_by_a_file_then_written_below_is_refused(box):
    layer, _ = box
    refused(layer, [E("d", kind=DIR), E("d", b"now a file"), E("d/f", b"x")], "not a directory")


@pytest.mark.parametrize("link, match", [("/etc/passwd", "absolute path"), ("../outside/canary", r"'\.\.' component"),
                                         ("missing", "does not hold"), ("dir", "not a regular file"),
                                         ("sym/canary", "not a directory in this layer")])
def test_hard_links_to_outside_are_refused(box, link, match):
    layer, outside = box
    refused(layer, [E("dir", kind=DIR), E("sym", kind=SYM, link=str(outside)), E("hl", kind=LNK, link=link)], match)
    assert (outside / "canary").stat().st_nlink == 1


def test_devices_and_fifos_are_dropped_and_setuid_bits_cleared(box):
    layer, _ = box
    stats = run(layer, [E("dev/null", kind=tarfile.CHRTYPE), E("dev/sda", kind=tarfile.BLKTYPE),
                        E("fifo", kind=tarfile.FIFOTYPE), E("suid", b"#!", mode=0o4755), E("sgid", b"#!", mode=0o2755),
                        E("sdir", kind=DIR, mode=0o3775)])
    assert not (layer / "dev/null").exists() and not (layer / "dev/sda").exists() and not (layer / "fifo").exists()
    assert stat.S_IMODE((layer / "suid").stat().st_mode) == 0o755
    assert stat.S_IMODE((layer / "sgid").stat().st_mode) == 0o755
    assert stat.S_IMODE((layer / "sdir").stat().st_mode) == 0o1775
    assert stats.dropped == {"device": 2, "fifo": 1, "setuid": 3}


def test_a_file_over_the_layer_cap_is_refused(box, monkeypatch):
    layer, _ = box
    monkeypatch.setattr(unpack, "MAX_BYTES", 4096)
    refused(layer, [E("a", b"x" * 3000), E("b", b"y" * 3000)], "more than 4096 bytes")


def test_a_huge_size_in_a_header_is_refused_before_any_read(box):
    """A header that claims 1 TiB (with no data behind it): refused from the header alone."""
    layer, _ = box
    raw = h.layer_tar([E("huge", b"", size=0)])
    ti = tarfile.TarInfo("huge")
    ti.size = 1 << 40
    raw = ti.tobuf(tarfile.GNU_FORMAT) + b"\0" * 1024
    refused(layer, [], "more than", raw=raw)


def test_a_sparse_file_is_refused(box):
    layer, _ = box
    ti = tarfile.TarInfo("sparse")
    ti.type = tarfile.GNUTYPE_SPARSE
    ti.size = 0
    refused(layer, [], "sparse", raw=ti.tobuf(tarfile.GNU_FORMAT) + b"\0" * 1024)


def test_too_many_members_are_refused(box, monkeypatch):
    layer, _ = box
    monkeypatch.setattr(unpack, "MAX_MEMBERS", 10)
    refused(layer, [E(f"f{i}", b"") for i in range(11)], "more than 10 members")


def test_a_truncated_tar_is_refused(box):
    layer, _ = box
    raw = h.layer_tar([E("f", b"z" * 5000)])
    refused(layer, [], "bad tar|ends inside", raw=raw[:512 + 1000])


def test_garbage_is_refused(box):
    layer, _ = box
    refused(layer, [], "not a tar|bad tar", raw=os.urandom(4096))


@pytest.mark.parametrize("name", [".wh..", "d/.wh.", ".wh.."])
def test_a_whiteout_of_nothing_is_refused(box, name):
    layer, _ = box
    refused(layer, [E(name, b"")], "whiteout of nothing|'..' component")


def test_whiteouts_are_kept_as_markers(box):
    layer, _ = box
    run(layer, [E("d/.wh.gone", b""), E("o/.wh..wh..opq", b""), E(".wh..wh.plnk", kind=DIR)])
    assert (layer / "d/.wh.gone").is_file() and (layer / "o/.wh..wh..opq").is_file()
    assert not (layer / ".wh..wh.plnk").exists()


def test_long_and_deep_names_are_refused(box):
    layer, _ = box
    refused(layer, [E("a" * 300, b"")], "longer than 255")
    refused(layer, [E("/".join(["d"] * (unpack.MAX_DEPTH + 2)), b"")], "deep")


# --- whole images: digests, sizes and compression (jailpy.image.prepare) ---


def _left(store: Path) -> list[str]:
    """What a refused image left in the store: nothing but empty directories and lock files."""
    return [str(p.relative_to(store)) for p in store.rglob("*") if p.is_file() and p.parent.name != "locks"] + \
        os.listdir(store / "layers" / "sha256") + os.listdir(store / "images" / "sha256")


def _prepare(ref: str):
    from jailpy.image import prepare

    return prepare(ref)


def test_a_blob_whose_digest_does_not_match_is_refused(store, tmp_path):
    ref = h.write_oci(tmp_path / "img", [h.busybox_layer()])
    blob = next(p for p in (tmp_path / "img/blobs/sha256").iterdir() if p.read_bytes()[:2] == b"\x1f\x8b")
    data = bytearray(blob.read_bytes())
    data[-20] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(PolicyError, match="digest mismatch"):
        _prepare(ref)
    assert _left(store) == []


@pytest.mark.parametrize("lie, match", [({"size": 10}, "larger than the 10 bytes"), ({"size": 10 << 20}, "has \\d+ bytes"),
                                        ({"digest": "sha256:" + "0" * 64}, "cannot read the blob|digest mismatch"),
                                        ({"digest": "md5:abc"}, "only algorithm"),
                                        ({"mediaType": "application/vnd.oci.image.layer.v1.tar+bzip2"}, "not supported")])
def test_a_manifest_that_lies_is_refused(store, tmp_path, lie, match):
    ref = h.write_oci(tmp_path / "img", [h.busybox_layer()], lie=lie)
    with pytest.raises(PolicyError, match=match):
        _prepare(ref)
    assert _left(store) == []


def test_bad_gzip_is_refused(store, tmp_path):
    """A blob that matches its digest but is not gzip: refused, nothing kept."""
    ref = h.write_oci(tmp_path / "img", [h.busybox_layer()])
    bad = gzip.compress(h.busybox_layer())[:300] + b"garbage" * 10
    import json

    man_path = next(p for p in (tmp_path / "img/blobs/sha256").iterdir() if b"layers" in p.read_bytes())
    man = json.loads(man_path.read_bytes())
    (tmp_path / "img/blobs/sha256" / h.sha(bad)[7:]).write_bytes(bad)
    man["layers"][0].update(digest=h.sha(bad), size=len(bad))
    data = json.dumps(man).encode()
    (tmp_path / "img/blobs/sha256" / h.sha(data)[7:]).write_bytes(data)
    index = json.loads((tmp_path / "img/index.json").read_text())
    index["manifests"][0].update(digest=h.sha(data), size=len(data))
    (tmp_path / "img/index.json").write_text(json.dumps(index))
    with pytest.raises(PolicyError, match="bad gzip data|bad tar|not a tar archive \\(zlib error"):
        _prepare(ref)
    assert _left(store) == []


def test_a_config_whose_diff_id_does_not_match_is_refused(store, tmp_path):
    ref = h.write_docker_archive(tmp_path / "a.tar", [h.busybox_layer()])
    import json

    with tarfile.open(tmp_path / "a.tar") as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers()}
    cfg_name = json.loads(files["manifest.json"])[0]["Config"]
    cfg = json.loads(files[cfg_name])
    cfg["rootfs"]["diff_ids"] = ["sha256:" + "1" * 64]
    new = json.dumps(cfg).encode()
    files.pop(cfg_name)
    files[f"{h.sha(new)[7:]}.json"] = new
    man = json.loads(files["manifest.json"])
    man[0]["Config"] = f"{h.sha(new)[7:]}.json"
    files["manifest.json"] = json.dumps(man).encode()
    with tarfile.open(tmp_path / "b.tar", "w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    with pytest.raises(PolicyError, match="digest mismatch"):
        _prepare(f"docker-archive:{tmp_path / 'b.tar'}")
    assert _left(store) == []


def test_a_layer_with_dot_dot_leaves_nothing_in_the_store(store, tmp_path):
    ref = h.write_oci(tmp_path / "img", [h.layer_tar([E("ok", b"fine"), E("../../escape", b"pwned")])])
    with pytest.raises(PolicyError, match=r"member '\.\./\.\./escape': a '\.\.' component: refused"):
        _prepare(ref)
    assert _left(store) == []
    assert not (tmp_path / "escape").exists()


def test_a_gzip_bomb_stops_at_the_cap(store, tmp_path, monkeypatch):
    monkeypatch.setattr(unpack, "MAX_BYTES", 1 << 16)
    ref = h.write_oci(tmp_path / "img", [h.layer_tar([E("zeros", b"\0" * (1 << 18))])])
    with pytest.raises(PolicyError, match="more than"):
        _prepare(ref)
    assert _left(store) == []


def test_two_processes_unpacking_the_same_layer_both_succeed(store, tmp_path):
    """Threads of one process hold flock(2) locks as two processes would: each its own open file."""
    ref = h.write_oci(tmp_path / "img", [h.busybox_layer(), h.top_layer()])
    out, errors = [], []

    def go() -> None:
        try:
            out.append(_prepare(ref))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(out) == 4
    assert len({i.rootfs for i in out}) == 1 and (Path(out[0].rootfs) / "app/hello.txt").is_file()
    assert len(os.listdir(store / "layers/sha256")) == 2 and os.listdir(store / "tmp") == []
    for i in out:
        i.release()
