"""The guardrail walkthrough, end to end, with real processes.

For each traffic policy (canary, then linear) the story:

1. creates an Endpoint serving the baseline churn model on 3 replicas and sends it
   steady traffic;
2. updates it to the incompatible model: the green fleet turns Ready, takes its
   first share of traffic, fails it with 5xx, the 5xx alarm fires and the operator
   rolls traffic back to blue by itself;
3. updates it to the valid model with the same policy: every step bakes clean and
   the deployment succeeds.

The shadow story (``--policies shadow``, real node only: production pods read the shadows
ConfigMap from a mounted volume and reach the shadow through its Service's DNS name) creates
an Endpoint whose production variant serves the baseline model beside a shadow variant
serving it too, then deploys the disagreeing model to the shadow: production copies every
request to the shadow's green fleet and compares the two answers, the
``ShadowDisagreement`` alarm breaches and the shadow's deployment is rolled back, with no
caller ever answered by it.

The gates story (``--policies gates``) shows the two gates no threshold alarm replaces. Its
Endpoint adds a drift alarm (green's predictions against blue's) and a ``ConfirmPromotion``
webhook to the canary's alarms, every call signed, answered by the demo's approver
(``demo/approver.py``). It updates the Endpoint to the shifted model, which answers every
request with a 200 and calls far more customers churners: no 5xx or latency alarm sees it, the
drift alarm breaches and the deployment rolls back. Then it updates it to the valid model: the
canary bakes clean, the step to 100% waits for the approver (503 "waiting for approval" until
it approves), and the deployment succeeds.

Everything is real: the control plane with kwok nodes, the operator process, a
Prometheus that finds the pods through Kubernetes service discovery, one runtime
process per serving pod (the launcher), and a load generator that follows the
Service's EndpointSlices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from lightkube import Client, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Namespace, Secret

from fleetshift_devcluster.cluster import CUSTOM_STATUS, LocalCluster, free_port
from fleetshift_devcluster.crds import install_crds
from fleetshift_devcluster.demo.approver import SIGNING_KEY, Approver, ApproverCall
from fleetshift_devcluster.demo.launcher import KWOK_STATUS, PodLauncher
from fleetshift_devcluster.demo.loadgen import LoadGenerator
from fleetshift_devcluster.demo.models import FEATURES, DemoModels, build_models
from fleetshift_devcluster.demo.progress import Progress
from fleetshift_devcluster.demo.stopping import StopRequest
from fleetshift_devcluster.demo.timeline import (
    Marker,
    ScenarioSummary,
    StatusSample,
    calculate_markers,
    parse_time,
    summarize,
)
from fleetshift_devcluster.processes import ManagedProcess, stop_processes
from fleetshift_devcluster.prometheus import LocalPrometheus

NAMESPACE = "demo"
GROUP, VERSION, KIND, PLURAL = "fleetshift.dev", "v1alpha1", "Endpoint", "endpoints"
EndpointResource = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)
SETTLED_PHASES = ("InService", "Failed", "UpdateRollbackFailed")
DRIFT_ALARM = "prediction-drift"
"""The gates story's drift alarm."""
WEBHOOK_SECRET = "demo-webhooks"  # noqa: S105 - the name of a Secret, not its key
"""The Secret whose ``hmac`` key signs the gates story's webhook calls."""


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """The knobs of one run (the command-line flags)."""

    output: Path
    canary_wait: int = 30
    linear_wait: int = 20
    termination_wait: int = 15
    rate: float = 40.0
    settle_seconds: float = 6.0
    policies: tuple[str, ...] = ("Canary", "Linear")
    shadow_threshold: float = 20.0
    """The ``ShadowDisagreement`` alarm's threshold: % of compared rows whose class differs."""
    drift_threshold: float = 0.25
    """The gates story's drift alarm: the population stability index it breaches above
    (the valid model's is about 0.03 and the shifted one's about 0.7)."""
    drift_min_samples: int = 300
    """Predictions each of green and blue must have made before the drift alarm judges:
    fewer hold the step (the index of 300 against 300 of the same model stays under 0.11
    in 99 runs of 100)."""
    approve_after: float = 10.0
    """Seconds the approver answers 503 after it is first asked to confirm a promotion."""


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One update of the story."""

    name: str
    endpoint: str
    policy: str
    model: str  # "baseline", "incompatible", "valid", "disagreeing" or "shifted"
    expected: str  # "InService" (the baseline), "RolledBack" or "Succeeded"
    variant: str | None = None
    """The variant whose deployment the scenario follows and whose model it changes (the
    shadow's); None: the Endpoint's only variant."""


def calculate_story(policies: tuple[str, ...]) -> list[Scenario]:
    """The scenarios in the order they run.

    >>> [s.name for s in calculate_story(("Canary",))]
    ['canary-baseline', 'canary-rollback', 'canary-success']
    >>> [(s.name, s.variant) for s in calculate_story(("Shadow",))]
    [('shadow-baseline', 'shadow'), ('shadow-caught', 'shadow')]
    >>> [(s.name, s.model, s.expected) for s in calculate_story(("Gates",))]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('gates-baseline', 'baseline', 'InService'), ('gates-drift', 'shifted', 'RolledBack'),
     ('gates-approved', 'valid', 'Succeeded')]
    """
    scenarios = []
    for policy in policies:
        prefix = policy.lower()
        endpoint = f"churn-{prefix}"
        if policy == "Shadow":
            scenarios += [
                Scenario("shadow-baseline", endpoint, policy, "baseline", "InService", "shadow"),
                Scenario("shadow-caught", endpoint, policy, "disagreeing", "RolledBack", "shadow"),
            ]
            continue
        if policy == "Gates":
            scenarios += [
                Scenario("gates-baseline", endpoint, policy, "baseline", "InService"),
                Scenario("gates-drift", endpoint, policy, "shifted", "RolledBack"),
                Scenario("gates-approved", endpoint, policy, "valid", "Succeeded"),
            ]
            continue
        scenarios += [
            Scenario(f"{prefix}-baseline", endpoint, policy, "baseline", "InService"),
            Scenario(f"{prefix}-rollback", endpoint, policy, "incompatible", "RolledBack"),
            Scenario(f"{prefix}-success", endpoint, policy, "valid", "Succeeded"),
        ]
    return scenarios


def get_endpoint(name: str, model_uri: str, policy: str, options: DemoOptions) -> dict[str, Any]:
    """The Endpoint manifest of the story: 3 replicas, a canary of one instance or
    linear steps of a third, alarms on the green fleet's 5xx share and p99, and a
    comparison of its 5xx share with blue's that holds each step until the traffic shows
    green is not worse.

    >>> e = get_endpoint("churn", "file:///m.tar.gz", "Linear", DemoOptions(Path(".")))
    >>> e["spec"]["deploymentConfig"]["blueGreen"]["trafficRouting"]["linearStepSize"]
    {'type': 'CapacityPercent', 'value': 34}
    >>> e["spec"]["variants"][0]["podAnnotations"]
    {'kwok.x-k8s.io/status': 'custom'}
    """
    if policy == "Canary":
        routing: dict[str, Any] = {
            "type": "Canary",
            "canarySize": {"type": "InstanceCount", "value": 1},
            "waitIntervalSeconds": options.canary_wait,
        }
    else:
        routing = {
            "type": "Linear",
            "linearStepSize": {"type": "CapacityPercent", "value": 34},
            "waitIntervalSeconds": options.linear_wait,
        }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "variants": [
                {
                    "name": "main",
                    "model": {"uri": model_uri},
                    "replicas": 3,
                    "env": [{"name": "FLEETSHIFT_NUM_FEATURES", "value": str(FEATURES)}],
                    # kwok leaves these pods' status to the demo's launcher
                    "podAnnotations": {KWOK_STATUS: CUSTOM_STATUS},
                }
            ],
            "deploymentConfig": {
                "blueGreen": {
                    "trafficRouting": routing,
                    "terminationWaitSeconds": options.termination_wait,
                    "maximumExecutionTimeoutSeconds": 900,
                },
                "autoRollback": {
                    "pollIntervalSeconds": 1,
                    "alarms": [
                        {
                            "name": "green-5xx",
                            "template": {
                                "kind": "GreenErrorRate",
                                "threshold": 5,
                                "periodSeconds": 2,
                                "evaluationPeriods": 3,
                                "datapointsToAlarm": 2,
                            },
                        },
                        {
                            "name": "green-p99",
                            "template": {
                                "kind": "GreenLatencyP99",
                                "threshold": 500,
                                "periodSeconds": 2,
                                "evaluationPeriods": 3,
                                "datapointsToAlarm": 3,
                            },
                        },
                        {
                            # Ships a step only once the traffic shows green is not
                            # worse than blue: a canary of thin traffic holds.
                            "name": "not-worse-than-blue",
                            "comparison": {"metric": "ErrorRate", "marginPercent": 5},
                        },
                    ],
                },
            },
        },
    }


def get_gates_endpoint(
    name: str, model_uri: str, options: DemoOptions, approver: Approver
) -> dict[str, Any]:
    """The gates story's Endpoint: the canary's, plus a drift alarm on green's predictions
    and three webhooks to the demo's approver, each call signed with the key of the
    Secret :data:`WEBHOOK_SECRET`.

    >>> a = Approver(approve_after=10)
    >>> a.start()
    >>> e = get_gates_endpoint("churn", "file:///m", DemoOptions(Path(".")), a)
    >>> e["spec"]["deploymentConfig"]["autoRollback"]["alarms"][-1]
    {'name': 'prediction-drift', 'drift': {'threshold': 0.25, 'minSamples': 300}}
    >>> [(w["type"], w["url"].rsplit("/", 1)[1]) for w in e["spec"]["deploymentConfig"]["webhooks"]]
    [('ConfirmPromotion', 'confirm'), ('PostRollout', 'announce'), ('OnRollback', 'page')]
    >>> a.stop()
    """
    endpoint = get_endpoint(name, model_uri, "Canary", options)
    config = endpoint["spec"]["deploymentConfig"]
    config["autoRollback"]["alarms"].append(
        {
            "name": DRIFT_ALARM,
            "drift": {
                "threshold": options.drift_threshold,
                "minSamples": options.drift_min_samples,
            },
        }
    )
    signed = {"secretRef": {"name": WEBHOOK_SECRET, "key": "hmac"}}
    config["webhooks"] = [
        {"name": "approve", "type": "ConfirmPromotion", "url": approver.url("/confirm"), **signed},
        {"name": "announce", "type": "PostRollout", "url": approver.url("/announce"), **signed},
        {"name": "page", "type": "OnRollback", "url": approver.url("/page"), **signed},
    ]
    return endpoint


def get_shadow_endpoint(
    name: str, production_uri: str, shadow_uri: str, options: DemoOptions
) -> dict[str, Any]:
    """The shadow story's Endpoint: production (3 replicas of the baseline model) and a
    shadow variant of one replica that gets a copy of every request production answers.
    A deployment of the shadow bakes for ``canary_wait`` seconds while its alarms watch
    it: its 5xx share and the share of compared rows whose predicted class it answered
    differently from production (``ShadowDisagreement``).

    >>> e = get_shadow_endpoint("churn", "file:///a", "file:///b", DemoOptions(Path(".")))
    >>> [(v["name"], v.get("shadow")) for v in e["spec"]["variants"]]
    [('main', None), ('shadow', {'samplingPercent': 100})]
    >>> [a["template"]["kind"] for a in e["spec"]["deploymentConfig"]["autoRollback"]["alarms"]]
    ['GreenErrorRate', 'ShadowDisagreement']
    """
    production = get_endpoint(name, production_uri, "Canary", options)
    main = production["spec"]["variants"][0]
    shadow = {
        **main,
        "name": "shadow",
        "model": {"uri": shadow_uri},
        "replicas": 1,
        "shadow": {"samplingPercent": 100},
    }
    alarm = {"periodSeconds": 2, "evaluationPeriods": 3, "datapointsToAlarm": 2}
    production["spec"]["variants"] = [main, shadow]
    production["spec"]["deploymentConfig"] = {
        "blueGreen": {
            "trafficRouting": {"type": "AllAtOnce", "waitIntervalSeconds": options.canary_wait},
            "maximumExecutionTimeoutSeconds": 900,
        },
        "autoRollback": {
            "pollIntervalSeconds": 1,
            "alarms": [
                {
                    "name": "green-5xx",
                    "template": {"kind": "GreenErrorRate", "threshold": 5, **alarm},
                },
                {
                    "name": "shadow-disagreement",
                    "template": {
                        "kind": "ShadowDisagreement",
                        "threshold": options.shadow_threshold,
                        **alarm,
                    },
                },
            ],
        },
    }
    return production


def get_prometheus_config(targets_file: Path) -> dict[str, Any]:
    """Scrape every runtime process the launcher lists, once a second.

    >>> get_prometheus_config(Path("/w/targets.json"))["scrape_configs"][0]["file_sd_configs"]
    [{'files': ['/w/targets.json'], 'refresh_interval': '1s'}]
    """
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "fleetshift-pods",
                "honor_labels": True,
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
            }
        ],
    }


class Demo:
    """Starts every component, runs the scenarios, and stops everything on exit."""

    def __init__(
        self,
        options: DemoOptions,
        cluster: LocalCluster,
        progress: Progress,
        stop: StopRequest | None = None,
    ) -> None:
        self.options = options
        self.stop = stop or StopRequest()
        """Every wait below goes through ``stop.pause``, so Ctrl-C is never lost."""
        self.cluster = cluster
        self.progress = progress
        self.work = options.output / "work"
        self.kube = Client(KubeConfig.from_file(cluster.kubeconfig))
        self.prometheus = LocalPrometheus(folder=self.work / "prometheus")
        self.operator: ManagedProcess | None = None
        self.launcher = PodLauncher(cluster.kubeconfig, NAMESPACE, self.work)
        self.models: DemoModels | None = None
        self.loadgen: LoadGenerator | None = None
        self.summaries: list[ScenarioSummary] = []
        self.revisions: dict[str, str] = {}
        self.approver = Approver(options.approve_after)

    @contextlib.contextmanager
    def running(self) -> Iterator[Demo]:
        """Every component up for the body; all of them stopped after, whatever happens."""
        try:
            self._start()
            yield self
        finally:
            self._stop()

    # -- set-up ---------------------------------------------------------------------------

    def _start(self) -> None:
        self.progress.say("training the demo models (baseline, incompatible, valid, disagreeing)")
        self.models = build_models(self.work / "models")
        self.progress.say("installing the Endpoint CRD and the demo namespace")
        self._install_crd()
        self._create_namespace()
        if "Gates" in self.options.policies:
            self.progress.say(
                "starting the approver (the gates story's signed webhooks, on 127.0.0.1)"
            )
            self.approver.start()
            self._create_webhook_secret()
        self._start_pods()
        self.prometheus.start(self._prometheus_config())
        self.progress.say("starting the operator")
        self._start_operator()
        rows = self.models.requests_csv.read_text().splitlines()
        self.loadgen = self._load_generator(rows)
        self.loadgen.start()

    # -- what differs on a real node (demo/realnode.py overrides these) -------------------

    def _start_pods(self) -> None:
        """kwok's pods get runtime processes from the launcher."""
        self.progress.say("starting the pod launcher (a runtime process per pod)")
        self.launcher.start()
        self.progress.say("starting Prometheus (file-based discovery of the runtimes, 1 s scrapes)")

    def _prometheus_config(self) -> dict[str, Any]:
        return get_prometheus_config(self.launcher.targets_file)

    def _load_generator(self, rows: list[str]) -> LoadGenerator:
        return LoadGenerator(
            self.cluster.kubeconfig, NAMESPACE, self.launcher.routes, rows, self.options.rate
        )

    def _manifest(self, scenario: Scenario) -> dict[str, Any]:
        assert self.models is not None
        if scenario.policy == "Gates":
            return get_gates_endpoint(
                scenario.endpoint, self.models.uri(scenario.model), self.options, self.approver
            )
        if scenario.policy == "Shadow":
            return get_shadow_endpoint(
                scenario.endpoint,
                self.models.uri("baseline"),
                self.models.uri(scenario.model),
                self.options,
            )
        return get_endpoint(
            scenario.endpoint, self.models.uri(scenario.model), scenario.policy, self.options
        )

    def _create_namespace(self) -> None:
        """The demo's namespace; one a previous run left terminating is waited out first
        (nothing can be created in it until it is gone)."""

        def terminating() -> bool:
            try:
                found = self.kube.get(Namespace, NAMESPACE)
            except ApiError:
                return False
            return found.status is not None and found.status.phase == "Terminating"

        if terminating():
            self.progress.say(f"waiting for the {NAMESPACE} namespace of a previous run to go")
            deadline = time.monotonic() + 180
            while terminating():
                if time.monotonic() > deadline:
                    raise DemoError(f"namespace {NAMESPACE} still terminating after 180 s")
                self.stop.pause(1)
        with contextlib.suppress(ApiError):
            self.kube.create(Namespace(metadata=ObjectMeta(name=NAMESPACE)))

    def _create_webhook_secret(self) -> None:
        secret = Secret(
            metadata=ObjectMeta(name=WEBHOOK_SECRET, namespace=NAMESPACE),
            stringData={"hmac": SIGNING_KEY},
        )
        self.kube.apply(secret, field_manager="fleetshift-demo", force=True)

    def _install_crd(self) -> None:
        from fleetshift_operator.crd import build_crd  # noqa: PLC0415 - the operator's own CRD

        install_crds(
            self.kube, [build_crd()], what="the Endpoint CRD", field_manager="fleetshift-demo"
        )

    def _start_operator(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "FLEETSHIFT_NAMESPACES": json.dumps([NAMESPACE]),
            "FLEETSHIFT_PROMETHEUS_URL": self.prometheus.url,
            "FLEETSHIFT_POLL_INTERVAL_SECONDS": "1",
            "FLEETSHIFT_METRICS_PORT": str(free_port()),
        }
        self.operator = ManagedProcess.spawn(
            "operator",
            [sys.executable, "-m", "fleetshift_operator"],
            self.work / "operator.log",
            cwd=self.work,
            env=env,
        )

    def _stop(self) -> None:
        if self.loadgen is not None:
            self.loadgen.stop()
        self.launcher.stop()
        if self.operator is not None:
            stop_processes([self.operator])
        self.prometheus.stop()
        self.approver.stop()

    # -- the story -------------------------------------------------------------------------

    def run(self, on_scenario: Callable[[ScenarioSummary, ScenarioRecord], None]) -> None:
        """Every scenario in turn; ``on_scenario`` gets each one's results as it ends."""
        for scenario in calculate_story(self.options.policies):
            self.stop.pause(0)
            summary, record = self.run_scenario(scenario)
            self.summaries.append(summary)
            on_scenario(summary, record)

    def run_scenario(self, scenario: Scenario) -> tuple[ScenarioSummary, ScenarioRecord]:
        assert self.models is not None and self.loadgen is not None
        self._check_alive()
        manifest = self._manifest(scenario)
        self.loadgen.aim(scenario.endpoint)
        started = time.time()
        self.progress.begin(scenario)
        generation = self._apply(manifest)
        self.progress.names = dict(self.revisions)
        samples: list[StatusSample] = []
        candidate: str | None = None
        deadline = time.monotonic() + self._budget(scenario)
        status: dict[str, Any] = {}
        while True:
            self._check_alive()
            try:
                endpoint = self._endpoint(scenario.endpoint)
                events = self._events(endpoint) if self.progress.live else []
            except (ApiError, httpx.HTTPError):  # an API hiccup: look again shortly
                self.stop.pause(0.5)
                continue
            whole = dict(endpoint.get("status") or {})
            status = variant_status(whole, scenario.variant)
            sample = StatusSample.of(time.time(), status)
            samples.append(sample)
            caught_up = (whole.get("observedGeneration") or 0) >= generation
            if caught_up and candidate is None and sample.candidate:
                candidate = sample.candidate
                self.progress.names[candidate] = scenario.model
            self.progress.frame(endpoint, events, self.loadgen.answers_since(started))
            if (
                caught_up
                and sample.phase in SETTLED_PHASES
                and self._finished(scenario, status, candidate, whole, manifest)
            ):
                break
            if time.monotonic() > deadline:
                launcher = "; ".join(self.launcher.errors[-3:]) or "none"
                raise DemoError(
                    f"{scenario.name}: no outcome within {self._budget(scenario):.0f} s "
                    f"(phase {sample.phase}); see {self.work / 'operator.log'} and "
                    f"{self.work / 'runtimes'}; last launcher errors: {launcher}"
                )
            self.stop.pause(0.5)
        finished = time.time()
        self.stop.pause(self.options.settle_seconds)  # the graphs show the steady state after
        return self._summarize(scenario, status, samples, candidate, started, finished)

    def _finished(
        self,
        scenario: Scenario,
        status: dict[str, Any],
        candidate: str | None,
        whole: dict[str, Any],
        manifest: dict[str, Any],
    ) -> bool:
        if scenario.expected == "InService":
            wanted = {v["name"]: v["replicas"] for v in manifest["spec"]["variants"]}
            fleets = (whole.get("fleets") or {}).values()
            return len(fleets) == len(wanted) and all(
                f.get("readyReplicas", 0) >= wanted.get(f.get("variant"), 3) for f in fleets
            )
        last = status.get("lastDeployment") or {}
        return candidate is not None and last.get("revision") == candidate

    def _summarize(  # noqa: PLR0917 - one private call site
        self,
        scenario: Scenario,
        status: dict[str, Any],
        samples: list[StatusSample],
        candidate: str | None,
        started: float,
        finished: float,
    ) -> tuple[ScenarioSummary, ScenarioRecord]:
        assert self.loadgen is not None
        last = status.get("lastDeployment") or {}
        if scenario.expected == "InService":
            outcome, reason, finish_at = status.get("phase", "Pending"), "", finished
            self.revisions[status.get("activeRevision") or ""] = scenario.model
            candidate = ""
        else:
            outcome, reason = last.get("outcome", "?"), last.get("reason", "")
            finish_at = parse_time(last.get("finishedAt")) or finished
            candidate = candidate or ""
            self.revisions[candidate] = scenario.model
        cause = status.get("rollbackCause") or {}
        breach_at = parse_time(cause.get("evaluatedAt")) if outcome == "RolledBack" else None
        answers = self.loadgen.answers_since(started, scenario.endpoint)
        summary = summarize(
            name=scenario.name,
            expected=scenario.expected,
            started=started,
            finished=finish_at,
            outcome=outcome,
            reason=reason,
            candidate=candidate,
            samples=samples,
            answers=answers,
            breach_at=breach_at,
        )
        markers = calculate_markers(started, samples, breach_at, finish_at)
        if outcome == "RolledBack":
            summary = dataclasses.replace(summary, caught_by=str(cause.get("name") or ""))
        if scenario.policy == "Gates" and candidate:
            summary = dataclasses.replace(
                summary, held_for_approval_seconds=self.approver.held_seconds(candidate)
            )
            markers = sorted(
                [*markers, *calculate_approval_markers(self.approver.calls_about(candidate))],
                key=lambda m: m.at,
            )
        record = ScenarioRecord(
            scenario=scenario,
            started=started,
            finished=finish_at,
            samples=samples,
            markers=markers,
            revisions=dict(self.revisions),
            candidate=candidate or status.get("activeRevision") or "",
        )
        return summary, record

    def _budget(self, scenario: Scenario) -> float:
        waits = self.options.termination_wait + 3 * max(
            self.options.canary_wait, self.options.linear_wait
        )
        return 240.0 + waits

    def _apply(self, manifest: dict[str, Any]) -> int:
        resource = EndpointResource.from_dict(manifest)
        applied = self.kube.apply(resource, field_manager="fleetshift-demo", force=True)
        return int(applied["metadata"]["generation"])

    def _endpoint(self, name: str) -> dict[str, Any]:
        current = self.kube.get(EndpointResource, name, namespace=NAMESPACE)
        return dict(current.to_dict())  # type: ignore[no-untyped-call]

    def _events(self, endpoint: dict[str, Any]) -> list[dict[str, Any]]:
        """The Events about this Endpoint, for the live view."""
        uid = endpoint["metadata"].get("uid", "")
        found = self.kube.list(Event, namespace=NAMESPACE, fields={"involvedObject.uid": uid})
        return [e.to_dict() for e in found]

    def _check_alive(self) -> None:
        if self.operator is not None and not self.operator.running():
            raise DemoError(f"the operator exited:\n{self.operator.log_tail()}")
        if not self.prometheus.running():
            raise DemoError("Prometheus exited; see its log in " + str(self.prometheus.folder))


