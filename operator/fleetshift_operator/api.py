"""The ``Endpoint`` API (``fleetshift.dev/v1alpha1``) as pydantic models.

These models are the single source of the CRD in ``crds/`` (see ``crd.py``):
field types, bounds and defaults become the OpenAPI schema, and the
``x-kubernetes-validations`` CEL rules attached to each model become the
admission checks, each with a message a person understands. The operator
reads objects the apiserver has already validated, so the rules live in CEL
only, once.

The concepts come from SageMaker's deployment guardrails (production
variants, blue/green traffic routing with canary and linear steps, rolling
batches, termination wait, execution timeout); the casing is Kubernetes'.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

GROUP = "fleetshift.dev"
VERSION = "v1alpha1"
KIND = "Endpoint"
PLURAL = "endpoints"
SINGULAR = "endpoint"
SHORT_NAMES = ["fsep"]
CATEGORIES = ["fleetshift", "all"]

MAX_WAIT_SECONDS = 3600
MIN_EXECUTION_TIMEOUT_SECONDS = 600
MAX_EXECUTION_TIMEOUT_SECONDS = 28800
MAX_REPLICAS = 1000
HISTORY_LIMIT = 10

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
VARIANT_NAME = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
"""SageMaker's rule for a production variant's name (``AllTraffic`` is valid)."""
DEFAULT_PROVISIONING_TIMEOUT_SECONDS = 600
MIN_PROVISIONING_TIMEOUT_SECONDS = 10


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class _Model(BaseModel):
    """Base: unknown fields are an error, names are the Kubernetes ones."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_attribute_docstrings=True)


class _Status(_Model):
    """Base of what the operator observed and decided: values, never changed in place.

    The planner derives a new status with ``model_copy(update=...)``; ``frozen`` makes
    any assignment to a field an error, so no code can edit a status it was given.
    """

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, use_attribute_docstrings=True, frozen=True
    )


def format_timestamp(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, to the second: how every status time is written.

    >>> format_timestamp(datetime.datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=datetime.UTC))
    '2026-01-02T03:04:05Z'
    """
    return moment.astimezone(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


Timestamp = Annotated[
    AwareDatetime,
    AfterValidator(lambda moment: moment.astimezone(datetime.UTC)),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A moment in status: a ``datetime`` (UTC) in Python, an RFC 3339 string in the object.
The planner only stores whole seconds, so a status read back equals the one written."""


def _rules(*rules: dict[str, str]) -> ConfigDict:
    return ConfigDict(
        extra="forbid",
        populate_by_name=True,
        use_attribute_docstrings=True,
        json_schema_extra={"x-kubernetes-validations": [dict(rule) for rule in rules]},
    )


# -- sizes and policies ------------------------------------------------------------------


class CapacitySize(_Model):
    """An amount of a fleet: a number of instances, or a percentage of its capacity."""

    type: Literal["InstanceCount", "CapacityPercent"]
    """``InstanceCount`` counts replicas; ``CapacityPercent`` is a share of the fleet."""
    value: Annotated[int, Field(ge=1, le=MAX_REPLICAS)]
    """How many instances, or which percentage (1-100)."""

    model_config = _rules(
        cel(
            "self.type != 'CapacityPercent' || self.value <= 100",
            "a CapacityPercent value must be between 1 and 100",
            ".value",
        )
    )


class TrafficRouting(_Model):
    """How traffic moves from the blue fleet to the green one."""

    type: Literal["AllAtOnce", "Canary", "Linear"] = "AllAtOnce"
    """``AllAtOnce`` shifts everything in one step; ``Canary`` shifts ``canarySize``
    first and the rest after a bake; ``Linear`` shifts ``linearStepSize`` per step."""
    canarySize: CapacitySize | None = None
    """The first step of a canary: at most half of the fleet."""
    linearStepSize: CapacitySize | None = None
    """The size of each linear step: 10-50% of the fleet."""
    waitIntervalSeconds: Annotated[int, Field(ge=0, le=MAX_WAIT_SECONDS)] = 0
    """The bake after each traffic shift, while alarms watch the green fleet."""

    model_config = _rules(
        cel(
            "self.type != 'Canary' || has(self.canarySize)",
            "a Canary traffic routing needs canarySize",
        ),
        cel(
            "self.type != 'Linear' || has(self.linearStepSize)",
            "a Linear traffic routing needs linearStepSize",
        ),
        cel(
            "self.type == 'Canary' || !has(self.canarySize)",
            "canarySize applies only to type Canary",
        ),
        cel(
            "self.type == 'Linear' || !has(self.linearStepSize)",
            "linearStepSize applies only to type Linear",
        ),
        cel(
            "!has(self.canarySize) || self.canarySize.type != 'CapacityPercent'"
            " || self.canarySize.value <= 50",
            "canarySize must be at most 50% of the fleet",
            ".canarySize",
        ),
        cel(
            "!has(self.linearStepSize) || self.linearStepSize.type != 'CapacityPercent'"
            " || (self.linearStepSize.value >= 10 && self.linearStepSize.value <= 50)",
            "linearStepSize must be between 10% and 50% of the fleet",
            ".linearStepSize",
        ),
    )


_PROVISIONING_WITHIN_DEADLINE = cel(
    "!has(self.provisioningTimeoutSeconds) || !has(self.maximumExecutionTimeoutSeconds)"
    " || self.provisioningTimeoutSeconds <= self.maximumExecutionTimeoutSeconds",
    "provisioningTimeoutSeconds must not exceed maximumExecutionTimeoutSeconds",
    ".provisioningTimeoutSeconds",
)


class _Deadlines(_Model):
    """The two clocks every deployment runs against, whatever its strategy."""

    maximumExecutionTimeoutSeconds: Annotated[
        int, Field(ge=MIN_EXECUTION_TIMEOUT_SECONDS, le=MAX_EXECUTION_TIMEOUT_SECONDS)
    ] = 3600
    """The deadline of the whole deployment; past it the deployment rolls back. With
    blue/green it must exceed the sum of all waits."""
    provisioningTimeoutSeconds: Annotated[
        int, Field(ge=MIN_PROVISIONING_TIMEOUT_SECONDS, le=MAX_EXECUTION_TIMEOUT_SECONDS)
    ] = DEFAULT_PROVISIONING_TIMEOUT_SECONDS
    """How long a new fleet (or batch) may take to become Ready; past it the deployment
    rolls back (a first deployment fails) and says what held the pods (Pending,
    Unschedulable, an image pull, a quota). At most ``maximumExecutionTimeoutSeconds``;
    as long as it, the deadline alone applies."""


class BlueGreen(_Deadlines):
    """Stand up a green fleet beside the blue one, then shift traffic to it."""

    trafficRouting: TrafficRouting = Field(default_factory=TrafficRouting)
    """How traffic moves to the green fleet."""
    terminationWaitSeconds: Annotated[int, Field(ge=0, le=MAX_WAIT_SECONDS)] = 0
    """How long blue is kept after green has all the traffic; a breach in this time
    still rolls back."""

    model_config = _rules(_PROVISIONING_WITHIN_DEADLINE)


