"""The real node's own images, made here without a registry or an image builder.

One static Go program (``probe/main.go``: ``pause``, ``serve``, ``get``, ``resolve``) goes in a
one-layer OCI image layout written by :func:`oci_archive`, which ``ctr images import`` takes:

- ``fleetshift.dev/pause:dev``, the pod sandbox image (entrypoint ``/probe pause``);
- ``fleetshift.dev/probe:dev``, what the real-node tests run (entrypoint ``/probe``).

Pods use them with ``imagePullPolicy: Never``; nothing is ever pulled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

from fleetshift_devcluster import binaries

PAUSE_IMAGE = "fleetshift.dev/pause:dev"
PROBE_IMAGE = "fleetshift.dev/probe:dev"
SOURCE = Path(__file__).with_name("probe") / "main.go"


def build_probe() -> Path:
    """The static ``probe`` binary, built once per source version into the cache."""
    source = SOURCE.read_bytes()
    target = binaries.cache_root() / f"probe-{hashlib.sha256(source).hexdigest()[:12]}"
    binary = target / "probe"
    if binary.exists():
        return binary
    target.mkdir(parents=True, exist_ok=True)
    (target / "main.go").write_bytes(source)
    (target / "go.mod").write_text("module fleetshift.dev/probe\n\ngo 1.22\n")
    done = subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", "probe.tmp", "."],
        cwd=target,
        env={**os.environ, "CGO_ENABLED": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise binaries.BuildError(f"cannot build the probe image's program: {done.stderr}")
    (target / "probe.tmp").replace(binary)
    return binary


def _blob(layout: dict[str, bytes], data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    layout[f"blobs/sha256/{digest.removeprefix('sha256:')}"] = data
    return {"digest": digest, "size": len(data)}


def _layer(files: dict[str, tuple[bytes, int]]) -> bytes:
    """An uncompressed, reproducible layer: folders first, then files, all owned by root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for folder in ("etc", "tmp"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            archive.addfile(info)
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def oci_archive(images: dict[str, list[str]], files: dict[str, tuple[bytes, int]]) -> bytes:
    """An OCI image layout (as a tar) holding one image per name, all with the same layer.

    ``images`` maps each image name to its entrypoint.

    >>> archive = oci_archive({"example.dev/x:1": ["/x"]}, {"x": (b"#", 0o755)})
    >>> with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
    ...     index = json.load(tar.extractfile("index.json"))
    >>> index["manifests"][0]["annotations"]["io.containerd.image.name"]
    'example.dev/x:1'
    """
    layout: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    layer = _layer(files)
    layer_ref = _blob(layout, layer)
    manifests = []
    for name, entrypoint in images.items():
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer_ref["digest"]]},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                **_blob(layout, json.dumps(config, sort_keys=True).encode()),
            },
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_ref}],
        }
        manifests.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **_blob(layout, json.dumps(manifest, sort_keys=True).encode()),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                },
            }
        )
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }
    layout["index.json"] = json.dumps(index, sort_keys=True).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, data in layout.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_node_images(target: Path) -> Path:
    """The pause and probe images as one OCI archive at ``target``."""
    probe = build_probe()
    archive = oci_archive(
        {PAUSE_IMAGE: ["/probe", "pause"], PROBE_IMAGE: ["/probe"]},
        {"probe": (probe.read_bytes(), 0o755)},
    )
    target.write_bytes(archive)
    return target
