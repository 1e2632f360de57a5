"""Images the tests build themselves: layers from files the test writes (plus Debian's static
busybox), written as an OCI image layout (gzip layers) or a ``docker save`` archive."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
APPLETS = ("sh", "cat", "ls", "env", "pwd", "id", "test", "echo", "true", "stat", "touch")


def entry(name: str, data: bytes | None = None, *, kind: bytes = tarfile.REGTYPE, mode: int = 0o644,
          link: str = "", size: int | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    """One tar member: a file with ``data``, or ``kind`` DIRTYPE/SYMTYPE/LNKTYPE/CHRTYPE... with ``link``."""
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.linkname = link
    ti.mtime = 1700000000
    if data is not None:
        ti.size = len(data) if size is None else size
    return ti, data


def layer_tar(entries: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """The bytes of an uncompressed tar of ``entries`` (in that order)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for ti, data in entries:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def busybox_layer(extra: list | None = None) -> bytes:
    """The base layer: busybox with applet links, /etc/passwd, /etc/group, /data, /opq."""
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    entries = [entry("bin", kind=tarfile.DIRTYPE, mode=0o755), entry("bin/busybox", bb, mode=0o755)]
    entries += [entry(f"bin/{a}", kind=tarfile.SYMTYPE, link="busybox", mode=0o777) for a in APPLETS]
    entries += [entry("etc", kind=tarfile.DIRTYPE, mode=0o755),
                entry("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/app:/bin/sh\n"),
                entry("etc/group", b"root:x:0:\napp:x:1001:\nstaff:x:1002:\n"),
                entry("data/keep.txt", b"keep\n"), entry("data/gone.txt", b"gone\n"),
                entry("opq/old.txt", b"old\n"), entry("opq/sub/older.txt", b"older\n")]
    return layer_tar(entries + (extra or []))


def top_layer(name: str = "app") -> bytes:
    """A layer with a whiteout of /data/gone.txt, an opaque /opq and /app/hello.txt."""
    return layer_tar([entry("data/.wh.gone.txt", b""), entry("opq/.wh..wh..opq", b""),
                      entry("opq/new.txt", b"new\n"), entry(f"{name}/hello.txt", f"hello from {name}\n".encode())])


def config(diff_ids: list[str], **cfg) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": cfg,
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


DEFAULT_CONFIG = dict(Env=["PATH=/bin", "GREETING=hello-env"], WorkingDir="/app",
                      Cmd=["/bin/sh", "-c", "echo default-cmd; pwd"])


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_oci(dest: Path, layers: list[bytes], cfg: dict | None = None, tag: str = "latest",
              compress: bool = True, lie: dict | None = None) -> str:
    """An OCI image layout at ``dest``; returns its reference ``oci:DEST:TAG``.  ``lie``: fields
    to overwrite in the first layer's descriptor (``size``, ``digest``)."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> dict:
        (blobs / sha(data)[7:]).write_bytes(data)
        return {"digest": sha(data), "size": len(data)}

    descs = []
    for raw in layers:
        data = gzip.compress(raw, mtime=0) if compress else raw
        d = put(data)
        d["mediaType"] = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
        descs.append(d)
    if lie:
        descs[0].update(lie)
    c = put(config([sha(raw) for raw in layers], **(DEFAULT_CONFIG if cfg is None else cfg)))
    c["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": c, "layers": descs}).encode()
    m = put(manifest)
    m["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    m["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [m]}))
    return f"oci:{dest}:{tag}"


def write_docker_archive(dest: Path, layers: list[bytes], cfg: dict | None = None, repo_tag: str = "test:latest") -> str:
    """A ``docker save`` archive at ``dest`` (legacy layout: ID/layer.tar); returns its reference."""
    c = config([sha(raw) for raw in layers], **(DEFAULT_CONFIG if cfg is None else cfg))
    files = {f"{sha(c)[7:]}.json": c}
    names = []
    for raw in layers:
        name = f"{sha(raw)[7:]}/layer.tar"
        files[name] = raw
        names.append(name)
    files["manifest.json"] = json.dumps([{"Config": f"{sha(c)[7:]}.json", "RepoTags": [repo_tag],
                                          "Layers": names}]).encode()
    with tarfile.open(dest, "w") as tar:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return f"docker-archive:{dest}"


def store_dir() -> str:
    """A fresh image store under /tmp that the sandbox's own ids can reach (0755)."""
    d = tempfile.mkdtemp(prefix="jailpy-store-")
    os.chmod(d, 0o755)
    return d


@pytest.fixture()
def store(monkeypatch):
    """A fresh image store for the test (JAILPY_IMAGE_STORE), removed after it."""
    d = store_dir()
    monkeypatch.setenv("JAILPY_IMAGE_STORE", d)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)