class Rolling(_Deadlines):
    """Replace capacity in batches, in place, instead of standing up a full green fleet."""

    maximumBatchSize: CapacitySize
    """How much capacity is replaced per batch: 5-50% of the fleet."""
    waitIntervalSeconds: Annotated[int, Field(ge=0, le=MAX_WAIT_SECONDS)] = 0
    """The bake after each batch."""
    rollbackMaximumBatchSize: CapacitySize | None = None
    """How much capacity a rollback restores per batch (default: all at once)."""

    model_config = _rules(
        _PROVISIONING_WITHIN_DEADLINE,
        cel(
            "self.maximumBatchSize.type != 'CapacityPercent'"
            " || (self.maximumBatchSize.value >= 5 && self.maximumBatchSize.value <= 50)",
            "maximumBatchSize must be between 5% and 50% of the fleet",
            ".maximumBatchSize",
        ),
    )


# -- alarms -----------------------------------------------------------------------------------

_NAME_RULE = r"^[a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$"


class PrometheusRuleAlarm(_Model):
    """A named Prometheus alerting rule (SageMaker's ``AlarmName``): it breaches while
    ``ALERTS{alertname=<alertName>, alertstate="firing", <matchers>}`` has a series."""

    alertName: Annotated[str, Field(min_length=1, max_length=253)]
    """The alerting rule's name."""
    matchers: dict[str, Annotated[str, Field(max_length=512)]] = Field(
        default_factory=lambda: {"namespace": "${namespace}", "endpoint": "${endpoint}"},
        max_length=16,
    )
    """Label matchers on the alert, with the same ``${...}`` variables as queries
    (default: this Endpoint's namespace and name)."""


class QueryAlarm(_Model):
    """A CloudWatch-style alarm on a PromQL expression: it breaches when at least
    ``datapointsToAlarm`` of the last ``evaluationPeriods`` periods cross ``threshold``.

    The query may use ``${namespace}``, ``${endpoint}``, ``${variant}``, ``${revision}``
    (the variant's green revision) and ``${blueRevision}`` (its blue one), so it can
    watch one variant's green fleet alone."""

    query: Annotated[str, Field(min_length=1, max_length=4096)]
    """The PromQL expression; one value per period."""
    threshold: float
    """The value compared with each datapoint."""
    comparison: Literal[">=", ">", "<=", "<"] = ">="
    """How a datapoint is compared with the threshold to count as breaching."""
    periodSeconds: Annotated[int, Field(ge=1, le=3600)] = 10
    """The length of one period (the query's evaluation step)."""
    evaluationPeriods: Annotated[int, Field(ge=1, le=100)] = 3
    """M: how many recent periods are looked at."""
    datapointsToAlarm: Annotated[int, Field(ge=1, le=100)] | None = None
    """N: how many of them must breach (default: all M)."""
    treatMissingData: Literal["notBreaching", "breaching", "ignore", "missing"] = "missing"
    """What a period without data means. ``missing`` (the default): too little data is
    Inconclusive, never Healthy; ``notBreaching``: no data counts as good (only for
    metrics that are absent when healthy); ``breaching``: no data counts as bad;
    ``ignore``: the previous verdict stands."""

    model_config = _rules(
        cel(
            "!has(self.datapointsToAlarm) || self.datapointsToAlarm <= self.evaluationPeriods",
            "datapointsToAlarm must not exceed evaluationPeriods",
        ),
    )


class TemplateAlarm(_Model):
    """A ready-made alarm on the runtime's metrics (see the README)."""

    kind: Literal["GreenErrorRate", "GreenLatencyP99", "GreenWorseThanBlue", "ShadowDisagreement"]
    """``GreenErrorRate``: green 5xx share of invocations, in percent.
    ``GreenLatencyP99``: green p99 model latency, in milliseconds.
    ``GreenWorseThanBlue``: green's 5xx percentage minus blue's, in points.
    ``ShadowDisagreement`` (on a shadow variant, Replicas router): the share of rows whose
    predicted class the shadow's green revision answered differently from production, in
    percent, from the copies production pods compare."""
    threshold: float = Field(gt=0)
    """Breach at or above this value (percent, milliseconds or points)."""
    periodSeconds: Annotated[int, Field(ge=1, le=3600)] = 10
    """The length of one period."""
    evaluationPeriods: Annotated[int, Field(ge=1, le=100)] = 3
    """M: how many recent periods are looked at."""
    datapointsToAlarm: Annotated[int, Field(ge=1, le=100)] | None = None
    """N: how many of them must breach (default: all M)."""

    model_config = _rules(
        cel(
            "!has(self.datapointsToAlarm) || self.datapointsToAlarm <= self.evaluationPeriods",
            "datapointsToAlarm must not exceed evaluationPeriods",
        ),
    )


LATENCY_BUCKET_BOUNDS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005,
    0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75,
    1.0, 1.5, 2.5, 5.0,
)  # fmt: skip
"""The runtime's model-latency histogram buckets, in seconds (a test holds them equal)."""


class ComparisonAlarm(_Model):
    """Green against blue on the same traffic since the deployment began, by an
    always-valid sequential test (``alarms/sequential.py``): Healthy once the evidence
    says green fails no more than ``marginPercent`` points more often than blue,
    Breaching once it says green fails more than that, Inconclusive (the step holds)
    while the traffic is too thin to tell. It may be read every poll: a green worse by
    more than the margin is promoted at most ``100 - confidencePercent`` percent of
    the time."""

    metric: Literal["ErrorRate", "SlowRequests"] = "ErrorRate"
    """``ErrorRate``: the share of invocations answered with a 5xx. ``SlowRequests``:
    the share whose model latency exceeds ``latencyThresholdSeconds`` (the p-quantile
    is under the threshold exactly when at most 1 - p of the requests are slower)."""
    marginPercent: float = Field(default=1.0, gt=0, lt=100)
    """How much worse green may be, in percentage points of the rate."""
    confidencePercent: float = Field(default=95.0, ge=50, le=99.99)
    """The confidence of every verdict, at every poll at once."""
    latencyThresholdSeconds: float | None = None
    """The latency a slow request exceeds (``SlowRequests`` only): one of the runtime's
    histogram bucket bounds, so that it is counted exactly."""

    model_config = _rules(
        cel(
            "self.metric != 'SlowRequests' || has(self.latencyThresholdSeconds)",
            "SlowRequests needs latencyThresholdSeconds",
        ),
        cel(
            "!has(self.latencyThresholdSeconds) || self.latencyThresholdSeconds in "
            f"[{', '.join(str(b) for b in LATENCY_BUCKET_BOUNDS)}]",
            "latencyThresholdSeconds must be one of the runtime's latency buckets: "
            + ", ".join(str(b) for b in LATENCY_BUCKET_BOUNDS),
            ".latencyThresholdSeconds",
        ),
    )


