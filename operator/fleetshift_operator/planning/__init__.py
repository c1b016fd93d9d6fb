"""The rollout planner, pure: ``(spec, status, observed, now) -> Plan``.

No I/O, no kopf, no clock. ``types`` holds what the rest of the operator imports,
``steps`` the arithmetic, ``strategy`` the blue/green and rolling plug point,
``variant`` one variant's rollout, ``status`` the endpoint-wide status and
``plan`` the entry, :func:`plan_endpoint`.
"""
