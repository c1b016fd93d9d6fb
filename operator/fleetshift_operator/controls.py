"""Manual controls through annotations, so GitOps never sees the operator write spec.

    kubectl annotate fsep churn fleetshift.dev/paused=true            # hold the step
    kubectl annotate fsep churn fleetshift.dev/paused-                # resume
    kubectl annotate fsep churn fleetshift.dev/promote=$(date +%s) --overwrite
    kubectl annotate fsep churn fleetshift.dev/abort=$(date +%s) --overwrite
    kubectl annotate fsep churn fleetshift.dev/retry=$(date +%s) --overwrite

*paused* is a level: the deployment holds while it says ``true``. *promote*,
*abort* and *retry* are requests: each new value is acted on once, and the
value handled is remembered in ``status.handledActions`` (the operator never
removes the annotation, so Git and the cluster agree).
"""

from __future__ import annotations

from collections.abc import Mapping

from fleetshift_operator.planning.types import Controls

PREFIX = "fleetshift.dev/"
PAUSED = PREFIX + "paused"
PROMOTE = PREFIX + "promote"
ABORT = PREFIX + "abort"
RETRY = PREFIX + "retry"


def read_controls(annotations: Mapping[str, str]) -> Controls:
    """The controls the annotations ask for.

    >>> read_controls({"fleetshift.dev/paused": "true", "fleetshift.dev/abort": "1"})
    Controls(paused=True, abort='1', promote=None, retry=None)
    >>> read_controls({"fleetshift.dev/paused": "no"}).paused
    False
    """
    return Controls(
        paused=annotations.get(PAUSED, "").strip().lower() in ("true", "yes", "1"),
        abort=annotations.get(ABORT) or None,
        promote=annotations.get(PROMOTE) or None,
        retry=annotations.get(RETRY) or None,
    )