class DriftAlarm(_Model):
    """Green's predictions against blue's over the deployment so far: the population
    stability index of the two ``fleetshift_prediction`` histograms (``alarms/drift.py``).
    It catches the model that answers 200 with other numbers, which no error or latency
    alarm sees."""

    threshold: float = Field(default=0.2, gt=0, le=10)
    """Breach above this index (0.1: a small shift, 0.25: a large one)."""
    minSamples: Annotated[int, Field(ge=1, le=1_000_000)] = 200
    """Predictions each of green and blue must have made before a verdict (fewer:
    Inconclusive, the step holds)."""


class Alarm(_Model):
    """One alarm: a named alerting rule, an inline query, a template, a comparison of
    green with blue, or the drift of green's predictions from blue's."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=_NAME_RULE)]
    """The alarm's name, shown in status and Events."""
    prometheusRule: PrometheusRuleAlarm | None = None
    """Breach while a Prometheus alerting rule fires."""
    query: QueryAlarm | None = None
    """Breach on an inline PromQL expression."""
    template: TemplateAlarm | None = None
    """Breach on a ready-made expression over the runtime's metrics."""
    comparison: ComparisonAlarm | None = None
    """Promote only when the traffic shows green is not worse than blue."""
    drift: DriftAlarm | None = None
    """Breach when green's predictions are distributed unlike blue's."""

    model_config = _rules(
        cel(
            "(has(self.prometheusRule) ? 1 : 0) + (has(self.query) ? 1 : 0)"
            " + (has(self.template) ? 1 : 0) + (has(self.comparison) ? 1 : 0)"
            " + (has(self.drift) ? 1 : 0) == 1",
            "an alarm needs exactly one of prometheusRule, query, template, comparison or drift",
        ),
    )


class SecretKeyRef(_Model):
    """A key of a Secret in the Endpoint's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The Secret's name."""
    key: Annotated[str, Field(min_length=1, max_length=253)]
    """The key within it."""


class PrometheusConnection(_Model):
    """Where this Endpoint's alarms are evaluated, when not the operator's default."""

    url: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^https?://")]
    """The Prometheus base URL."""
    bearerTokenSecret: SecretKeyRef | None = None
    """A bearer token for ``Authorization``."""
    basicAuthUsernameSecret: SecretKeyRef | None = None
    """A basic-auth user name."""
    basicAuthPasswordSecret: SecretKeyRef | None = None
    """A basic-auth password."""
    caBundleSecret: SecretKeyRef | None = None
    """A PEM CA bundle to verify the server's certificate."""

    model_config = _rules(
        cel(
            "has(self.basicAuthUsernameSecret) == has(self.basicAuthPasswordSecret)",
            "basic auth needs both basicAuthUsernameSecret and basicAuthPasswordSecret",
        ),
        cel(
            "!(has(self.bearerTokenSecret) && has(self.basicAuthUsernameSecret))",
            "use either a bearer token or basic auth, not both",
        ),
    )


class InconclusivePolicy(_Model):
    """What an Inconclusive or Error evaluation does."""

    action: Literal["Hold", "RollBack"] = "Hold"
    """``Hold`` (the default): the step is not promoted, the deadline still applies.
    ``RollBack``: roll back after ``consecutiveEvaluations`` inconclusive ones in a row."""
    consecutiveEvaluations: Annotated[int, Field(ge=1, le=1000)] = 12
    """How many inconclusive evaluations in a row trigger a rollback (``RollBack`` only)."""


class AutoRollback(_Model):
    """Alarms that watch the green fleet during every bake and the termination wait."""

    alarms: list[Alarm] = Field(min_length=1, max_length=10)
    """1 to 10 alarms; any breach rolls back."""
    pollIntervalSeconds: Annotated[int, Field(ge=1, le=60)] = 5
    """How often the alarms are evaluated while a deployment is in flight."""
    onInconclusive: InconclusivePolicy = Field(default_factory=InconclusivePolicy)
    """What an evaluation without a clear answer does."""
    prometheus: PrometheusConnection | None = None
    """A Prometheus for this Endpoint (default: the operator's ``FLEETSHIFT_PROMETHEUS_URL``)."""

    model_config = _rules(
        cel(
            "self.alarms.all(a, self.alarms.exists_one(b, b.name == a.name))",
            "alarm names must be unique",
            ".alarms",
        ),
    )


MAX_WEBHOOKS = 10
WebhookType = Literal["PreRollout", "ConfirmPromotion", "PostRollout", "OnRollback"]
GATE_TYPES: tuple[WebhookType, ...] = ("PreRollout", "ConfirmPromotion")
"""Webhooks that hold a deployment until they answer 2xx."""
NOTIFICATION_TYPES: tuple[WebhookType, ...] = ("PostRollout", "OnRollback")
"""Webhooks that are told once that a deployment ended, and hold nothing."""


class Webhook(_Model):
    """A call out to an HTTP service during a deployment (Flagger-style, see
    ``docs/webhooks.md``). Gates (``PreRollout``, ``ConfirmPromotion``) hold the
    deployment until the service answers 2xx; notifications (``PostRollout``,
    ``OnRollback``) are sent once per deployment. A webhook that does not answer 2xx is
    never taken as a yes: the step holds (Inconclusive) and the deadline still applies."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=_NAME_RULE)]
    """The webhook's name, shown in status, Events and ``kubectl fleetshift watch``."""
    type: WebhookType
    """``PreRollout``: before green gets any traffic, once green is Ready.
    ``ConfirmPromotion``: before green is given all of the traffic (the last step).
    ``PostRollout``: after a deployment succeeded. ``OnRollback``: when a deployment
    is rolled back."""
    url: Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://[^\s/]+")]
    """Where the JSON payload is POSTed (``http://`` or ``https://``)."""
    timeoutSeconds: Annotated[int, Field(ge=1, le=60)] = 10
    """How long one attempt may take."""
    retries: Annotated[int, Field(ge=0, le=5)] = 2
    """Attempts after the first one when there is no answer (a timeout, a refused
    connection) or, for a notification, a 429, 502, 503 or 504."""
    secretRef: SecretKeyRef | None = None
    """A key of a Secret in the Endpoint's namespace: the payload is signed with it
    (HMAC-SHA256, ``X-Fleetshift-Signature``)."""
    metadata: dict[str, Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=16
    )
    """Free-form strings copied into the payload."""


