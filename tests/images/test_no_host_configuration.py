"""The host's package-index configuration and CA bundle are lent to the build, never shipped.

Each check reads the docker-archive tarball the real node imports, layer by layer, so what is
checked is exactly what a kubelet would run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetshift_devcluster import images

PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)
PIP_CONFIG = re.compile(r"(^|/)(pip\.conf|pip\.ini)$")


def certificates(pem: bytes) -> set[bytes]:
    """The base64 bodies of the certificates in a PEM bundle, whitespace removed."""
    return {re.sub(rb"\s+", b"", body) for body in PEM.findall(pem)}


@dataclass
class Layer:
    """One layer of an image tarball: its members, and a way to read them."""

    index: int
    tar: tarfile.TarFile

    def members(self) -> Iterator[tarfile.TarInfo]:
        yield from self.tar.getmembers()

    def read(self, member: tarfile.TarInfo) -> bytes:
        handle = self.tar.extractfile(member)
        assert handle is not None
        return handle.read()


@dataclass
class ImageTarball:
    """A docker-archive tarball, opened."""

    outer: tarfile.TarFile
    layers: list[Layer]

    @functools.cached_property
    def merged(self) -> dict[str, tuple[Layer, tarfile.TarInfo]]:
        """Path -> the member that wins in the container's root (whiteouts applied)."""
        files: dict[str, tuple[Layer, tarfile.TarInfo]] = {}
        for layer in self.layers:
            for member in layer.members():
                name = posixpath.normpath(member.name.lstrip("./") or ".")
                folder, base = posixpath.split(name)
                if base == ".wh..wh..opq":
                    files = {k: v for k, v in files.items() if not k.startswith(folder + "/")}
                elif base.startswith(".wh."):
                    gone = posixpath.join(folder, base[4:])
                    files = {
                        k: v for k, v in files.items() if k != gone and not k.startswith(gone + "/")
                    }
                else:
                    files[name] = (layer, member)
        return files

    def read(self, path: str) -> bytes:
        layer, member = self.merged[path]
        return layer.read(member)


@contextlib.contextmanager
def open_tarball(path: Path) -> Iterator[ImageTarball]:
    with contextlib.ExitStack() as stack:
        outer = stack.enter_context(tarfile.open(path))
        handle = outer.extractfile("manifest.json")
        assert handle is not None
        manifest = json.loads(handle.read())
        assert len(manifest) == 1
        layers = []
        for index, name in enumerate(manifest[0]["Layers"]):
            inner = outer.extractfile(name)
            assert inner is not None
            layers.append(Layer(index, stack.enter_context(tarfile.open(fileobj=inner))))
        yield ImageTarball(outer, layers)


@pytest.fixture(scope="module", params=["operator", "runtime"])
def tarball(
    request: pytest.FixtureRequest, built_images: dict[str, images.Built]
) -> Iterator[ImageTarball]:
    with open_tarball(built_images[request.param].tarball) as opened:
        yield opened


def test_the_tarball_names_the_image_as_kubernetes_reads_it(
    built_images: dict[str, images.Built],
) -> None:
    for name, built in built_images.items():
        with tarfile.open(built.tarball) as outer:
            handle = outer.extractfile("manifest.json")
            assert handle is not None
            manifest = json.loads(handle.read())
        assert manifest[0]["RepoTags"] == [f"docker.io/fleetshift/{name}:dev"]


def test_no_layer_holds_a_pip_configuration_or_the_build_mounts(tarball: ImageTarball) -> None:
    found = [
        f"layer {layer.index}: {member.name}"
        for layer in tarball.layers
        for member in layer.members()
        if PIP_CONFIG.search(member.name)
        or images.BUILD_MOUNTS.lstrip("/") in member.name
        or "usr/local/share/ca-certificates/" in member.name
    ]
    assert found == []


def test_the_ca_bundle_is_debians_own(tarball: ImageTarball) -> None:
    files = tarball.merged
    bundle = certificates(tarball.read("etc/ssl/certs/ca-certificates.crt"))
    enabled = [
        line.strip()
        for line in tarball.read("etc/ca-certificates.conf").decode().splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    ]
    debian = set().union(
        *(certificates(tarball.read(f"usr/share/ca-certificates/{name}")) for name in enabled)
    )
    assert len(debian) > 100  # Mozilla's set, as Debian ships it
    assert bundle == debian
    # /etc/ssl/certs holds the bundle and links into Debian's certificates, nothing else
    others = [
        name
        for name, (_, member) in files.items()
        if name.startswith("etc/ssl/certs/")
        and member.isfile()
        and name != "etc/ssl/certs/ca-certificates.crt"
    ]
    assert others == []


def host_only_certificates() -> set[bytes]:
    """What this host trusts beyond its Debian package: the CAs added locally (here, the
    sandbox's egress and package-mirror CAs), which a build must never copy."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    trusted = certificates(bundle.read_bytes()) if bundle.exists() else set()
    packaged = set().union(
        *(certificates(p.read_bytes()) for p in Path("/usr/share/ca-certificates").rglob("*.crt"))
    )
    local = set().union(
        *(
            certificates(p.read_bytes())
            for p in Path("/usr/local/share/ca-certificates").rglob("*.crt")
        )
    )
    return (trusted - packaged) | local


def test_no_file_in_any_layer_holds_a_host_only_certificate_or_the_build_pip_conf(
    tarball: ImageTarball,
) -> None:
    # A line of each host-only certificate, as PEM files wrap it.
    needles = {
        body[64 * (len(body) // 128) : 64 * (len(body) // 128) + 64]
        for body in host_only_certificates()
    }
    needles.add(f"cert = {images.BUILD_MOUNTS}".encode())  # the build's generated pip.conf
    hits = []
    for layer in tarball.layers:
        for member in layer.members():
            if member.isfile():
                content = layer.read(member)
                hits += [f"layer {layer.index}: {member.name}" for n in needles if n in content]
    assert hits == []
