"""Image references and the documents they lead to (host side; OCI image-spec image-layout.md,
image-index.md, manifest.md, config.md; docker's ``docker save`` format).

Two kinds of reference, both files on this machine (no registry is ever contacted):

* ``oci:DIR[:TAG]``: an OCI image layout directory (``oci-layout``, ``index.json``,
  ``blobs/sha256/...``), e.g. from ``skopeo copy``, ``buildah push oci:...``, ``docker buildx
  --output type=oci``; TAG picks the manifest annotated ``org.opencontainers.image.ref.name``;
* ``docker-archive:FILE[:TAG]``: a ``docker save`` or ``podman save`` tar (``manifest.json``, a
  config JSON and one uncompressed tar per layer); TAG picks an entry of ``RepoTags``.

:func:`open_ref` reads the index, manifest and config, each checked against its digest and size,
and returns a :class:`Source`; the layer blobs are read (and checked) only when a layer is not
in the store yet (:meth:`Source.copy_blob`).  Every refusal is a PolicyError: one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from ..errors import PolicyError
from . import split_ref

MAX_JSON = 4 << 20
"""Bytes an index, manifest, config or ``manifest.json`` may have."""
MAX_LAYERS = 256
"""Layers one image may have."""
MAX_BLOB = 64 << 30
"""Bytes one layer blob may have (compressed, as stored)."""

_HEX = frozenset("0123456789abcdef")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}
"""Layer media types and their compression; any other is refused."""
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def hex_of(digest: object, what: str) -> str:
    """The hex part of a ``sha256:HEX`` digest; PolicyError for any other form or algorithm."""
    if not (isinstance(digest, str) and len(digest) == 71 and digest.startswith("sha256:") and _HEX.issuperset(digest[7:])):
        raise PolicyError(f"{what}: digest {digest!r} is not sha256:<64 hex digits> (the only algorithm accepted)")
    return digest[7:]


class Layer:
    """One layer of a manifest: ``digest`` of the blob as stored (compressed or not),
    ``sha256:HEX``; its ``size`` in bytes as the manifest states it (-1: a docker archive's,
    whose member gives it); ``compression`` (``none``, ``gzip``, ``zstd``); ``diff_id``, the
    digest of the uncompressed tar (the config's ``rootfs.diff_ids``), the store's key; ``path``,
    where the blob is: a file (OCI layout) or a member of the archive (docker-archive).
    (A plain class: a dataclass costs a millisecond at import, on every cached run.)"""

    def __init__(self, digest: str, size: int, compression: str, diff_id: str, path: str = "") -> None:
        self.digest, self.size, self.compression, self.diff_id, self.path = digest, size, compression, diff_id, path


class Source:
    """An image found by a reference: its config and layers, checked against their digests."""

    def __init__(self, ref: str, kind: str, path: str, config: dict, config_digest: str,
                 layers: list[Layer]) -> None:
        self.ref, self.kind, self.path, self.config, self.config_digest = ref, kind, path, config, config_digest
        self.layers = layers

    def copy_blob(self, layer: Layer, out) -> None:
        """Copy ``layer``'s blob into the binary file ``out`` while hashing it; PolicyError when
        its digest or size is not what the manifest says (then ``out`` holds garbage)."""
        what = f"{self.ref}: layer {layer.digest}"
        if self.kind == "oci":
            try:
                f = open(layer.path, "rb")
            except OSError as e:
                raise PolicyError(f"{what}: cannot read the blob {layer.path}: {e.strerror}") from None
            with f:
                _copy_checked(f, layer.digest, layer.size, out, what)
            return
        import tarfile

        try:
            with tarfile.open(self.path, "r:") as tar:
                m = _archive_member(tar, layer.path, what)
                f = tar.extractfile(m)
                _copy_checked(f, layer.digest, layer.size if layer.size >= 0 else m.size, out, what)
        except (tarfile.TarError, EOFError) as e:
            raise PolicyError(f"{what}: {self.path} is not a readable tar archive ({e})") from None
        except OSError as e:
            raise PolicyError(f"{what}: cannot read {self.path}: {e.strerror}") from None


def _copy_checked(f, digest: str, size: int, out, what: str) -> None:
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = f.read(min(1 << 20, size + 1 - n)) if n <= size else b""
        if not chunk:
            break
        n += len(chunk)
        if n > size:
            raise PolicyError(f"{what}: the blob is larger than the {size} bytes the manifest says: refused")
        h.update(chunk)
        out.write(chunk)
    if n != size:
        raise PolicyError(f"{what}: the blob has {n} bytes, the manifest says {size}: refused")
    if "sha256:" + h.hexdigest() != digest:
        raise PolicyError(f"{what}: digest mismatch (the blob's is sha256:{h.hexdigest()}): refused")


def _json(data: bytes, what: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise PolicyError(f"{what}: not valid JSON ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _read_file(path: str, what: str, limit: int = MAX_JSON) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise PolicyError(f"{what}: cannot read {path}: {e.strerror}") from None
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PolicyError(f"{what}: {path} is not a regular file")
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise PolicyError(f"{what}: cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise PolicyError(f"{what}: {path} is larger than {limit} bytes: refused")
    return data


def _checked(data: bytes, desc: dict, what: str) -> bytes:
    """``data`` when it matches the descriptor's digest and size, else PolicyError."""
    if not isinstance(desc.get("size"), int) or isinstance(desc.get("size"), bool) or desc["size"] != len(data):
        raise PolicyError(f"{what}: {len(data)} bytes, the descriptor says {desc.get('size')!r}: refused")
    if "sha256:" + hashlib.sha256(data).hexdigest() != desc.get("digest"):
        raise PolicyError(f"{what}: digest mismatch (expected {desc.get('digest')}): refused")
    return data


def open_ref(ref: str) -> Source:
    """Read the image ``ref`` points to (see :func:`jailpy.image.split_ref`).  Raises PolicyError
    (one line) for anything missing, malformed, or not matching its digest or size."""
    kind, path, tag = split_ref(ref)
    if kind == "oci":
        return _oci(ref, path, tag)
    return _docker_archive(ref, path, tag)


def _oci(ref: str, path: str, tag: str | None) -> Source:
    layout = _json(_read_file(os.path.join(path, "oci-layout"), ref), f"{ref}: oci-layout")
    if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != "1.0.0":
        raise PolicyError(f"{ref}: oci-layout: not an OCI image layout 1.0.0")
    index = _json(_read_file(os.path.join(path, "index.json"), ref), f"{ref}: index.json")
    desc = _pick(index, tag, ref, "index.json")

    def blob(d: dict, what: str) -> bytes:
        h = hex_of(d.get("digest"), what)
        return _checked(_read_file(os.path.join(path, "blobs", "sha256", h), what), d, what)

    for _ in range(2):  # an index may point to an index of platforms (one level)
        if desc.get("mediaType") not in INDEX_TYPES:
            break
        desc = _platform(_json(blob(desc, f"{ref}: index {desc.get('digest')}"), ref), ref)
    if desc.get("mediaType") not in MANIFEST_TYPES:
        raise PolicyError(f"{ref}: manifest media type {desc.get('mediaType')!r} is not supported "
                          f"(known: {', '.join(MANIFEST_TYPES)})")
    manifest = _json(blob(desc, f"{ref}: manifest {desc.get('digest')}"), f"{ref}: manifest")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict) \
            or not isinstance(manifest.get("layers"), list):
        raise PolicyError(f"{ref}: manifest: no config or layers")
    cdesc = manifest["config"]
    config = _config(blob(cdesc, f"{ref}: config {cdesc.get('digest')}"), ref)
    diff_ids = _diff_ids(config, len(manifest["layers"]), ref)
    layers = []
    for i, d in enumerate(manifest["layers"]):
        what = f"{ref}: layer {i}"
        if not isinstance(d, dict):
            raise PolicyError(f"{what}: not a descriptor")
        comp = LAYER_TYPES.get(d.get("mediaType"))
        if comp is None:
            raise PolicyError(f"{what}: media type {d.get('mediaType')!r} is not supported")
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB:
            raise PolicyError(f"{what}: size {size!r}: expected 0 to {MAX_BLOB} bytes")
        h = hex_of(d.get("digest"), what)
        layers.append(Layer(d["digest"], size, comp, diff_ids[i], os.path.join(path, "blobs", "sha256", h)))
    return Source(ref, "oci", path, config, cdesc["digest"], layers)