class CapacityPolicy(_Model):
    """Capacity-aware cutover (``docs/capacity.md``): during a canary or linear step the
    operator records green's load per replica against its latency (and CPU, when
    Prometheus has it); before the step that gives green all of the traffic it computes
    the replicas green needs to carry the variant's whole load within that latency,
    raises green's HPA minimum (or its replicas, without an HPA) to that many, and holds
    the step until they are Ready. Pods the cluster cannot place hold the step, and
    status says why. AllAtOnce has no canary to learn from: it keeps blue's size."""

    enabled: bool = True
    """On by default for canary and linear steps; ``false`` keeps the plain rule (green
    as many Ready replicas as blue before its last step)."""
    headroomPercent: Annotated[int, Field(ge=0, le=400)] = 0
    """Extra load to plan for, on top of the load the variant carries (20 plans for a
    20% spike at the cutover)."""
    latencyQuantile: Annotated[float, Field(ge=0.5, le=0.999)] = 0.95
    """The latency quantile recorded with each sample (of ``fleetshift_model_latency_seconds``)."""
    maxLatencySeconds: Annotated[float, Field(gt=0, le=60)] | None = None
    """The latency green must keep at full load; default: the median of the quantiles
    green showed during the canary."""
    maxScalePercent: Annotated[int, Field(ge=100, le=1000)] = 200
    """The most green replicas the fit may ask for, in percent of blue's size (the HPA's
    ``maxReplicas`` also applies): a canary share far from green's final one samples
    green lightly, and the fit never extrapolates."""
    windowSeconds: Annotated[int, Field(ge=5, le=600)] = 30
    """The rate window of each sample; a step is sampled only once it has carried its
    share for one and a half windows, so a sample never mixes two splits."""


class DeploymentConfig(_Model):
    """How a change of the serving pods is rolled out. Blue/green is the default."""

    blueGreen: BlueGreen | None = None
    """Blue/green deployment (the default when neither policy is set)."""
    rolling: Rolling | None = None
    """Rolling deployment in batches."""
    autoRollback: AutoRollback | None = None
    """Alarms that roll a deployment back by themselves."""
    webhooks: list[Webhook] = Field(default_factory=list, max_length=MAX_WEBHOOKS)
    """Calls out during a deployment: gates that hold it until they answer 2xx, and
    notifications of its end (``docs/webhooks.md``). At most 10."""
    capacity: CapacityPolicy | None = None
    """Capacity-aware cutover for canary and linear steps (on by default; see
    ``docs/capacity.md``)."""

    model_config = _rules(
        cel(
            "!(has(self.blueGreen) && has(self.rolling))",
            "set either blueGreen or rolling, not both",
        ),
        cel(
            "!has(self.webhooks) || self.webhooks.all(w,"
            " self.webhooks.exists_one(x, x.name == w.name))",
            "webhook names must be unique",
            ".webhooks",
        ),
        cel(
            "!(has(self.capacity) && has(self.rolling))",
            "capacity applies to blueGreen canary and linear steps; a rolling deployment"
            " replaces pods in place and has no cutover to pre-scale for",
        ),
    )


# -- variants ------------------------------------------------------------------------------


class MultiModel(_Model):
    """Many models under one prefix (SageMaker's multi-model endpoint): a request names
    its model with ``X-Amzn-SageMaker-Target-Model`` (a path under ``model.uri``); each
    replica loads a model on its first request for it and evicts the least recently used.
    Adding a model is copying it under the prefix: no redeploy."""

    maxLoadedModels: Annotated[int, Field(ge=1, le=10000)] = 32
    """The most models one replica keeps in memory."""
    memoryBudgetMiB: Annotated[int, Field(ge=16, le=1048576)] = 1024
    """The memory one replica gives loaded models, estimated by their file sizes; the
    least recently used are evicted to stay within it. Keep it under the container's
    memory limit."""
    diskBudgetMiB: Annotated[int, Field(ge=64, le=1048576)] | None = None
    """The disk one replica gives downloaded and unpacked models, in its cache under
    ``/tmp`` (an emptyDir, on the node's ephemeral storage); the least recently used
    are deleted to stay within it, and downloaded again on their next load. A model
    bigger than it is refused with a 413 that says both sizes. Keep it within the
    ephemeral storage the pod may use (the emptyDir's ``sizeLimit``, the node's free
    disk). Unset: the runtime's default, 4096 MiB."""


class ModelSource(_Model):
    """Where the model artifact is and what it is."""

    uri: Annotated[str, Field(min_length=1, max_length=2048)]
    """``s3://``, ``http(s)://``, ``file://`` or an absolute path (a mounted volume)."""
    format: Literal["xgboost"] = "xgboost"
    """The model format. XGBoost JSON, UBJ, binary and SageMaker ``model.tar.gz``
    are recognised by the runtime."""
    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")] | None = None
    """Optional checksum the runtime verifies after download."""
    multiModel: MultiModel | None = None
    """Serve every model under ``uri`` (then a prefix), picked per request."""

    model_config = _rules(
        cel(
            "!has(self.multiModel) || !has(self.sha256)",
            "sha256 names one artifact; a multiModel prefix holds many, so it takes none",
        ),
        cel(
            "self.uri.startsWith('s3://') || self.uri.startsWith('http://')"
            " || self.uri.startsWith('https://') || self.uri.startsWith('file://')"
            " || self.uri.startsWith('/')",
            "model.uri must start with s3://, http://, https://, file:// or /",
            ".uri",
        ),
    )


class Autoscaling(_Model):
    """Horizontal autoscaling of a variant's active fleet (an HPA)."""

    minReplicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)]
    """The fewest replicas."""
    maxReplicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)]
    """The most replicas."""
    targetCPUUtilizationPercent: Annotated[int, Field(ge=1, le=100)] | None = None
    """Average CPU utilisation to hold, as a percentage of requests."""
    targetInvocationsPerReplica: Annotated[float, Field(gt=0, le=100000)] | None = None
    """Invocations per second per replica to hold (a Pods metric a Prometheus
    adapter serves as ``fleetshift_invocations_per_second``)."""
    scaleInStabilizationSeconds: Annotated[int, Field(ge=0, le=MAX_WAIT_SECONDS)] = 300
    """How long a lower recommendation must hold before scaling in."""
    scaleOutStabilizationSeconds: Annotated[int, Field(ge=0, le=MAX_WAIT_SECONDS)] = 0
    """How long a higher recommendation must hold before scaling out."""

    model_config = _rules(
        cel(
            "self.minReplicas <= self.maxReplicas",
            "autoscaling.minReplicas must not exceed maxReplicas",
        ),
        cel(
            "has(self.targetCPUUtilizationPercent) || has(self.targetInvocationsPerReplica)",
            "autoscaling needs targetCPUUtilizationPercent and/or targetInvocationsPerReplica",
        ),
    )


class EnvVar(_Model):
    """An environment variable for the serving container."""

    name: Annotated[
        str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    ]
    """The variable's name."""
    value: str | None = None
    """A literal value."""
    valueFrom: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """A Kubernetes ``EnvVarSource`` (secretKeyRef, configMapKeyRef, fieldRef...)."""


