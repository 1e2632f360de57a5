"""``jailpy exec --image``: a test image built here (busybox from Debian's busybox-static and files
the test writes; a whiteout and an opaque directory across its two layers), in both formats (an OCI
image layout with gzip layers, a ``docker save`` archive), run through the CLI and through the three
start paths of the API; ``jailpy image ls/rm/prune``; a hostile layer refused with one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import image_helpers as h  # noqa: E402
from image_helpers import store  # noqa: E402,F401 - a fixture

from conftest import JAILPY, TIMEOUT  # noqa: E402

# vm: the VM lane runs these on a stock Debian kernel too (an overlay on the image's root, rootless)
# the VM lane (Debian's 6.1 kernel) runs the tests marked vm below: the image's root as the
# sandbox's lower dir, its user, the fork server's path; the rest is this kernel's and Python's
pytestmark = [pytest.mark.skipif(not os.path.exists(h.BUSYBOX), reason="busybox-static is not installed")]


@pytest.fixture()
def images(tmp_path_factory):
    """Both formats of one image, in a directory any id can read (the sandbox's ids read none of it,
    but jailpy reads it as the caller)."""
    d = tmp_path_factory.mktemp("images")
    layers = [h.busybox_layer(), h.top_layer()]
    return {"oci": h.write_oci(d / "oci", layers), "docker": h.write_docker_archive(d / "img.tar", layers), "dir": d}


def jailpy(*args: str, cmd: tuple[str, ...] = (), env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*JAILPY, "--no-cwd", *args, *(("--", *cmd) if cmd else ())], capture_output=True,
                          text=True, timeout=TIMEOUT * 4, env=env)


def image_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jailpy", "image", *args], capture_output=True, text=True,
                          timeout=TIMEOUT)


@pytest.mark.vm
@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_a_program_runs_on_the_image(store, images, fmt):
    script = ("echo $GREETING; pwd; cat /app/hello.txt; ls /data; ls /opq; "
              "test -e /data/gone.txt && echo WHITEOUT-FAILED; test -e /opq/old.txt && echo OPAQUE-FAILED; "
              "test -e /opq/sub && echo OPAQUE-FAILED; test -e /etc/hostname && echo HOST-ROOT; true")
    r = jailpy("--image", images[fmt], cmd=("sh", "-c", script))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == ["hello-env", "/app", "hello from app", "keep.txt", "new.txt", ""], r.stdout


def test_the_config_gives_the_command_and_flags_override_it(store, images):
    r = jailpy("--image", images["oci"])
    assert (r.returncode, r.stdout) == (0, "default-cmd\n/app\n"), r.stderr
    r = jailpy("--image", images["oci"], "--env", "GREETING=mine", "--workdir", "/data",
               cmd=("sh", "-c", "echo $GREETING; pwd"))
    assert (r.returncode, r.stdout) == (0, "mine\n/data\n"), r.stderr


@pytest.mark.vm
def test_the_config_user_is_mapped_inside(store, tmp_path):
    cfg = dict(h.DEFAULT_CONFIG, User="app")
    ref = h.write_oci(tmp_path / "u", [h.busybox_layer()], cfg=cfg)
    r = jailpy("--image", ref, cmd=("id",))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("uid=1000(app) gid=1001(app)"), r.stdout
    r = jailpy("--image", ref, "--uid", "0", "--gid", "0", cmd=("id",))
    assert r.stdout.startswith("uid=0(root) gid=0(root)"), r.stdout + r.stderr


def test_the_root_is_read_only_and_setuid_bits_are_gone(store, tmp_path):
    layer = h.busybox_layer(extra=[h.entry("suid", b"#!/bin/sh\n", mode=0o4755)])
    ref = h.write_oci(tmp_path / "s", [layer])
    r = jailpy("--image", ref, cmd=("sh", "-c", "stat -c %a /suid; touch /bin/new 2>&1; echo rc=$?; touch /tmp/ok && echo tmp-ok"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "755" and "Read-only file system" in r.stdout and "rc=1" in r.stdout and "tmp-ok" in r.stdout


def test_a_second_image_sharing_a_layer_reuses_it(store, images):
    assert jailpy("--image", images["oci"], cmd=("true",)).returncode == 0
    base = store / "layers" / "sha256" / h.sha(h.busybox_layer())[7:]
    inode = base.stat().st_ino
    ref2 = h.write_oci(images["dir"] / "other", [h.busybox_layer(), h.top_layer("other")])
    r = jailpy("--image", ref2, cmd=("cat", "/other/hello.txt"))
    assert (r.returncode, r.stdout) == (0, "hello from other\n"), r.stderr
    assert base.stat().st_ino == inode  # the same unpacked layer, not a second copy
    assert len(os.listdir(store / "layers" / "sha256")) == 3 and len(os.listdir(store / "images" / "sha256")) == 2
    # the docker archive of the first image: the same layers (by diff_id), the same image
    assert jailpy("--image", images["docker"], cmd=("true",)).returncode == 0
    assert len(os.listdir(store / "layers" / "sha256")) == 3 and len(os.listdir(store / "images" / "sha256")) == 2


def test_image_ls_rm_prune(store, images):
    assert jailpy("--image", images["oci"], cmd=("true",)).returncode == 0
    r = image_cli("ls", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["store"] == str(store) and len(data["images"]) == 1 and len(data["layers"]) == 2
    img = data["images"][0]
    assert img["refs"] == [images["oci"]] and img["in_use"] is False and img["size"] > 100_000
    assert image_cli("ls").stdout.count(img["id"][7:19]) == 1
    r = image_cli("rm", "sha256:" + "f" * 64)
    assert r.returncode == 125 and r.stderr.startswith("jailpy: error: image rm: ") and r.stderr.count("\n") == 1
    r = image_cli("rm", img["id"][7:19])
    assert r.returncode == 0 and os.listdir(store / "images" / "sha256") == []
    r = image_cli("prune")
    assert r.returncode == 0 and "0 images, 2 layers removed" in r.stdout
    assert os.listdir(store / "layers" / "sha256") == []


def test_an_image_in_use_is_not_removed(store, images):
    from jailpy import Policy, Sandbox

    with Sandbox(Policy(image=images["oci"], cwd=False)) as sb:
        assert sb.run(["true"]).exit_code == 0
        r = image_cli("rm", images["oci"])
        assert r.returncode == 125 and "in use" in r.stderr
        assert image_cli("prune", "--all").stdout.endswith("0 images, 0 layers removed\n")
    assert image_cli("rm", images["oci"]).returncode == 0


@pytest.mark.vm
@pytest.mark.parametrize("forkserver", [False, True])
def test_the_api_paths_with_a_reused_user_namespace(store, images, forkserver):
    from jailpy import Policy, Sandbox

    with Sandbox(Policy(image=images["docker"], cwd=False), forkserver=forkserver) as sb:
        for _ in range(2):
            r = sb.run([], capture_output=True)
            assert (r.exit_code, r.stdout) == (0, b"default-cmd\n/app\n"), r
        assert "image docker-archive:" in r.protections["rootfs"]


def test_a_hostile_layer_is_refused_with_one_line(store, tmp_path):
    ref = h.write_oci(tmp_path / "evil", [h.layer_tar([h.entry("../../../tmp/pwned", b"x")])])
    r = jailpy("--image", ref, cmd=("true",))
    assert r.returncode == 125 and r.stdout == ""
    assert r.stderr.startswith("jailpy: error: ") and r.stderr.count("\n") == 1 and "'..' component" in r.stderr
    assert os.listdir(store / "layers" / "sha256") == [] and os.listdir(store / "tmp") == []


@pytest.mark.parametrize("ref, match", [("oci:/nonexistent/jailpy-img", "no such directory"),
                                        ("docker://busybox", "expected oci:DIR"),
                                        ("docker-archive:/etc/hostname", "not a docker save archive")])
def test_bad_references_are_one_line(store, ref, match):
    r = jailpy("--image", ref, cmd=("true",))
    assert r.returncode == 125 and match in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_image_and_rootfs_together_are_refused(store, images, tmp_path):
    r = jailpy("--image", images["oci"], "--rootfs", str(tmp_path), cmd=("true",))
    assert r.returncode == 125 and "not both" in r.stderr


def test_a_policy_file_names_the_image(store, images, tmp_path):
    pol = tmp_path / "img.toml"
    pol.write_text(f'cwd = false\n[rootfs]\nimage = "{images["oci"]}"\n')
    r = subprocess.run([*JAILPY, "--policy", str(pol)], capture_output=True, text=True, timeout=TIMEOUT * 4)
    assert (r.returncode, r.stdout) == (0, "default-cmd\n/app\n"), r.stderr


def test_a_store_the_sandbox_cannot_reach_is_one_line(images, monkeypatch, tmp_path_factory):
    """A store below a 0700 directory (a private home): the sandbox's own ids (as root a leased
    uid; rootless a subuid) cannot search it, which is said before the run, with the fix; with the
    caller's own id (rootless --id-map single) it works."""
    import tempfile

    private = tempfile.mkdtemp(prefix="jailpy-private-")  # 0700
    try:
        monkeypatch.setenv("JAILPY_IMAGE_STORE", os.path.join(private, "store"))
        if os.getuid() == 0:
            r = jailpy("--image", images["oci"], cmd=("true",))
            assert r.returncode == 125 and "others may not search it" in r.stderr and r.stderr.count("\n") == 1
        else:
            r = jailpy("--image", images["oci"], "--id-map", "single", cmd=("true",))
            assert r.returncode == 0, r.stderr
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_a_changed_reference_is_read_again_and_a_removed_image_made_again(store, tmp_path):
    """The note a run leaves (refs/ in the store: the checked config and layers of an unchanged
    index.json or archive) never outlives a change of the reference, nor the image's removal."""
    ref = h.write_oci(tmp_path / "img", [h.busybox_layer()])
    assert jailpy("--image", ref, cmd=("sh", "-c", "echo $GREETING")).stdout == "hello-env\n"
    h.write_oci(tmp_path / "img", [h.busybox_layer()], cfg=dict(h.DEFAULT_CONFIG, Env=["PATH=/bin", "GREETING=v2"]))
    assert jailpy("--image", ref, cmd=("sh", "-c", "echo $GREETING")).stdout == "v2\n"
    assert image_cli("rm", ref).returncode == 0 and image_cli("prune").returncode == 0
    r = jailpy("--image", ref, cmd=("sh", "-c", "echo $GREETING"))
    assert (r.returncode, r.stdout) == (0, "v2\n"), r.stderr
    assert len(os.listdir(store / "images" / "sha256")) == 1


def test_two_jailpy_processes_making_the_same_image_at_once_both_run(store, images):
    procs = [subprocess.Popen([*JAILPY, "--no-cwd", "--image", images["oci"], "--", "cat", "/app/hello.txt"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=TIMEOUT * 4) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert all(o == "hello from app\n" for o, _ in outs)
    assert len(os.listdir(store / "layers" / "sha256")) == 2 and len(os.listdir(store / "images" / "sha256")) == 1
    assert os.listdir(store / "tmp") == []
