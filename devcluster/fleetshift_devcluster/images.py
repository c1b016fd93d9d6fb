"""Build the operator and runtime images here, without a registry or a Docker engine.

``fleetshift-images`` (and ``make images``) does, skipping each step whose inputs are unchanged:

1. installs podman, mmdebstrap, runc, uidmap and fuse-overlayfs from Debian when missing;
2. makes a base image from Debian's packages (``mmdebstrap --variant=minbase`` with Python 3,
   its venv module and Debian's CA bundle; no docs, man pages or locales) and imports it as
   ``localhost/fleetshift/base:<recipe hash>``;
3. builds ``operator/Dockerfile`` and ``runtime/Dockerfile`` on it
   (``--build-arg BASE_IMAGE=...``) as ``fleetshift/operator:dev`` and ``fleetshift/runtime:dev``,
   and the example pipeline step ``examples/pipeline/scale-features/Dockerfile`` as
   ``fleetshift/example-scaler:dev``;
4. saves each as a docker-archive tarball, named ``docker.io/fleetshift/<name>:dev`` (what
   Kubernetes makes of ``fleetshift/<name>:dev``), for ``ctr -n k8s.io images import``.

Podman reads a project-owned ``containers.conf`` through ``CONTAINERS_CONF`` (the settings this
VM kind needs: runc, cgroupfs, a file events logger, ulimits root may set); nothing under
``/etc`` is changed. Builds use the host network only to reach the package indexes; the
host's pip configuration (files and ``PIP_*`` variables, merged into one file) and the CA
bundle it names are mounted read-only into the build, never copied into a layer.

Each image carries the hash of its inputs (Dockerfile, ``pyproject.toml``, ``README.md``, its
package's files, the base recipe) as a label; when the label matches and the tarball exists,
nothing is rebuilt. State lives in ``~/.cache/fleetshift/images`` (``$FLEETSHIFT_CACHE``).
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlparse

from fleetshift_devcluster.binaries import cache_root

ROOT = Path(__file__).resolve().parents[2]
"""The repository (this file is ``devcluster/fleetshift_devcluster/images.py``)."""

DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    # the licences stay: Debian asks for them
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)
BASE_CONFIG = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
"""What ``podman import`` sets in the base image's config (a tarball carries none)."""
BASE_REPOSITORY = "localhost/fleetshift/base"

CONTAINERS_CONF = """\
# Written by fleetshift_devcluster.images; podman reads it through CONTAINERS_CONF.
[containers]
# root here lacks CAP_SYS_RESOURCE and the hard nofile limit is 20000: the defaults
# (1048576) fail with "setrlimit RLIMIT_NOFILE: Operation not permitted".
default_ulimits = ["nofile=16384:16384", "nproc=32768:32768"]

[engine]
# crun refuses the hybrid cgroup layout ("cgroups in hybrid mode not supported").
runtime = "runc"
# no systemd
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

TOOLS = {
    "podman": "podman",
    "mmdebstrap": "mmdebstrap",
    "runc": "runc",
    "newuidmap": "uidmap",
    "fuse-overlayfs": "fuse-overlayfs",
}
"""Command -> the Debian package that provides it."""

LABEL = "dev.fleetshift.inputs"
"""Image label holding the hash of the image's inputs."""
BUILD_MOUNTS = "/run/fleetshift-build"
"""Where the build sees the host's CA bundle (the generated pip.conf points there)."""


class ImageError(RuntimeError):
    """A step of the image build failed; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """One of the project's images and what goes into it."""

    name: str
    dockerfile: str
    inputs: tuple[str, ...]
    """Files and folders (relative to the repository) the Dockerfile copies."""

    @property
    def tag(self) -> str:
        """The local name, e.g. ``fleetshift/runtime:dev``."""
        return f"fleetshift/{self.name}:dev"

    @property
    def local(self) -> str:
        """The name podman stores it under."""
        return f"localhost/{self.tag}"

    @property
    def exported(self) -> str:
        """The name inside the tarball: Kubernetes' reading of :attr:`tag`."""
        return f"docker.io/{self.tag}"


OPERATOR = ImageSpec("operator", "operator/Dockerfile", ("pyproject.toml", "README.md", "operator"))
RUNTIME = ImageSpec("runtime", "runtime/Dockerfile", ("pyproject.toml", "README.md", "runtime"))
EXAMPLE_SCALER = ImageSpec(
    "example-scaler",
    "examples/pipeline/scale-features/Dockerfile",
    ("examples/pipeline/scale-features",),
)
"""The example pre-processing step of a serial inference pipeline (docs/pipelines.md): a
few lines of standard-library Python, so it builds in seconds on the base."""
IMAGES = (OPERATOR, RUNTIME, EXAMPLE_SCALER)


