"""Regressions for what a second hostile tester found (attack2: the judge service, networking,
Landlock, the judge): each test failed on the code before its fix.  Real sandboxes, a real
Starlette app over ASGI (httpx); canaries under tmp dirs; bounded in time.

 1  copy_out cannot follow a symlink the program made in a directory part of the name
 2  hostile go-judge /run bodies get 400, never 500
"""

from __future__ import annotations

import os
import shutil

import pytest

from limits_helpers import NEEDS_CGROUP

pytest.importorskip("starlette")
pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def client():
    from starlette.testclient import TestClient

    from jailpy.service.app import create_app

    with TestClient(create_app(slots=2)) as c:
        yield c


@pytest.fixture
def canary_dir(tmp_path):
    """A directory the sandbox cannot see (under the host's tmp) holding a secret file."""
    d = tmp_path / "canary"
    d.mkdir()
    (d / "secret").write_text("SECRET-CANARY\n")
    os.chmod(tmp_path, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@NEEDS_CGROUP
@pytest.mark.parametrize("route", ["/v1/run", "/run"])
def test_copy_out_does_not_follow_a_directory_symlink(client, canary_dir, route):
    """1: the program makes ``d -> <host dir>`` in its box and asks for ``d/secret``: the server
    (root, for a judge machine) opened the name by path with O_NOFOLLOW on the last part only, so
    it read any host file it could.  Now: a file error, no content."""
    script = f"ln -s {canary_dir} d && ln -s {canary_dir}/secret s && echo done"
    if route == "/v1/run":
        body = {"cmd": [{"args": ["/bin/sh", "-c", script], "copy_out": ["d/secret", "s"],
                         "copy_out_cached": ["d/secret"]}]}
    else:
        body = {"cmd": [{"args": ["/bin/sh", "-c", script], "copyOut": ["d/secret", "s"],
                         "copyOutCached": ["d/secret"], "files": [{"content": ""}, {"name": "stdout", "max": 100}]}]}
    r = client.post(route, json=body)
    assert r.status_code == 200, r.text
    assert "SECRET-CANARY" not in r.text
    res = r.json()
    res = res["results"][0] if route == "/v1/run" else res[0]
    if route == "/v1/run":
        assert res["stdout"] == "done\n", res
        assert res["files"] == {} and res["file_ids"] == {}, res
        assert {e["name"] for e in res["file_errors"]} == {"d/secret", "s"}, res
    else:
        assert res["files"].get("stdout") == "done\n", res
        assert set(res["files"]) == {"stdout"} and res["fileIds"] == {}, res
        assert {e["name"] for e in res["fileError"]} == {"d/secret", "s"}, res