def calculate_approval_markers(calls: list[ApproverCall]) -> list[Marker]:
    """Lines on the timeline for the promotion gate: when the approver was first asked,
    and when it said yes.

    >>> c = lambda at, answer: ApproverCall(at, "/confirm", "ConfirmPromotion", "r", answer, True)
    >>> [(m.at, m.label) for m in calculate_approval_markers([c(5, 503), c(6, 503), c(16, 200)])]
    [(5, 'approval asked'), (16, 'approved')]
    """
    asked = [c for c in calls if c.path == "/confirm"]
    markers = [Marker(asked[0].at, "gate", "approval asked")] if asked else []
    markers += [Marker(c.at, "gate", "approved") for c in asked if c.answer == 200][:1]
    return markers


def variant_status(status: dict[str, Any], variant: str | None) -> dict[str, Any]:
    """The part of an Endpoint's status a scenario follows: one variant's (it has the
    same rollout fields) or, for None, the whole.

    >>> variant_status({"phase": "Updating", "variants": [{"name": "s", "phase": "Baking"}]}, "s")
    {'name': 's', 'phase': 'Baking'}
    >>> variant_status({"phase": "InService"}, "s"), variant_status({"phase": "x"}, None)
    ({}, {'phase': 'x'})
    """
    if variant is None:
        return status
    return next((dict(v) for v in status.get("variants") or [] if v.get("name") == variant), {})


@dataclasses.dataclass
class ScenarioRecord:
    """What the plots of one scenario need."""

    scenario: Scenario
    started: float
    finished: float
    samples: list[StatusSample]
    markers: list[Marker]
    revisions: dict[str, str]
    candidate: str
    """The revision the scenario deployed (the baseline's own, for a creation)."""


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and where to look."""