@dataclasses.dataclass(frozen=True)
class Built:
    """An image after :func:`build_images`."""

    spec: ImageSpec
    image_id: str
    size_bytes: int
    tarball: Path
    seconds: float
    """Time spent building and saving it now (0 when nothing was done)."""
    rebuilt: bool


def state_dir() -> Path:
    """Folder of the tarballs, the containers.conf and the build contexts."""
    return cache_root() / "images"


def tarball_path(spec: ImageSpec) -> Path:
    """Where :func:`build_images` saves ``spec`` (docker-archive format)."""
    return state_dir() / f"{spec.name}.tar"


def _progress(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


# --- podman, configured for this machine kind --------------------------------------------


def containers_conf() -> Path:
    """Write the project's containers.conf (if changed) and return its path."""
    path = state_dir() / "containers.conf"
    if not path.exists() or path.read_text() != CONTAINERS_CONF:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(CONTAINERS_CONF)
    return path


def podman_env() -> dict[str, str]:
    """The environment every podman call runs with."""
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf())}


def podman(*args: str, capture: bool = True, check: bool = True) -> str:
    """Run ``podman args`` with the project's configuration; return its stdout."""
    result = subprocess.run(
        ["podman", *args],
        env=podman_env(),
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip()[-2000:]
        raise ImageError(f"podman {' '.join(args[:3])} ... failed ({result.returncode}): {detail}")
    return result.stdout or ""


def missing_tools() -> list[str]:
    """Debian packages whose commands are not on PATH."""
    return sorted({package for command, package in TOOLS.items() if not shutil.which(command)})


def ensure_tools() -> None:
    """Install the missing tools with apt (as root, or through sudo)."""
    missing = missing_tools()
    if not missing:
        return
    _progress(f"installing from Debian: {' '.join(missing)}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        [*sudo, "apt-get", "update", "-qq"],
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        if subprocess.run(command, env=env, check=False).returncode != 0:
            raise ImageError(f"{' '.join(command)} failed; install {' '.join(missing)} by hand")
    still = missing_tools()
    if still:
        raise ImageError(f"still missing after apt-get install: {' '.join(still)}")


def image_labels(reference: str) -> dict[str, str] | None:
    """The labels of a local image, or None when there is no such image."""
    if subprocess.run(
        ["podman", "image", "exists", reference], env=podman_env(), check=False
    ).returncode:
        return None
    raw = podman("image", "inspect", "--format", "{{json .Labels}}", reference).strip()
    labels = json.loads(raw) if raw and raw != "null" else {}
    return {str(k): str(v) for k, v in labels.items()}


def image_id(reference: str) -> str:
    """The full ID of a local image."""
    return podman("image", "inspect", "--format", "{{.Id}}", reference).strip()


def image_size(reference: str) -> int:
    """Size in bytes of a local image, as ``podman images`` reports it."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", reference).strip())


# --- the base image ---------------------------------------------------------------------


def base_recipe() -> list[str]:
    """The mmdebstrap arguments (but the target) that make the base, in order.

    >>> base_recipe()[:2]
    ['--variant=minbase', '--include=python3,python3-venv,python-is-python3,ca-certificates']
    """
    return [
        "--variant=minbase",
        "--include=" + ",".join(BASE_PACKAGES),
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        DEBIAN_SUITE,
    ]


def base_tag() -> str:
    """``localhost/fleetshift/base:<hash of the recipe and the image config>``."""
    digest = _digest_strings([*base_recipe(), *BASE_CONFIG])
    return f"{BASE_REPOSITORY}:{digest[:12]}"


def ensure_base(*, force: bool = False) -> tuple[str, float]:
    """Make and import the base image unless it exists; return its tag and seconds spent."""
    tag = base_tag()
    if not force and image_labels(tag) is not None:
        return tag, 0.0
    started = time.monotonic()
    _progress(f"making {tag} from Debian {DEBIAN_SUITE} with mmdebstrap (about 2 minutes)")
    state_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=state_dir(), prefix="base-") as scratch:
        tarball = Path(scratch) / "rootfs.tar"
        result = subprocess.run(
            ["mmdebstrap", "--quiet", *base_recipe(), str(tarball)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ImageError(f"mmdebstrap failed ({result.returncode}):\n{result.stdout[-3000:]}")
        changes = [arg for change in BASE_CONFIG for arg in ("--change", change)]
        podman("import", *changes, str(tarball), tag)
    seconds = time.monotonic() - started
    _progress(f"{tag}: {image_size(tag) / 1e6:.0f} MB in {seconds:.0f} s")
    return tag, seconds


# --- the host's package-index configuration, for the build only ---------------------------


def pip_config_files(env: Mapping[str, str], home: Path) -> list[Path]:
    """pip's configuration files, lowest precedence first (pip's own order)."""
    candidates = [
        Path("/etc/xdg/pip/pip.conf"),
        Path("/etc/pip.conf"),
        home / ".pip" / "pip.conf",
        Path(env.get("XDG_CONFIG_HOME", str(home / ".config"))) / "pip" / "pip.conf",
    ]
    if env.get("PIP_CONFIG_FILE"):
        candidates.append(Path(env["PIP_CONFIG_FILE"]))
    return [path for path in candidates if path.is_file()]


def merged_pip_config(files: Iterable[Path], env: Mapping[str, str]) -> dict[str, str]:
    """The ``[global]`` options pip would use: the files in order, then ``PIP_*`` variables.

    Section ``[install]`` options count as global here (the build only installs).

    >>> merged_pip_config([], {"PIP_FIND_LINKS": "/opt/wheels", "PIP_CONFIG_FILE": "/x"})
    {'find-links': '/opt/wheels'}
    """
    options: dict[str, str] = {}
    for path in files:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(path)
        for section in ("global", "install"):
            if parser.has_section(section):
                options.update({k.replace("_", "-"): v for k, v in parser.items(section)})
    for key, value in sorted(env.items()):
        if key.startswith("PIP_") and key != "PIP_CONFIG_FILE":
            options[key[4:].lower().replace("_", "-")] = value
    return options


def _local_paths(value: str) -> list[Path]:
    """Existing local paths among the whitespace-separated entries of a pip option."""
    paths = []
    for entry in value.split():
        path = urlparse(entry).path if entry.startswith("file:") else entry
        if path.startswith("/") and Path(path).exists():
            paths.append(Path(path))
    return paths


def build_configuration(folder: Path) -> tuple[list[str], Path]:
    """``podman build`` volume flags that lend the build the host's pip configuration.

    The merged options are written to ``folder/pip.conf`` and mounted read-only at
    ``/etc/pip.conf``; the CA bundle they name (or ``$SSL_CERT_FILE``/``$REQUESTS_CA_BUNDLE``)
    at ``/run/fleetshift-build/ca-certificates.crt``, and local ``find-links`` folders at
    their own paths. The image's own ``/etc/ssl/certs`` stays untouched.
    """
    env = dict(os.environ)
    options = merged_pip_config(pip_config_files(env, Path.home()), env)
    flags: list[str] = []
    cert = options.get("cert") or env.get("SSL_CERT_FILE") or env.get("REQUESTS_CA_BUNDLE")
    if cert and Path(cert).is_file():
        inside = f"{BUILD_MOUNTS}/ca-certificates.crt"
        flags += ["--volume", f"{Path(cert).resolve()}:{inside}:ro"]
        options["cert"] = inside
    else:
        options.pop("cert", None)
    for key in ("find-links", "index-url", "extra-index-url"):
        for path in _local_paths(options.get(key, "")):
            flags += ["--volume", f"{path}:{path}:ro"]
    lines = ["[global]", *(f"{key} = {value}" for key, value in sorted(options.items()))]
    conf = folder / "pip.conf"
    conf.write_text("\n".join(lines) + "\n")
    flags += ["--volume", f"{conf}:/etc/pip.conf:ro"]
    return flags, conf


# --- the project's images ---------------------------------------------------------------


def _digest_strings(parts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def input_files(spec: ImageSpec, root: Path = ROOT) -> list[str]:
    """The files a build of ``spec`` copies: tracked or untracked-but-not-ignored by git."""
    folders = [entry for entry in spec.inputs if (root / entry).is_dir()]
    files = [entry for entry in spec.inputs if (root / entry).is_file()]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *folders],
        cwd=root,
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0:
        found = [name for name in listed.stdout.decode().split("\0") if name]
    else:  # not a git checkout: every file but caches
        found = [
            str(path.relative_to(root))
            for folder in folders
            for path in (root / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        ]
    return sorted({*files, *(name for name in found if (root / name).is_file())})


def inputs_digest(spec: ImageSpec, base: str, root: Path = ROOT) -> str:
    """Hash of everything that decides the image: base, Dockerfile, copied files."""
    digest = hashlib.sha256()
    digest.update(f"{base}\0{(root / spec.dockerfile).read_text()}\0".encode())
    for name in input_files(spec, root):
        path = root / name
        digest.update(f"{name}\0{os.access(path, os.X_OK)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _stage(spec: ImageSpec, context: Path, root: Path = ROOT) -> None:
    """Copy exactly the input files into a clean build context."""
    if context.exists():
        shutil.rmtree(context)
    for name in input_files(spec, root):
        target = context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    target = context / spec.dockerfile
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / spec.dockerfile, target)


def _build(spec: ImageSpec, base: str, digest: str) -> None:
    context = state_dir() / "context" / spec.name
    _stage(spec, context)
    with tempfile.TemporaryDirectory(dir=state_dir(), prefix="build-") as scratch:
        volumes, _ = build_configuration(Path(scratch))
        log = state_dir() / f"{spec.name}.build.log"
        command = [
            "build",
            "--format",
            "docker",  # keeps HEALTHCHECK (OCI has no such field)
            "--network",
            "host",  # the package indexes only; never a podman bridge
            "--pull=never",  # `--pull never` reads "never" as the context
            "--layers",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--label",
            f"{LABEL}={digest}",
            *volumes,
            "--file",
            str(context / spec.dockerfile),
            "--tag",
            spec.tag,
            str(context),
        ]
        with log.open("w") as out:
            result = subprocess.run(
                ["podman", *command],
                env=podman_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise ImageError(f"building {spec.tag} failed (log: {log}):\n{tail}")


def _save(spec: ImageSpec, digest: str) -> Path:
    tarball = tarball_path(spec)
    partial = tarball.with_suffix(".tar.partial")
    partial.unlink(missing_ok=True)
    podman("tag", spec.local, spec.exported)
    podman("save", "--format", "docker-archive", "--output", str(partial), spec.exported)
    partial.replace(tarball)
    tarball.with_suffix(".inputs").write_text(digest + "\n")
    return tarball


def _current(spec: ImageSpec, digest: str) -> bool:
    labels = image_labels(spec.local)
    stamp = tarball_path(spec).with_suffix(".inputs")
    return (
        labels is not None
        and labels.get(LABEL) == digest
        and tarball_path(spec).is_file()
        and stamp.is_file()
        and stamp.read_text().strip() == digest
    )


def prune(keep: Iterable[str]) -> list[str]:
    """Remove the project's untagged images (earlier builds and their build stages) whose
    inputs label is not in ``keep``; the current build stages stay as the layer cache."""
    keep = set(keep)
    listed = podman(
        "images", "--filter", "dangling=true", "--filter", f"label={LABEL}", "--format", "{{.Id}}"
    )
    removed = []
    for found in dict.fromkeys(listed.split()):
        labels = image_labels(found) or {}
        if labels.get(LABEL) not in keep:
            podman("rmi", found, check=False)
            removed.append(found)
    return removed


def build_images(
    specs: Iterable[ImageSpec] = IMAGES, *, force: bool = False, install: bool = True
) -> list[Built]:
    """Build (or find up to date) each image and its tarball; return what there is.

    One build at a time per state folder: a second caller (a test session beside
    ``make images``) waits for the first, then finds the images up to date."""
    state_dir().mkdir(parents=True, exist_ok=True)
    with (state_dir() / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_images(list(specs), force=force, install=install)


def _build_images(specs: list[ImageSpec], *, force: bool, install: bool) -> list[Built]:
    if install:
        ensure_tools()
    base, _ = ensure_base(force=force)
    built = []
    digests = {spec.name: inputs_digest(spec, base) for spec in IMAGES}
    for spec in specs:
        digest = digests[spec.name]
        rebuilt = force or not _current(spec, digest)
        started = time.monotonic()
        if rebuilt:
            _progress(f"building {spec.tag} on {base}")
            _build(spec, base, digest)
            _save(spec, digest)
        seconds = time.monotonic() - started if rebuilt else 0.0
        built.append(
            Built(
                spec=spec,
                image_id=image_id(spec.local),
                size_bytes=image_size(spec.local),
                tarball=tarball_path(spec),
                seconds=seconds,
                rebuilt=rebuilt,
            )
        )
    if any(image.rebuilt for image in built):
        prune(digests.values())
    return built


def image_tarballs(*, force: bool = False) -> dict[str, Path]:
    """Build what is stale, then map image name -> docker-archive tarball.

    The real node imports them with ``ctr -n k8s.io images import <tarball>``, which names
    them ``docker.io/fleetshift/<name>:dev``; pods refer to ``fleetshift/<name>:dev`` with
    ``imagePullPolicy: Never``.
    """
    return {built.spec.name: built.tarball for built in build_images(force=force)}


def main(argv: list[str] | None = None) -> int:
    """``fleetshift-images``: build what is stale, print sizes and tarball paths."""
    parser = argparse.ArgumentParser(
        prog="fleetshift-images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--force", action="store_true", help="rebuild the base and the images")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        built = build_images(force=args.force)
    except ImageError as error:
        print(f"[images] error: {error}", file=sys.stderr)
        return 1
    for image in built:
        state = f"built in {image.seconds:.0f} s" if image.rebuilt else "unchanged, not rebuilt"
        print(f"{image.spec.tag:<30} {image.size_bytes / 1e6:6.0f} MB  {state:<24} {image.tarball}")
    if not any(image.rebuilt for image in built):
        print(f"[images] nothing to do: inputs unchanged ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