class Toleration(_Model):
    """A Kubernetes toleration for the serving pods."""

    key: str | None = None
    """The taint key."""
    operator: Literal["Exists", "Equal"] | None = None
    """``Exists`` or ``Equal``."""
    value: str | None = None
    """The taint value."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect."""
    tolerationSeconds: int | None = None
    """How long a NoExecute taint is tolerated."""


_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
_QUANTITY_PATTERN = rf"^(\+|-)?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"
QUANTITY = Field(
    json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": _QUANTITY_PATTERN}
)


class Resources(_Model):
    """CPU and memory for each serving container, as in a Pod spec."""

    requests: dict[str, Annotated[int | str, QUANTITY]] | None = None
    """Guaranteed resources, e.g. ``{cpu: 500m, memory: 512Mi}``."""
    limits: dict[str, Annotated[int | str, QUANTITY]] | None = None
    """Upper bounds."""


class Shadow(_Model):
    """A shadow variant (SageMaker's shadow test): it sees copies of production requests
    and its answers are thrown away, so it never reaches or slows a caller."""

    samplingPercent: Annotated[int, Field(ge=1, le=100)] = 100
    """The share of production requests copied to it."""


class DataCapture(_Model):
    """Sampled request and response pairs, written by the runtime as JSON lines in
    batches, never slowing or failing a request (``runtime/README.md``, "Data capture")."""

    destination: Annotated[
        str,
        Field(
            min_length=6,
            max_length=1024,
            pattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,62}(/.*)?|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?)$",
        ),
    ]
    """``s3://bucket/prefix`` (credentials from the variant's env, as for models), or
    ``pvc://claim/path``: a PersistentVolumeClaim in the Endpoint's namespace, mounted in
    the pods, and a folder in it."""
    samplingPercent: Annotated[int, Field(ge=1, le=100)] = 20
    """The share of requests answered 200 that are captured."""
    captureRequest: bool = True
    """Capture each request's body."""
    captureResponse: bool = True
    """Capture each response's body."""
    contentTypes: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=127)]], Field(max_length=10)
    ] = Field(default_factory=list)
    """Capture only requests of these media types (e.g. ``text/csv``); empty: all."""

    model_config = _rules(
        cel(
            "self.captureRequest || self.captureResponse",
            "data capture needs captureRequest or captureResponse",
        ),
    )


class DisruptionBudget(_Model):
    """The PodDisruptionBudget of each of the variant's fleets: how many of its pods a
    node drain or an eviction may take at once."""

    enabled: bool = True
    """False: no PodDisruptionBudget (evictions are not limited)."""
    maxUnavailable: Annotated[
        int | str,
        Field(
            json_schema_extra={
                "x-kubernetes-int-or-string": True,
                "pattern": r"^([0-9]|[1-9][0-9]|100)%$",
                "minimum": 0,
            }
        ),
    ] = 1
    """Pods of one fleet that may be disrupted at once: a count (0 or more), or a
    percentage of the fleet such as ``"25%"``."""


class Spread(_Model):
    """How a fleet's pods spread over nodes and zones (topology spread constraints, at
    most one pod of difference). SageMaker spreads instances over Availability Zones."""

    enabled: bool = True
    """False: no spreading (the scheduler places pods as it likes)."""
    whenUnsatisfiable: Literal["ScheduleAnyway", "DoNotSchedule"] = "ScheduleAnyway"
    """``ScheduleAnyway`` (default) prefers spreading; ``DoNotSchedule`` requires it,
    and a pod that cannot be spread waits (shown in ``Degraded``)."""


RUNTIME_PORTS = (8080, 9090)
"""The runtime container's inference and metrics ports (``manifests.HTTP_PORT`` and
``METRICS_PORT``; a test holds them equal): no pipeline step may listen on them."""
RUNTIME_CONTAINER = "runtime"
"""The name of the runtime's container in every serving pod."""
MIN_PIPELINE_STEPS, MAX_PIPELINE_STEPS = 2, 5
_MEDIA_TYPE = r"^[-!#$&^_.+a-zA-Z0-9]+/[-!#$&^_.+*a-zA-Z0-9]+( *;.*)?$"


class PipelineStep(_Model):
    """One step of a serial inference pipeline (``docs/pipelines.md``): a container of the
    serving pod that serves SageMaker's ``GET /ping`` and ``POST /invocations`` on
    ``127.0.0.1:<port>`` (the port is given to it in ``SAGEMAKER_BIND_TO_PORT``), or, with
    no image, the Fleetshift runtime serving the variant's model."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
    """The step's name: its container's name, and the name errors and the per-step
    latency metric give it (lower-case letters, digits and '-')."""
    image: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    """The step's image; none: this step is the Fleetshift runtime and the variant's
    model (``image``, ``env`` and ``resources`` of the variant)."""
    port: Annotated[int, Field(ge=1024, le=65535)] | None = None
    """The port the step's container serves on the pod's loopback (1024-65535, not the
    runtime's 8080 or 9090). Required with ``image``."""
    contentType: Annotated[str, Field(max_length=127, pattern=_MEDIA_TYPE)] | None = None
    """The Content-Type the step is sent (default: the type of what it receives: the
    caller's request for the first step, else the previous step's answer's)."""
    accept: Annotated[str, Field(max_length=127, pattern=_MEDIA_TYPE)] | None = None
    """The Accept the step is sent (default: the caller's for the last step, none for the
    others)."""
    env: list[EnvVar] | None = Field(default=None, max_length=64)
    """Environment of the step's container."""
    resources: Resources | None = None
    """CPU and memory of the step's container."""

    model_config = _rules(
        cel(
            "has(self.image) == has(self.port)",
            "a pipeline step with an image needs the port it serves /ping and /invocations"
            " on (1024-65535); the runtime's step (no image) takes no port",
        ),
        cel(
            "has(self.image) || (!has(self.env) && !has(self.resources))",
            "the runtime's step (no image) takes its env and resources from the variant's"
            " env and resources",
        ),
        cel(
            "!has(self.port) || (self.port != 8080 && self.port != 9090)",
            "ports 8080 and 9090 are the runtime's (inference and metrics); give this step"
            " another port",
            ".port",
        ),
        cel(
            f"!has(self.image) || self.name != '{RUNTIME_CONTAINER}'",
            f"the container {RUNTIME_CONTAINER!r} is the Fleetshift runtime's; give this step"
            " another name",
            ".name",
        ),
    )


class Variant(_Model):
    """A production variant: one model served by one fleet of replicas."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=VARIANT_NAME)]
    """The variant's name, as SageMaker allows it: letters, digits and '-' (not first or
    last), at most 63 characters, e.g. ``AllTraffic``. Object names use it in lower case,
    so two variants may not differ only in letter case."""
    model: ModelSource
    """The model to serve."""
    image: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    """The serving image (default: the Fleetshift runtime)."""
    replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 1
    """The initial instance count."""
    resources: Resources | None = None
    """CPU and memory per replica."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    """Extra environment for the serving container."""
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    """Node labels the serving pods must match."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Taints the serving pods tolerate."""
    podAnnotations: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=32
    )
    """Annotations on the serving pods (for a service mesh, a log shipper, or the local
    demo's launcher). A change rolls out like any other change of the pods."""
    weight: Annotated[int, Field(ge=0, le=1000)] = 1
    """The variant's relative share of the endpoint's traffic (A/B); a shadow's is not
    used (it takes no share, only copies)."""
    autoscaling: Autoscaling | None = None
    """Autoscaling of this variant's fleet."""
    spread: Spread = Field(default_factory=Spread)
    """Spreading of each fleet's pods over nodes and zones (default: preferred)."""
    disruptionBudget: DisruptionBudget = Field(default_factory=DisruptionBudget)
    """Each fleet's PodDisruptionBudget (default: one pod at a time)."""
    dataCapture: DataCapture | None = None
    """Capture sampled request and response pairs. A change rolls out like any other
    change of the pods."""
    shadow: Shadow | None = None
    """Make this a shadow: copies of production requests, answers discarded. It is
    deployed and rolled out like any variant, but serves no caller. Mirrored by the
    GatewayAPI router (an ``HTTPRoute`` ``RequestMirror``)."""
    pipeline: (
        Annotated[
            list[PipelineStep],
            Field(min_length=MIN_PIPELINE_STEPS, max_length=MAX_PIPELINE_STEPS),
        ]
        | None
    ) = None
    """A serial inference pipeline (SageMaker's): 2 to 5 steps called in order in each
    pod, the answer of one the request of the next; exactly one step has no image: the
    runtime and this variant's model. The pipeline is part of the pod, so a change rolls
    out, bakes and rolls back as one revision (``docs/pipelines.md``)."""

    model_config = _rules(
        cel(
            "!has(self.pipeline) || (size(self.pipeline) >= 2 && size(self.pipeline) <= 5"
            " && self.pipeline.exists_one(s, !has(s.image)))",
            "a pipeline has 2 to 5 steps, exactly one of them without an image (the runtime"
            " serving this variant's model); the others are containers with an image and a"
            " port",
            ".pipeline",
        ),
        cel(
            "!has(self.pipeline)"
            " || self.pipeline.all(s, self.pipeline.exists_one(t, t.name == s.name))",
            "pipeline step names must be unique",
            ".pipeline",
        ),
        cel(
            "!has(self.pipeline) || self.pipeline.all(s, !has(s.port)"
            " || self.pipeline.exists_one(t, has(t.port) && t.port == s.port))",
            "pipeline step ports must be unique: the steps share the pod's network",
            ".pipeline",
        ),
    )


