"""Operator settings, from the environment with the ``FLEETSHIFT_`` prefix."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetshift_operator.logs import LogFormat, LogLevel


class OperatorSettings(BaseSettings):
    """Everything the operator reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="FLEETSHIFT_", use_attribute_docstrings=True)

    namespaces: list[str] = Field(default_factory=list)
    """Namespaces to watch (JSON list, e.g. ``["ml","prod"]``); empty watches all."""
    poll_interval_seconds: float = Field(default=5.0, gt=0, le=60)
    """Longest gap between reconciles of an Endpoint in the middle of a deployment."""
    resync_seconds: float = Field(default=60.0, gt=0, le=3600)
    """Longest gap between reconciles of an Endpoint at rest."""
    metrics_host: str = "127.0.0.1"
    """Address of the operator's metrics server (the Helm chart sets 0.0.0.0)."""
    metrics_port: int = Field(default=8081, ge=0, le=65535)
    """Port of the operator's metrics server; 0 disables it."""
    health_host: str = "127.0.0.1"
    """Address of the probes, ``/healthz`` and ``/readyz`` (the Helm chart sets 0.0.0.0 for
    the kubelet)."""
    health_port: int = Field(default=0, ge=0, le=65535)
    """Port of the liveness (``/healthz``) and readiness (``/readyz``) probes; 0 disables
    them (see ``fleetshift_operator.health``)."""
    prometheus_url: str | None = None
    """Prometheus for alarms (an Endpoint may name its own); unset: alarms are Inconclusive."""
    prometheus_bearer_token: str | None = None
    """A bearer token for Prometheus (the Helm chart fills it from a Secret)."""
    prometheus_username: str | None = None
    """A basic-auth user name for Prometheus."""
    prometheus_password: str | None = None
    """A basic-auth password for Prometheus."""
    prometheus_ca_file: str | None = None
    """A PEM CA bundle that verifies Prometheus's certificate."""
    peering: str | None = None
    """kopf peering name for running several replicas (HA); unset runs standalone."""
    peering_priority: int | None = None
    """This replica's kopf peering priority; unset: by seniority (see ``peering_priority``)."""
    log_format: LogFormat = "text"
    """``text`` (one line per record) or ``json`` (one JSON object per line)."""
    log_level: LogLevel = "INFO"
    """The least severe records logged; DEBUG adds kopf's and the HTTP clients' own."""
    retry_max_seconds: float = Field(default=60.0, gt=0, le=3600)
    """Longest back-off between retries of a reconcile that fails (from 1 s, doubling)."""
    reconnect_seconds: float = Field(default=2.0, gt=0, le=60)
    """Longest wait between attempts to reach an API server that does not answer: the
    reconcile loop and kopf's watches retry at least this often, so work resumes within
    about this long of its return."""
