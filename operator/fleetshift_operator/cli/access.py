"""The plugin's access to the API server: reads, annotation patches, the service proxy.

The kubeconfig is found as kubectl finds it: ``--kubeconfig``, else the first
file in ``$KUBECONFIG``, else ``~/.kube/config``, else the in-cluster service
account. Every failure becomes a :class:`CliError` whose message says what was
wrong and what to do.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import httpx2
from lightkube import Client, KubeConfig
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.exceptions import ApiError, ConfigError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Event, Service
from lightkube.types import PatchType

from fleetshift_operator import api

EndpointResource = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)
FIELD_MANAGER = "kubectl-fleetshift"
CRD_NAME = f"{api.PLURAL}.{api.GROUP}"


def _api_missing(error: ApiError) -> bool:
    """A 404 about the resource type itself (the CRD is not installed), not an object."""
    return "could not find the requested resource" in str(error.status.message or "")


class CliError(Exception):
    """A failure to report to the person: ``message`` says what went wrong."""

    def __init__(self, message: str, exit_code: int = 3) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load_kubeconfig(path: str | None = None, context: str | None = None) -> SingleConfig:
    """The kubeconfig kubectl would use (see the module docstring)."""
    candidates: list[tuple[str, Path]] = []
    if path:
        candidates.append(("--kubeconfig", Path(path).expanduser()))
    elif os.environ.get("KUBECONFIG"):
        first = next(p for p in os.environ["KUBECONFIG"].split(os.pathsep) if p)
        candidates.append(("KUBECONFIG", Path(first).expanduser()))
    else:
        candidates.append(("the default", Path("~/.kube/config").expanduser()))
    source, chosen = candidates[0]
    try:
        if chosen.is_file():
            config = KubeConfig.from_file(chosen)
        elif source == "the default":
            config = KubeConfig.from_service_account()
        else:
            raise CliError(f"no kubeconfig: {source} names {chosen}, which does not exist")
        single = config.get(context)
    except ConfigError as error:
        if source == "the default":
            raise CliError(
                "no kubeconfig: set KUBECONFIG or pass --kubeconfig (there is no"
                " ~/.kube/config and this is not a pod with a service account)"
            ) from error
        raise CliError(f"cannot use the kubeconfig {chosen}: {error}") from error
    if single is None:
        raise CliError(f"the kubeconfig {chosen} has no current context; pass --context")
    return single


@dataclasses.dataclass
class Cluster:
    """A connection to one cluster, with the namespace commands default to."""

    config: SingleConfig
    namespace: str
    client: Client

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None, namespace: str | None) -> Cluster:
        config = load_kubeconfig(kubeconfig, context)
        client = Client(config, field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(15))
        return cls(
            config=config, namespace=namespace or config.namespace or "default", client=client
        )

    @property
    def server(self) -> str:
        return str(self.config.cluster.server)

    def _fail(self, error: Exception, what: str) -> CliError:
        if isinstance(error, ApiError):
            code = error.status.code
            if code == 404 and _api_missing(error):
                return CliError(
                    f"the Endpoint API ({CRD_NAME}) is not installed on {self.server}:"
                    " kubectl apply -f crds/ (or install the Helm chart)"
                )
            if code == 403:
                return CliError(f"not allowed to {what}: {error.status.message}")
            return CliError(f"could not {what}: {error.status.message} (HTTP {code})")
        if isinstance(error, httpx2.HTTPStatusError):
            if error.response.status_code == 404:  # not a Status object: no such API at all
                return CliError(
                    f"the Endpoint API ({CRD_NAME}) is not installed on {self.server}:"
                    " kubectl apply -f crds/ (or install the Helm chart)"
                )
            return CliError(f"could not {what}: HTTP {error.response.status_code}")
        return CliError(f"cannot reach the API server at {self.server} to {what}: {error}")

    def get_endpoint(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        namespace = namespace or self.namespace
        try:
            body: dict[str, Any] = self.client.get(
                EndpointResource, name, namespace=namespace
            ).to_dict()  # type: ignore[no-untyped-call]
        except ApiError as error:
            if error.status.code == 404 and not _api_missing(error):
                raise CliError(
                    f'Endpoint "{name}" not found in namespace "{namespace}"'
                    f" (kubectl fleetshift get -n {namespace} lists them)"
                ) from error
            raise self._fail(error, f"read Endpoint {namespace}/{name}") from error
        except httpx2.HTTPError as error:
            raise self._fail(error, f"read Endpoint {namespace}/{name}") from error
        return body

    def list_endpoints(self, all_namespaces: bool = False) -> list[dict[str, Any]]:
        namespace = "*" if all_namespaces else self.namespace
        try:
            found = [
                e.to_dict()  # type: ignore[no-untyped-call]
                for e in self.client.list(EndpointResource, namespace=namespace)
            ]
        except (ApiError, httpx2.HTTPError) as error:
            raise self._fail(error, "list Endpoints") from error
        return sorted(
            found,
            key=lambda e: (e["metadata"].get("namespace", ""), e["metadata"].get("name", "")),
        )

    def events_for(self, endpoint: dict[str, Any]) -> list[dict[str, Any]]:
        """core/v1 Events about this Endpoint object (by uid), in any order."""
        metadata = endpoint["metadata"]
        try:
            return [
                e.to_dict()
                for e in self.client.list(
                    Event,
                    namespace=metadata["namespace"],
                    fields={"involvedObject.uid": metadata.get("uid", "")},
                )
            ]
        except (ApiError, httpx2.HTTPError) as error:
            raise self._fail(error, "list events") from error

    def annotate(self, name: str, annotations: dict[str, str | None]) -> dict[str, Any]:
        """Set (a string) or remove (None) annotations with a merge patch; spec is untouched."""
        try:
            patched = self.client.patch(
                EndpointResource,
                name,
                {"metadata": {"annotations": annotations}},
                namespace=self.namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as error:
            if error.status.code == 404:
                raise CliError(
                    f'Endpoint "{name}" not found in namespace "{self.namespace}"'
                ) from error
            raise self._fail(error, f"annotate Endpoint {self.namespace}/{name}") from error
        except httpx2.HTTPError as error:
            raise self._fail(error, f"annotate Endpoint {self.namespace}/{name}") from error
        body: dict[str, Any] = patched.to_dict()  # type: ignore[no-untyped-call]
        return body

    def set_variants(self, name: str, variants: list[dict[str, Any]]) -> dict[str, Any]:
        """Replace ``spec.variants`` with a merge patch (``promote-shadow --apply`` only)."""
        try:
            patched = self.client.patch(
                EndpointResource,
                name,
                {"spec": {"variants": variants}},
                namespace=self.namespace,
                patch_type=PatchType.MERGE,
            )
        except (ApiError, httpx2.HTTPError) as error:
            raise self._fail(error, f"patch Endpoint {self.namespace}/{name}") from error
        body: dict[str, Any] = patched.to_dict()  # type: ignore[no-untyped-call]
        return body

    def service_port(self, service: str) -> str:
        """The port (its name, else its number) the service proxy addresses."""
        try:
            found = self.client.get(Service, service, namespace=self.namespace)
        except ApiError as error:
            if error.status.code == 404:
                raise CliError(
                    f'Service "{service}" not found in namespace "{self.namespace}": with the'
                    " GatewayAPI router each fleet has its own Service; pass --service"
                ) from error
            raise self._fail(error, f"read Service {service}") from error
        except httpx2.HTTPError as error:
            raise self._fail(error, f"read Service {service}") from error
        ports = (found.spec.ports if found.spec else None) or []
        if not ports:
            raise CliError(f'Service "{service}" has no ports')
        return ports[0].name or str(ports[0].port)

    def http_client(self, timeout: float) -> httpx2.Client:
        """An HTTP client for the API server with the kubeconfig's credentials."""
        params = client_adapter.ConnectionParams(timeout=httpx2.Timeout(timeout))
        return client_adapter.Client(self.config, params)
