"""Alarms: one Protocol (``base.AlarmSource``), Prometheus sources, and a factory.

``base``, ``semantics`` and ``templates`` are pure; ``prometheus``, ``sources`` and
``factory`` talk to Prometheus. Nothing is imported here, so the planner can use
the pure modules without pulling in an HTTP client.
"""
