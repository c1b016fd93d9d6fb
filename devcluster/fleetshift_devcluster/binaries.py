"""Find or build the pinned control-plane binaries.

Lookup order for every binary (the envtest convention first):

1. ``$KUBEBUILDER_ASSETS/<name>`` when it reports the pinned version;
2. ``<name>`` on ``PATH`` when it reports the pinned version;
3. the build cache ``~/.cache/fleetshift/<component>-<version>/<name>``
   (``$FLEETSHIFT_CACHE`` overrides the root), built from Go modules with the
   machine's ``go`` when missing.

Kubernetes itself is not ``go install``-able (its ``go.mod`` replaces the
``k8s.io/*`` staging modules with local paths), so it is built from a small
generated wrapper module that requires ``k8s.io/kubernetes`` and points every
staging module at its published ``v0.X.Y`` twin. etcd, kwok, helm and kube-score
install with ``go install``.

A second run finds everything in the cache and does nothing. Progress goes to
stderr, one line per step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.5.35"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"
GATEWAY_API_VERSION = "v1.6.3"  # v1.7 needs Go 1.27
# The real node (``fleetshift-cluster up --node real``). containerd 2.x because 1.x leaves pod
# CPU and memory at 0 in the kubelet's stats/summary (what metrics-server reads).
CONTAINERD_VERSION = "v2.2.9"
RUNC_VERSION = "v1.3.7"
CNI_PLUGINS_VERSION = "v1.9.0"
COREDNS_VERSION = "v1.15.0"
CRICTL_VERSION = "v1.34.0"  # the module proxy refuses v1.35.0
METRICS_SERVER_VERSION = "v0.8.0"  # resource metrics for `kubectl top` and CPU HPAs
KUBE_SCORE_VERSION = "v1.20.0"  # static checks of the chart and the operator's objects
# Debian's Prometheus (2.42) is built without Kubernetes service discovery; the real node's
# Prometheus finds pods through the apiserver as on any cluster. Prometheus publishes its Go
# module as v0.<major><minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
PROMETHEUS_VERSION = "v3.16.0"
PROMETHEUS_MODULE_VERSION = "v0.316.0"
# The custom metrics API from Prometheus (the HPA's invocations-per-replica metric). Its go.mod
# has no replace directives, but the module proxy refuses its version list, which `go install`
# reads for deprecation notices: it builds from the wrapper module like Kubernetes.
PROMETHEUS_ADAPTER_VERSION = "v0.12.0"
# A Gateway API data plane on the real node, to execute the HTTPRoutes of the GatewayAPI
# router. v3.6.12 builds from the wrapper module as it is (its replaces name published forks);
# v3.7.13 needs three local substitutions, as the module proxy refuses some of its
# dependencies (docs/gateway-api.md). Neither implements the RequestMirror filter.
TRAEFIK_VERSION = "v3.6.12"


@dataclasses.dataclass(frozen=True)
class Binary:
    """One pinned executable and how to build it."""

    name: str
    """File name of the executable."""
    component: str
    """Cache folder prefix, e.g. ``k8s`` for the Kubernetes binaries."""
    version: str
    """Pinned version, as the executable's ``--version`` reports it."""
    version_args: tuple[str, ...]
    """Arguments that make the executable print its version."""
    prints_version: bool = True
    """False for a program with no version to print: only the build in its versioned cache
    folder counts, never one on ``PATH``."""


KUBE_APISERVER = Binary("kube-apiserver", "k8s", KUBERNETES_VERSION, ("--version",))
KUBE_CONTROLLER_MANAGER = Binary(
    "kube-controller-manager", "k8s", KUBERNETES_VERSION, ("--version",)
)
KUBE_SCHEDULER = Binary("kube-scheduler", "k8s", KUBERNETES_VERSION, ("--version",))
KUBECTL = Binary("kubectl", "k8s", KUBERNETES_VERSION, ("version", "--client"))
ETCD = Binary("etcd", "etcd", ETCD_VERSION, ("--version",))
KWOK = Binary("kwok", "kwok", KWOK_VERSION, ("--version",))
HELM = Binary("helm", "helm", HELM_VERSION, ("version", "--short"))

