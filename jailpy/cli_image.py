"""``jailpy image``: the store of unpacked image layers (no kernel logic here; jailpy.image.store).

``jailpy image ls [--json]``      the images (stacked layers) and layers in the store, with sizes
``jailpy image rm ID|REF...``     remove images (by chain id, a unique prefix, or the reference that made them)
``jailpy image prune [--all]``    remove layers no image has, and with --all every image not in use
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .cli_text import SUBAPP_SETTINGS

image_app = typer.Typer(
    name="image",
    help="The store of images jailpy exec --image unpacked (as root /var/cache/jailpy, else ~/.cache/jailpy; "
         "$JAILPY_IMAGE_STORE overrides).",
    **SUBAPP_SETTINGS,
)


def _human(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


@image_app.command("ls", help="List the images and layers in the store: id (the chain of its layers' digests), "
                   "size on disk, whether a sandbox uses it now, and the references that made it.")
def ls(as_json: Annotated[bool, typer.Option("--json", help="One JSON object: images and layers.")] = False) -> None:
    from .image.store import Store

    st = Store()
    images = st.images()
    for img in images:
        img["size"] = st.size("images", img["id"][7:])
    layers = [{"id": d, "size": st.size("layers", d[7:]),
               "images": sum(d in img["layers"] for img in images)} for d in st.layers()]
    if as_json:
        print(json.dumps({"store": st.base, "images": images, "layers": layers}, indent=2))
        return
    print(f"store: {st.base}")
    print(f"{'IMAGE':<19} {'LAYERS':>6} {'SIZE':>8} {'IN USE':>6}  REFERENCES")
    for img in images:
        print(f"{img['id'][7:19]:<19} {len(img['layers']):>6} {_human(img['size']):>8} "
              f"{'yes' if img['in_use'] else 'no':>6}  {' '.join(img['refs'])}")
    print(f"{'LAYER':<19} {'IMAGES':>6} {'SIZE':>8}")
    for layer in layers:
        print(f"{layer['id'][7:19]:<19} {layer['images']:>6} {_human(layer['size']):>8}")


@image_app.command("rm", help="Remove images from the store (their layers stay until jailpy image prune). An image "
                   "a sandbox uses now is left, with an error.")
def rm(ids: Annotated[list[str], typer.Argument(metavar="ID|REF...", help="A chain id (sha256:... or a unique prefix "
       "of its hex, as jailpy image ls shows) or the reference it was made from.", show_default=False)]) -> None:
    from .errors import PolicyError
    from .image.store import Store

    st = Store()
    images = st.images()
    failed = []
    for want in ids:
        if want.startswith(("oci:", "docker-archive:")):  # the image this reference names now
            from .image import chain_id
            from .image.ref import open_ref

            want = chain_id([layer.diff_id for layer in open_ref(want).layers])
        hexd = want[7:] if want.startswith("sha256:") else want
        found = [i for i in images if i["id"][7:].startswith(hexd)] if len(hexd) >= 4 else []
        if len(found) != 1:
            failed.append(f"{want}: {'no such image' if not found else f'{len(found)} images match; give more of the id'}")
            continue
        if st.remove("images", found[0]["id"][7:]):
            print(f"removed {found[0]['id']}")
        else:
            failed.append(f"{want}: in use by a sandbox now; try again when it is done")
    if failed:
        raise PolicyError("image rm: " + "; ".join(failed))


@image_app.command("prune", help="Remove layers no image in the store has, and work files interrupted runs left; with "
                   "--all first every image no sandbox uses now (the next run of one unpacks it again).")
def prune(everything: Annotated[bool, typer.Option("--all", help="Remove every image not in use too.")] = False) -> None:
    from .image.store import Store

    images, layers = Store().prune(everything)
    for d in images:
        print(f"removed image {d}")
    for d in layers:
        print(f"removed layer {d}")
    print(f"{len(images)} images, {len(layers)} layers removed")