# -- traffic routers -------------------------------------------------------------------------


class ParentReference(_Model):
    """A Gateway (or other parent) the ``HTTPRoute`` attaches to."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The parent's name."""
    namespace: str | None = None
    """The parent's namespace (default: the Endpoint's)."""
    sectionName: str | None = None
    """A listener of the parent."""
    group: str | None = None
    """The parent's API group (default ``gateway.networking.k8s.io``)."""
    kind: str | None = None
    """The parent's kind (default ``Gateway``)."""


class GatewayAPIRouting(_Model):
    """Settings of the Gateway API router."""

    parentRefs: list[ParentReference] = Field(min_length=1, max_length=32)
    """Where the ``HTTPRoute`` attaches."""
    hostnames: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list, max_length=16
    )
    """Hostnames the route serves."""
    mirroring: Literal["Gateway", "Runtime"] = "Gateway"
    """Who copies requests to a shadow variant. ``Gateway``: the route's ``RequestMirror``
    filter (Gateway API Extended support: check that your implementation has it; Traefik
    3.6 and 3.7 accept the filter and then answer every request on the route with a 500).
    ``Runtime``: the production pods copy them, as with the Replicas router, and compare
    each shadow answer with production's (the paired comparison and the
    ``ShadowDisagreement`` alarm need this; ``docs/gateway-api.md``)."""


class Traffic(_Model):
    """How requests reach the fleets."""

    router: Literal["Replicas", "GatewayAPI"] = "Replicas"
    """``Replicas``: one Service over both fleets; the share follows Ready capacity.
    ``GatewayAPI``: an ``HTTPRoute`` with exact weights per fleet."""
    gatewayAPI: GatewayAPIRouting | None = None
    """Required when router is ``GatewayAPI``."""

    model_config = _rules(
        cel(
            "self.router != 'GatewayAPI' || has(self.gatewayAPI)",
            "router GatewayAPI needs gatewayAPI.parentRefs",
        ),
        cel(
            "self.router == 'GatewayAPI' || !has(self.gatewayAPI)",
            "gatewayAPI applies only to router GatewayAPI",
        ),
    )


# -- the spec --------------------------------------------------------------------------------

_BG = "self.deploymentConfig.blueGreen"
_ROUTING = f"{_BG}.trafficRouting"
_STEP = f"{_ROUTING}.linearStepSize"
_ROLLING = "self.deploymentConfig.rolling"
# Optional blocks are absent unless written (the apiserver defaults fields only inside an
# object that exists), so every rule guards each level it reads with has().
_HAS_BG = f"has(self.deploymentConfig) && has({_BG})"
_HAS_ROUTING = f"{_HAS_BG} && has({_ROUTING})"
_HAS_ROLLING = f"has(self.deploymentConfig) && has({_ROLLING})"
# Number of linear steps for a variant v: ceil(100/p) for a percentage,
# ceil(replicas/n) for an instance count (planning/steps.py is the one copy of the
# arithmetic; a test holds these expressions to it).
_LINEAR_STEPS = (
    f"({_STEP}.type == 'CapacityPercent' ? (100 + {_STEP}.value - 1) / {_STEP}.value"
    f" : (v.replicas + {_STEP}.value - 1) / {_STEP}.value)"
)
_STEPS = (
    f"({_ROUTING}.type == 'AllAtOnce' ? 1 : ({_ROUTING}.type == 'Canary' ? 2 : {_LINEAR_STEPS}))"
)
_WAITS = (
    f"((has({_ROUTING}) ? {_STEPS} * {_ROUTING}.waitIntervalSeconds : 0)"
    f" + {_BG}.terminationWaitSeconds)"
)