def _pick(index: object, tag: str | None, ref: str, what: str) -> dict:
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list) or \
            not all(isinstance(m, dict) for m in index["manifests"]):
        raise PolicyError(f"{ref}: {what}: no list of manifests")
    found = index["manifests"]
    names = [m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in found
             if isinstance(m.get("annotations"), dict)]
    if tag is not None:
        found = [m for m in found if isinstance(m.get("annotations"), dict)
                 and m["annotations"].get("org.opencontainers.image.ref.name") == tag]
    if len(found) != 1:
        known = ", ".join(sorted(str(n) for n in names if n)) or "none"
        if not found:
            raise PolicyError(f"{ref}: no image{f' tagged {tag!r}' if tag else ''} in {what} (tags: {known})")
        raise PolicyError(f"{ref}: {len(found)} images in {what}: name one with :TAG (tags: {known})")
    return found[0]


def _platform(index: object, ref: str) -> dict:
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise PolicyError(f"{ref}: image index: no list of manifests")
    arch = _ARCH.get(os.uname().machine, os.uname().machine)
    for m in index["manifests"]:
        p = m.get("platform") if isinstance(m, dict) else None
        if isinstance(p, dict) and p.get("os") == "linux" and p.get("architecture") == arch:
            return m
    raise PolicyError(f"{ref}: the image index has no manifest for linux/{arch}")


