"""Serving fleets: a fleet's servers over HTTP, local fleets of ``recflow serve`` processes, and
the model registry's store as the servers' source of versions."""
