"""Fleetshift: deployment guardrails for ML model endpoints on Kubernetes.

The operator package. Only ``handlers`` imports kopf; pure modules decide,
``kube`` talks to the API server.
"""

__version__ = "0.1.0"