class EndpointSpec(_Model):
    """What a team asks for: variants, how changes roll out, and how traffic flows.

    The smallest Endpoint is one variant with a model; everything else has a default.
    """

    variants: list[Variant] = Field(min_length=1, max_length=10)
    """The production variants (at least one). Each is deployed on its own: changing one
    variant's model rolls out that variant alone."""
    deploymentConfig: DeploymentConfig = Field(default_factory=DeploymentConfig)
    """How changes roll out (default: blue/green, all at once)."""
    traffic: Traffic = Field(default_factory=Traffic)
    """How requests reach the fleets."""

    model_config = _rules(
        cel(
            "self.variants.all(v, self.variants.exists_one(w, w.name == v.name))",
            "variant names must be unique",
            ".variants",
        ),
        cel(
            "self.variants.all(v, self.variants.exists_one(w,"
            " w.name.lowerAscii() == v.name.lowerAscii()))",
            "variant names must differ in more than letter case: Kubernetes object names"
            " use them in lower case (e.g. AllTraffic and alltraffic would share a fleet)",
            ".variants",
        ),
        cel(
            "self.variants.exists(v, !has(v.weight) || v.weight > 0)",
            "at least one variant needs a weight above 0 to take the traffic",
            ".variants",
        ),
        cel(
            "self.variants.exists(v, !has(v.shadow) && (!has(v.weight) || v.weight > 0))",
            "a shadow only sees copies: at least one variant that is not a shadow must take"
            " the traffic (a weight above 0)",
            ".variants",
        ),
        cel(
            f"!({_HAS_ROUTING} && has({_ROUTING}.canarySize))"
            f" || {_ROUTING}.canarySize.type != 'InstanceCount'"
            f" || self.variants.all(v, {_ROUTING}.canarySize.value * 2 <= v.replicas)",
            "canarySize must be at most 50% of the fleet: an InstanceCount canary needs"
            " at least twice as many replicas",
        ),
        cel(
            f"!({_HAS_ROUTING} && has({_STEP})) || {_STEP}.type != 'InstanceCount'"
            f" || self.variants.all(v, {_STEP}.value * 10 <= v.replicas * 5"
            f" && {_STEP}.value * 10 >= v.replicas)",
            "linearStepSize must be between 10% and 50% of the fleet",
        ),
        cel(
            f"!({_HAS_BG})"
            f" || self.variants.all(v, {_BG}.maximumExecutionTimeoutSeconds > {_WAITS})",
            "maximumExecutionTimeoutSeconds must exceed the sum of the waits"
            " (waitIntervalSeconds after every traffic step, plus terminationWaitSeconds)",
        ),
        cel(
            f"!({_HAS_ROLLING})"
            f" || {_ROLLING}.maximumBatchSize.type != 'InstanceCount'"
            f" || self.variants.all(v, {_ROLLING}.maximumBatchSize.value * 2 <= v.replicas)",
            "maximumBatchSize must be at most 50% of the fleet",
        ),
    )


# -- status ----------------------------------------------------------------------------------

Phase = Literal[
    "Creating",
    "InService",
    "Updating",
    "RollingBack",
    "Failed",
    "UpdateRollbackFailed",
    "OutOfService",
    "Deleting",
]
VariantPhase = Literal[
    "Creating",
    "InService",
    "Updating",
    "RollingBack",
    "Failed",
    "UpdateRollbackFailed",
    "OutOfService",
]


class Condition(_Status):
    """A ``metav1.Condition``."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    lastTransitionTime: Timestamp
    observedGeneration: int | None = None


class FleetStatus(_Status):
    """One fleet (a Deployment) of one variant, as last observed."""

    revision: str
    """The pod-template revision the fleet serves."""
    deployment: str
    """The Deployment's name."""
    variant: str | None = None
    """The variant it serves."""
    role: Literal["blue", "green"] | None = None
    """``blue`` serves the variant's active revision, ``green`` the candidate."""
    replicas: int = 0
    """Desired replicas."""
    readyReplicas: int = 0
    """Ready replicas."""
    trafficPercent: int = 0
    """The share of the variant's traffic the data plane gives this fleet: serving pods
    (Replicas router) or backend weights (GatewayAPI router)."""
    requestedTrafficPercent: int = 0
    """The share of the variant's traffic the current step asks for."""
    servingReplicas: int | None = None
    """Pods in service (Replicas router)."""


class StepStatus(_Status):
    """Where a deployment is in its sequence of traffic steps."""

    stage: Literal["Provisioning", "Baking", "TerminationWait", "RollingBack"] = "Provisioning"
    """``Provisioning``: green capacity is starting; ``Baking``: a traffic step is
    held while alarms watch; ``TerminationWait``: green has all traffic and blue is
    kept for a possible rollback; ``RollingBack``: blue capacity is being restored."""
    index: int = 0
    """The current traffic step, 1-based (0 while provisioning)."""
    total: int = 0
    """The number of traffic steps of this deployment."""
    greenPercent: int = 0
    """The green share this step holds."""
    startedAt: Timestamp | None = None
    """When the step began (RFC 3339)."""
    bakeUntil: Timestamp | None = None
    """When the step's wait ends (RFC 3339)."""
    fleetSize: int | None = None
    """Blue's replicas when the deployment started (a rolling deployment shrinks
    blue, and a rollback restores it to this size)."""
    rollbackReplicas: int | None = None
    """Blue replicas a rolling rollback restores up to in the current batch."""


class DeploymentRecord(_Status):
    """One finished deployment."""

    variant: str | None = None
    """The variant deployed."""
    revision: str
    """The revision the deployment tried to reach."""
    fromRevision: str | None = None
    """The revision it started from."""
    outcome: Literal["Succeeded", "RolledBack", "Superseded", "Failed"]
    """How it ended."""
    reason: str = ""
    """Why, in a sentence."""
    startedAt: Timestamp
    """When it started."""
    finishedAt: Timestamp
    """When it ended."""


class AlarmStatus(_Status):
    """The last evaluation of one alarm."""

    name: str
    """The alarm's name."""
    verdict: Literal["Healthy", "Breaching", "Inconclusive", "Error"]
    """The verdict of the last evaluation."""
    value: float | None = None
    """The value that decided it (the worst datapoint), if any."""
    reason: str = ""
    """Why, in a sentence."""
    evaluatedAt: Timestamp
    """When it was evaluated."""


class WebhookStatus(_Status):
    """One webhook of one revision: a gate's last answer, or a notification's delivery.

    A gate is ``Pending`` from the moment the deployment needs it until it answers 2xx
    (``Passed``), and is not called again for that revision after (a restarted operator
    reads this). A notification is ``Pending`` until it is sent (``Delivered``, or
    ``Failed`` once its attempts are spent)."""

    name: str
    """The webhook's name."""
    type: WebhookType
    """PreRollout, ConfirmPromotion, PostRollout or OnRollback."""
    revision: str
    """The revision the deployment was deploying."""
    fromRevision: str | None = None
    """The revision it started from."""
    state: Literal["Pending", "Passed", "Delivered", "Failed"] = "Pending"
    """``Pending``: to be called; ``Passed``: a gate answered 2xx; ``Delivered``: a
    notification answered 2xx; ``Failed``: a notification got no 2xx after all its
    attempts."""
    verdict: Literal["Healthy", "Breaching", "Inconclusive", "Error"] | None = None
    """The verdict of the last call: Healthy only for a 2xx."""
    statusCode: int | None = None
    """The HTTP status of the last answer, if there was one."""
    reason: str = ""
    """Why, in a sentence (the answer, the timeout, the missing Secret)."""
    calls: int = 0
    """Calls made so far (each with up to ``1 + retries`` attempts)."""
    outcome: str | None = None
    """For a notification: Succeeded or RolledBack, and why, as sent."""
    requestedAt: Timestamp
    """When the deployment first needed it."""
    calledAt: Timestamp | None = None
    """When it was last called."""