def _config(data: bytes, ref: str) -> dict:
    config = _json(data, f"{ref}: config")
    if not isinstance(config, dict):
        raise PolicyError(f"{ref}: config: not a JSON object")
    return config


def _diff_ids(config: dict, n: int, ref: str) -> list[str]:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list) or len(ids) != n:
        raise PolicyError(f"{ref}: config: rootfs.diff_ids does not list one digest for each of the {n} layers")
    if n > MAX_LAYERS:
        raise PolicyError(f"{ref}: {n} layers: at most {MAX_LAYERS}")
    for d in ids:
        hex_of(d, f"{ref}: config: rootfs.diff_ids")
    return ids


def _member_name(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _archive_member(tar, name: str, what: str):
    """The regular-file member ``name`` of a docker archive, following symlinks inside the archive
    (docker 25 links ``ID/layer.tar`` to ``blobs/sha256/HEX``) up to 8 times; PolicyError else."""
    name = _member_name(name)
    for _ in range(8):
        try:
            m = tar.getmember(name)
        except KeyError:
            raise PolicyError(f"{what}: the archive has no {name!r}") from None
        if m.isfile():
            return m
        if not m.issym():
            raise PolicyError(f"{what}: {name!r} in the archive is not a file")
        target = m.linkname if m.linkname.startswith("/") else os.path.dirname(name) + "/" + m.linkname
        name = os.path.normpath("/" + target).lstrip("/")
    raise PolicyError(f"{what}: {name!r}: too many symlinks in the archive")


def _docker_archive(ref: str, path: str, tag: str | None) -> Source:
    import tarfile

    try:
        tar = tarfile.open(path, "r:")
    except (tarfile.TarError, EOFError) as e:
        raise PolicyError(f"{ref}: not a docker save archive (an uncompressed tar): {e}") from None
    except OSError as e:
        raise PolicyError(f"{ref}: cannot read {path}: {e.strerror}") from None
    with tar:
        def read(name: str, what: str) -> bytes:
            m = _archive_member(tar, name, f"{ref}: {what}")
            if m.size > MAX_JSON:
                raise PolicyError(f"{ref}: {what}: larger than {MAX_JSON} bytes: refused")
            return tar.extractfile(m).read()

        entries = _json(read("manifest.json", "manifest.json"), f"{ref}: manifest.json")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise PolicyError(f"{ref}: manifest.json: not a list of images")
        if tag is not None:
            entries = [e for e in entries if isinstance(e.get("RepoTags"), list) and tag in e["RepoTags"]]
        if len(entries) != 1:
            raise PolicyError(f"{ref}: {len(entries)} images{f' tagged {tag!r}' if tag else ''} in manifest.json: "
                              f"name one with :TAG")
        e = entries[0]
        if not isinstance(e.get("Config"), str) or not isinstance(e.get("Layers"), list) \
                or not all(isinstance(x, str) for x in e["Layers"]):
            raise PolicyError(f"{ref}: manifest.json: no Config or Layers")
        data = read(e["Config"], "config")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        named = re.search(r"([0-9a-f]{64})(\.json)?$", e["Config"])
        if named and named.group(1) != digest[7:]:  # the config is named after its digest
            raise PolicyError(f"{ref}: config {e['Config']}: digest mismatch (its content is {digest}): refused")
        config = _config(data, ref)
        diff_ids = _diff_ids(config, len(e["Layers"]), ref)
        # each layer is an uncompressed tar: its digest is its diff_id, checked as it is copied
        layers = [Layer(d, -1, "none", d, name) for d, name in zip(diff_ids, e["Layers"])]
    return Source(ref, "docker-archive", path, config, digest, layers)
