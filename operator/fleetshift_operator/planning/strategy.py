"""The deployment-strategy plug point: one Protocol, blue/green and rolling behind it."""

from __future__ import annotations

from typing import Protocol

from fleetshift_operator.api import BlueGreen, EndpointSpec
from fleetshift_operator.planning.context import VariantDraft


class DeploymentStrategy(Protocol):
    """How one variant moves from its blue revision to its green one."""

    execution_timeout_seconds: int
    """The deadline of a whole deployment."""
    provisioning_timeout_seconds: int
    """How long a new fleet (or batch) may take to become Ready."""

    def advance(self, draft: VariantDraft) -> None:
        """Plan the next step of a healthy deployment (the draft's status says where it
        is); retire blue once the last step is done."""
        ...

    def roll_back(self, draft: VariantDraft) -> bool:
        """Plan the way back to blue; True once blue is whole and green may go."""
        ...


def strategy_for(spec: EndpointSpec) -> DeploymentStrategy:
    """Rolling when ``deploymentConfig.rolling`` is set, else blue/green.

    >>> from fleetshift_operator.api import ModelSource, Variant
    >>> spec = EndpointSpec(variants=[Variant(name="a", model=ModelSource(uri="/m"))])
    >>> type(strategy_for(spec)).__name__, strategy_for(spec).provisioning_timeout_seconds
    ('BlueGreenStrategy', 600)
    """
    from fleetshift_operator.planning.blue_green import BlueGreenStrategy  # noqa: PLC0415
    from fleetshift_operator.planning.rolling import RollingStrategy  # noqa: PLC0415

    rolling = spec.deploymentConfig.rolling
    if rolling is not None:
        return RollingStrategy(rolling)
    return BlueGreenStrategy(spec.deploymentConfig.blueGreen or BlueGreen())
