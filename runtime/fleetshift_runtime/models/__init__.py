"""Model implementations behind the :class:`~fleetshift_runtime.models.base.Model` protocol."""