KUBELET = Binary("kubelet", "k8s", KUBERNETES_VERSION, ("--version",))
KUBE_PROXY = Binary("kube-proxy", "k8s", KUBERNETES_VERSION, ("--version",))
CONTAINERD = Binary("containerd", "containerd", CONTAINERD_VERSION, ("--version",))
CTR = Binary("ctr", "containerd", CONTAINERD_VERSION, ("--version",))
CONTAINERD_SHIM = Binary("containerd-shim-runc-v2", "containerd", CONTAINERD_VERSION, ("-v",))
RUNC = Binary("runc", "runc", RUNC_VERSION, ("--version",))
CNI_BRIDGE = Binary("bridge", "cni-plugins", CNI_PLUGINS_VERSION, ())
CNI_HOST_LOCAL = Binary("host-local", "cni-plugins", CNI_PLUGINS_VERSION, ())
CNI_LOOPBACK = Binary("loopback", "cni-plugins", CNI_PLUGINS_VERSION, ())
CNI_PORTMAP = Binary("portmap", "cni-plugins", CNI_PLUGINS_VERSION, ())
COREDNS = Binary("coredns", "coredns", COREDNS_VERSION, ("-version",))
CRICTL = Binary("crictl", "crictl", CRICTL_VERSION, ("--version",))
METRICS_SERVER = Binary("metrics-server", "metrics-server", METRICS_SERVER_VERSION, ("--version",))
KUBE_SCORE = Binary("kube-score", "kube-score", KUBE_SCORE_VERSION, ("version",))
PROMETHEUS = Binary("prometheus", "prometheus", PROMETHEUS_VERSION, ("--version",))
PROMETHEUS_ADAPTER = Binary(
    "prometheus-adapter", "prometheus-adapter", PROMETHEUS_ADAPTER_VERSION, (), prints_version=False
)
TRAEFIK = Binary("traefik", "traefik", TRAEFIK_VERSION, ("version",))

CONTROL_PLANE = (KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER, ETCD, KWOK)
ALL = (*CONTROL_PLANE, KUBECTL, HELM)
CNI_PLUGINS = (CNI_BRIDGE, CNI_HOST_LOCAL, CNI_LOOPBACK, CNI_PORTMAP)
REAL_NODE = (
    KUBELET,
    KUBE_PROXY,
    CONTAINERD,
    CTR,
    CONTAINERD_SHIM,
    RUNC,
    *CNI_PLUGINS,
    COREDNS,
    CRICTL,
    METRICS_SERVER,
    PROMETHEUS,
    PROMETHEUS_ADAPTER,
)
"""What ``up --node real`` needs beside :data:`ALL`; built only when asked for."""
GATEWAY = (TRAEFIK,)
"""The Gateway API data plane the real-node tests run beside a cluster (not needed to
start one); ``binaries --node real`` builds it with :data:`REAL_NODE`."""
CHECKS = (KUBE_SCORE,)
"""Static checkers the tests run on manifests; built on first use."""

