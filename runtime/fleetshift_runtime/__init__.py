"""Fleetshift's model-serving runtime (FastAPI + XGBoost)."""

__version__ = "0.1.0"