class CapacitySample(_Status):
    """Green's load per replica against its latency and CPU, over one rate window."""

    at: Timestamp
    """When the sample was taken (the end of its window)."""
    loadPerReplica: float
    """Requests per second per serving green replica."""
    replicas: int
    """Green replicas serving while it was taken."""
    latencySeconds: float | None = None
    """Green's latency quantile (``capacity.latencyQuantile``); None without data."""
    cpuCoresPerReplica: float | None = None
    """Green's CPU per replica in cores, when Prometheus has container CPU."""


class CapacityStatus(_Status):
    """The capacity-aware cutover of one deployment: the fit and the decision."""

    revision: str
    """The green revision it is about."""
    samples: list[CapacitySample] = Field(default_factory=list, max_length=20)
    """The last samples of green's canary steps, oldest first."""
    load: float | None = None
    """Requests per second the whole variant carried at the last observation."""
    latencyBoundSeconds: float | None = None
    """The latency green must keep at full load."""
    perReplica: float | None = None
    """Requests per second one green replica was seen to carry within that latency."""
    neededReplicas: int | None = None
    """Green replicas the full load needs (after headroom, within maxReplicas)."""
    readyReplicas: int = 0
    """Green replicas Ready when the decision was made."""
    pendingReplicas: int = 0
    """Green pods waiting to be placed or started."""
    estimated: bool = False
    """True when no usable sample was seen and ``neededReplicas`` is blue's size."""
    capped: bool = False
    """True when maxReplicas is below what the load needs."""
    verdict: Literal["Healthy", "Inconclusive"] | None = None
    """Healthy: the fit is measured and green has the replicas Ready. Inconclusive: the
    fit is an estimate, or green is still scaling (the step holds)."""
    decision: Literal["Measuring", "PreScaling", "Holding", "Ready"] = "Measuring"
    """Measuring (canary steps), PreScaling (replicas raised, waiting for them),
    Holding (pods cannot be placed), Ready (green has them: the step may go)."""
    reason: str = ""
    """The fit and the decision in words, as ``kubectl fleetshift watch`` shows them."""
    holdingSince: Timestamp | None = None
    """When the step to 100% started waiting for green's capacity (None: it never
    waited); kept once it goes, so ``decidedAt - holdingSince`` is the hold."""
    decidedAt: Timestamp | None = None
    """When the decision was last updated (once Ready: when the step could go)."""


class Rollout(_Status):
    """The rollout fields a variant has and the endpoint's top level repeats."""

    activeRevision: str | None = None
    """The revision of the blue (serving) fleet."""
    candidateRevision: str | None = None
    """The revision being deployed to the green fleet, if any."""
    greenTrafficPercent: int = 0
    """The share of the variant's traffic its green fleet carries, as the data plane is
    configured (``step.greenPercent`` is what the step asks for)."""
    step: StepStatus | None = None
    """Where the current deployment is."""
    deploymentStartedAt: Timestamp | None = None
    """When the current deployment started."""
    deadline: Timestamp | None = None
    """When the current deployment rolls back if it has not finished."""
    rollbackReason: str | None = None
    """Why the current deployment is being rolled back (kept until the rollback is done)."""
    rolledBackRevision: str | None = None
    """A revision that was rolled back; it is not tried again until the spec changes
    or a retry is requested."""
    lastDeployment: DeploymentRecord | None = None
    """The last finished deployment."""
    alarms: list[AlarmStatus] = Field(default_factory=list, max_length=10)
    """The last verdict of each alarm, while a deployment is watched."""
    inconclusiveStreak: int = 0
    """Inconclusive evaluations in a row (for ``onInconclusive: RollBack``)."""
    rollbackCause: AlarmStatus | None = None
    """The alarm evaluation that caused the last automatic rollback, if one did."""
    capacity: CapacityStatus | None = None
    """The capacity-aware cutover of the current (or last) deployment."""


class VariantStatus(Rollout):
    """One variant's rollout: each variant has its own revision and its own deployments."""

    name: str
    """The variant's name."""
    phase: VariantPhase | None = None
    """Creating, InService, Updating, RollingBack, Failed, UpdateRollbackFailed or
    OutOfService (its active fleet has no Ready replica)."""
    weight: int = 0
    """The weight it was last planned with (kept while a removed variant drains)."""
    requestedTrafficPercent: int = 0
    """Its share of the endpoint's traffic by weight, among the variants that serve."""
    trafficPercent: int = 0
    """Its share of the endpoint's traffic as the data plane is configured."""
    readyReplicas: int = 0
    """Ready replicas of its active fleet."""
    waitingFor: str | None = None
    """What its new fleet's pods are waiting for (Unschedulable, a quota, an image pull)."""
    webhooks: list[WebhookStatus] = Field(default_factory=list, max_length=2 * MAX_WEBHOOKS)
    """Its webhooks of the current (or last) deployment, and notifications not yet
    sent for an earlier one."""


class EndpointStatus(Rollout):
    """What the operator observed and decided. All rollout state lives here.

    ``variants`` holds each variant's rollout. The rollout fields at the top level
    (those of :class:`Rollout`) repeat those of one variant, named by ``variant``: the
    first with a deployment in flight, else the first in the spec, so a one-variant
    Endpoint reads as before.
    """

    phase: Phase | None = None
    """Creating, InService, Updating, RollingBack, Failed, UpdateRollbackFailed,
    OutOfService, Deleting."""
    observedGeneration: int | None = None
    """The ``metadata.generation`` this status was decided for."""
    variant: str | None = None
    """The variant the top-level rollout fields describe."""
    variants: list[VariantStatus] = Field(default_factory=list)
    """Every variant's rollout, in spec order (a removed variant last, while it drains)."""
    fleets: dict[str, FleetStatus] = Field(default_factory=dict)
    """Fleets by Deployment name, as last observed."""
    paused: bool = False
    """True while a pause holds the deployment at its step."""
    pausedAt: Timestamp | None = None
    """When the pause began; waits and the deadline are extended by its length."""
    history: list[DeploymentRecord] = Field(default_factory=list, max_length=HISTORY_LIMIT)
    """The last 10 finished deployments, newest last."""
    handledActions: dict[str, str] = Field(default_factory=dict)
    """Request ids of abort/promote/retry annotations already acted on."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing and Degraded."""


class Endpoint(_Model):
    """The whole object, as the apiserver stores it."""

    apiVersion: Literal["fleetshift.dev/v1alpha1"] = "fleetshift.dev/v1alpha1"
    kind: Literal["Endpoint"] = "Endpoint"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: EndpointSpec
    status: EndpointStatus | None = None