_COMMANDS = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    "etcd": "go.etcd.io/etcd/server/v3",
    "prometheus-adapter": "sigs.k8s.io/prometheus-adapter/cmd/adapter",
    "traefik": "github.com/traefik/traefik/v3/cmd/traefik",
}
_WRAPPED = {
    "k8s": "k8s.io/kubernetes",
    "etcd": "go.etcd.io/etcd/server/v3",
    "prometheus-adapter": "sigs.k8s.io/prometheus-adapter",
    "traefik": "github.com/traefik/traefik/v3",
}
_GO_INSTALL = {
    "kwok": ("sigs.k8s.io/kwok/cmd/kwok", "kwok"),
    "helm": ("helm.sh/helm/v3/cmd/helm", "helm"),
    "containerd": ("github.com/containerd/containerd/v2/cmd/containerd", "containerd"),
    "ctr": ("github.com/containerd/containerd/v2/cmd/ctr", "ctr"),
    "containerd-shim-runc-v2": (
        "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
        "containerd-shim-runc-v2",
    ),
    "runc": ("github.com/opencontainers/runc", "runc"),
    "coredns": ("github.com/coredns/coredns", "coredns"),
    "crictl": ("sigs.k8s.io/cri-tools/cmd/crictl", "crictl"),
    "metrics-server": ("sigs.k8s.io/metrics-server/cmd/metrics-server", "metrics-server"),
    "kube-score": ("github.com/zegl/kube-score/cmd/kube-score", "kube-score"),
    "prometheus": ("github.com/prometheus/prometheus/cmd/prometheus", "prometheus"),
    **{
        name: (f"github.com/containernetworking/plugins/plugins/{kind}/{name}", name)
        for kind, name in (
            ("main", "bridge"),
            ("ipam", "host-local"),
            ("main", "loopback"),
            ("meta", "portmap"),
        )
    },
}
_CNI_VERSION_STAMP = (
    "-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion="
    + CNI_PLUGINS_VERSION
)
# Version stamps a release build sets and `go install` does not.
_VERSION_LDFLAGS = {
    "helm": f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
    **dict.fromkeys(
        ("containerd", "ctr", "containerd-shim-runc-v2"),
        f"-X github.com/containerd/containerd/v2/version.Version={CONTAINERD_VERSION}",
    ),
    "runc": f"-X main.version={RUNC_VERSION.removeprefix('v')}",
    "crictl": f"-X sigs.k8s.io/cri-tools/pkg/version.Version={CRICTL_VERSION}",
    # metrics-server reads client-go's version stamp, like its own release build sets it.
    "metrics-server": f"-X k8s.io/client-go/pkg/version.gitVersion={METRICS_SERVER_VERSION}",
    "kube-score": f"-X main.version={KUBE_SCORE_VERSION.removeprefix('v')}",
    "prometheus": (
        f"-X github.com/prometheus/common/version.Version={PROMETHEUS_VERSION.removeprefix('v')}"
    ),
    **dict.fromkeys(("bridge", "host-local", "loopback", "portmap"), _CNI_VERSION_STAMP),
}
# Version stamps of commands built from a wrapper module (Kubernetes' are set apart).
_WRAPPED_LDFLAGS = {
    "traefik": (
        "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version="
        + TRAEFIK_VERSION.removeprefix("v")
    ),
}
# Build tags and cgo, as the projects' own release builds use them. runc needs cgo and
# libseccomp (Debian's libseccomp-dev) for its seccomp filters.
_BUILD_TAGS = {
    **dict.fromkeys(
        ("containerd", "ctr", "containerd-shim-runc-v2"), "no_btrfs no_devmapper no_zfs"
    ),
    "runc": "seccomp",
    # Kubernetes discovery alone (Prometheus' own tags): the cloud providers' SDKs are most
    # of its build.
    "prometheus": "remove_all_sd,enable_kubernetes_sd",
}
_CGO = {"runc"}
# Where the Go module's version is not the one the binary reports.
_MODULE_VERSIONS = {"prometheus": PROMETHEUS_MODULE_VERSION}


_EVERY = (*ALL, *REAL_NODE, *GATEWAY, *CHECKS)


class BuildError(RuntimeError):
    """A pinned binary could not be found or built."""


def cache_root() -> Path:
    """Root of the binary cache, outside the repository."""
    override = os.environ.get("FLEETSHIFT_CACHE")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "fleetshift"


def cache_dir(binary: Binary) -> Path:
    """Folder holding ``binary`` once built, e.g. ``~/.cache/fleetshift/k8s-v1.35.4``."""
    return cache_root() / f"{binary.component}-{binary.version}"


def _progress(message: str) -> None:
    print(f"[binaries] {message}", file=sys.stderr, flush=True)


def reports_version(path: Path, binary: Binary) -> bool:
    """True when ``path`` is executable and prints the pinned version.

    The check looks for the version as a whole token, with or without the
    leading ``v`` (etcd prints ``etcd Version: 3.5.35``).
    """
    if not (path.is_file() and os.access(path, os.X_OK)):
        return False
    if not binary.prints_version:
        return path.parent == cache_dir(binary)
    try:
        done = subprocess.run(
            [str(path), *binary.version_args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    printed = done.stdout + done.stderr
    bare = binary.version.removeprefix("v")
    return re.search(rf"(?<![\w.])v?{re.escape(bare)}(?![\w.])", printed) is not None


def find(binary: Binary) -> Path | None:
    """Return a usable pinned ``binary`` without building, or None."""
    candidates: list[Path] = []
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        candidates.append(Path(assets) / binary.name)
    on_path = shutil.which(binary.name)
    if on_path:
        candidates.append(Path(on_path))
    candidates.append(cache_dir(binary) / binary.name)
    for candidate in candidates:
        if reports_version(candidate, binary):
            return candidate
    return None


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "Go is needed to build the control-plane binaries, and `go` is not on PATH"
        )
    return go


def _run_go(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    full_env = {**os.environ, "CGO_ENABLED": "0", **(env or {})}
    done = subprocess.run([_go(), *args], cwd=cwd, env=full_env, check=False)
    if done.returncode != 0:
        raise BuildError(f"`go {' '.join(args)}` failed in {cwd} (exit {done.returncode})")


def _module_gomod(module: str, version: str, workdir: Path) -> dict[str, object]:
    """``module@version``'s go.mod as ``go mod edit -json`` prints it."""
    done = subprocess.run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BuildError(f"cannot download {module}@{version}: {done.stderr.strip()}")
    copy = workdir / "upstream.mod"
    shutil.copyfile(json.loads(done.stdout)["GoMod"], copy)
    edited = subprocess.run(
        [_go(), "mod", "edit", "-json", str(copy)], capture_output=True, text=True, check=False
    )
    if edited.returncode != 0:
        raise BuildError(f"cannot read the go.mod of {module}@{version}: {edited.stderr.strip()}")
    parsed: dict[str, object] = json.loads(edited.stdout)
    return parsed


def wrapper_gomod(module: str, version: str, upstream: dict[str, object]) -> str:
    """The go.mod of a wrapper module that builds commands of ``module@version``.

    ``go install`` refuses modules whose go.mod has ``replace`` directives.
    The wrapper requires the module and rewrites its replaces:

    - a replace to a local path (``=> ./staging/src/k8s.io/api``) becomes a
      replace to the published version the module requires; where it requires
      the placeholder ``v0.0.0`` (Kubernetes' staging modules), the published
      twin ``v0.<minor>.<patch>`` of ``version`` is used;
    - a local replace of a module it does not require is dropped;
    - any other replace is kept as it is.

    >>> upstream = {
    ...     "Go": "1.25.0",
    ...     "Require": [{"Path": "k8s.io/api", "Version": "v0.0.0"},
    ...                 {"Path": "example.com/x", "Version": "v1.2.0"}],
    ...     "Replace": [{"Old": {"Path": "k8s.io/api"},
    ...                  "New": {"Path": "./staging/src/k8s.io/api"}},
    ...                 {"Old": {"Path": "example.com/x"}, "New": {"Path": "../x"}},
    ...                 {"Old": {"Path": "example.com/gone"}, "New": {"Path": "./FORBIDDEN"}},
    ...                 {"Old": {"Path": "example.com/y"},
    ...                  "New": {"Path": "example.com/y", "Version": "v0.3.0"}}],
    ... }
    >>> print(wrapper_gomod("k8s.io/kubernetes", "v1.35.4", upstream), end="")
    module fleetshift.dev/binaries
    go 1.25.0
    require k8s.io/kubernetes v1.35.4
    replace k8s.io/api => k8s.io/api v0.35.4
    replace example.com/x => example.com/x v1.2.0
    replace example.com/y => example.com/y v0.3.0
    """
    required = {
        str(entry["Path"]): str(entry["Version"]) for entry in _entries(upstream.get("Require"))
    }
    staging_version = "v0." + version.removeprefix("v").split(".", 1)[1]
    lines = [
        "module fleetshift.dev/binaries",
        f"go {upstream.get('Go') or '1.25.0'}",
        f"require {module} {version}",
    ]
    for entry in _entries(upstream.get("Replace")):
        old, new = entry["Old"], entry["New"]
        if not isinstance(old, dict) or not isinstance(new, dict):
            continue
        old_path, new_path = str(old["Path"]), str(new["Path"])
        if new_path.startswith("."):
            if old_path not in required:
                continue
            pinned = required[old_path]
            lines.append(
                f"replace {old_path} => {old_path} "
                f"{staging_version if pinned == 'v0.0.0' else pinned}"
            )
        else:
            target = f"{new_path} {new['Version']}" if new.get("Version") else new_path
            lines.append(f"replace {old_path} => {target}")
    return "\n".join(lines) + "\n"


def _entries(value: object) -> list[dict[str, object]]:
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def _build_from_wrapper(
    module: str, version: str, binaries: list[Binary], ldflags: str = "-s -w"
) -> None:
    """Build ``binaries`` (commands of ``module@version``) into their cache folder."""
    target = cache_dir(binaries[0])
    wrapper = target / "wrapper"
    wrapper.mkdir(parents=True, exist_ok=True)
    gomod = wrapper / "go.mod"
    # Every command the module provides is imported, so one `go mod tidy` resolves them
    # all; a cache made before a command was added gets the import and a new tidy.
    tools = (
        "//go:build tools\n\npackage tools\n\nimport (\n"
        + "".join(
            f'\t_ "{_COMMANDS[b.name]}"\n' for b in _EVERY if b.component == binaries[0].component
        )
        + ")\n"
    )
    tools_go = wrapper / "tools.go"
    if not (wrapper / "go.sum").exists():
        gomod.write_text("module fleetshift.dev/binaries\n")
        upstream = _module_gomod(module, version, wrapper)
        gomod.write_text(wrapper_gomod(module, version, upstream))
    if not (wrapper / "go.sum").exists() or not tools_go.exists() or tools_go.read_text() != tools:
        tools_go.write_text(tools)
        _progress(f"resolving the modules of {module}@{version} (go mod tidy)")
        _run_go(["mod", "tidy"], wrapper)
    for binary in binaries:
        started = time.monotonic()
        _progress(f"building {binary.name} {binary.version} (first time: minutes)")
        _run_go(
            [
                "build",
                "-trimpath",
                "-ldflags",
                ldflags,
                "-o",
                str(target / binary.name),
                _COMMANDS[binary.name],
            ],
            wrapper,
        )
        _progress(f"built {binary.name} in {time.monotonic() - started:.0f}s")


def _kubernetes_ldflags() -> str:
    major, minor = KUBERNETES_VERSION.removeprefix("v").split(".")[:2]
    stamps = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        stamps += [
            f"-X {package}.gitVersion={KUBERNETES_VERSION}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(["-s -w", *stamps])


def _go_install(binary: Binary) -> None:
    package, built_name = _GO_INSTALL[binary.name]
    target = cache_dir(binary)
    target.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    version = _MODULE_VERSIONS.get(binary.name, binary.version)
    _progress(f"go install {package}@{version}")
    tags = _BUILD_TAGS.get(binary.name)
    _run_go(
        [
            "install",
            "-trimpath",
            *([f"-tags={tags}"] if tags else []),
            f"-ldflags=-s -w {_VERSION_LDFLAGS.get(binary.name, '')}".strip(),
            f"{package}@{version}",
        ],
        target,
        env={"GOBIN": str(target), "CGO_ENABLED": "1" if binary.name in _CGO else "0"},
    )
    built = target / built_name
    if built_name != binary.name:
        built.replace(target / binary.name)
    _progress(f"built {binary.name} in {time.monotonic() - started:.0f}s")


KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
"""kwok's own stage definitions (shipped in its Go module) that the cluster uses."""


def module_dir(module: str, version: str) -> Path:
    """The source folder of ``module@version``, downloaded through the Go module proxy."""
    workdir = cache_root()
    workdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    answer = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "Dir" not in answer:
        reason = answer.get("Error") or done.stderr.strip()
        raise BuildError(f"cannot download {module}@{version}: {reason}")
    return Path(answer["Dir"])


def kwok_stage_files() -> list[Path]:
    """The stage files of the pinned kwok module."""
    source = module_dir("sigs.k8s.io/kwok", KWOK_VERSION)
    return [source / relative for relative in KWOK_STAGES]


def gateway_api_crds() -> list[Path]:
    """The standard-channel Gateway API CRDs of the pinned ``sigs.k8s.io/gateway-api``."""
    source = module_dir("sigs.k8s.io/gateway-api", GATEWAY_API_VERSION)
    folder = source / "config" / "crd" / "standard"
    return sorted(
        p for p in folder.glob("gateway.networking.k8s.io_*.yaml") if "vap_" not in p.name
    )


def ensure(binaries: tuple[Binary, ...] = ALL) -> dict[str, Path]:
    """Return a path for every binary, building the missing ones."""
    found: dict[str, Path] = {}
    to_wrap: dict[str, list[Binary]] = {}
    for binary in binaries:
        path = find(binary)
        if path is not None:
            found[binary.name] = path
        elif binary.component in _WRAPPED:
            to_wrap.setdefault(binary.component, []).append(binary)
        else:
            _go_install(binary)
    for component, group in to_wrap.items():
        ldflags = (
            _kubernetes_ldflags()
            if component == "k8s"
            else _WRAPPED_LDFLAGS.get(component, "-s -w")
        )
        _build_from_wrapper(_WRAPPED[component], group[0].version, group, ldflags)
    for binary in binaries:
        path = found.get(binary.name, cache_dir(binary) / binary.name)
        if not reports_version(path, binary):
            raise BuildError(f"{path} does not report {binary.name} {binary.version}")
        found[binary.name] = path
    return found


def main(extra: tuple[Binary, ...] = ()) -> int:
    """Entry point: ``python -m fleetshift_devcluster.binaries``; ``extra`` is built too.
    The static checkers (:data:`CHECKS`) come along, so the tests find them built."""
    try:
        paths = ensure((*ALL, *CHECKS, *extra))
    except BuildError as error:
        _progress(f"error: {error}")
        return 1
    for name, path in paths.items():
        _progress(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
