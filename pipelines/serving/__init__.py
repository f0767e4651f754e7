"""Serving artifacts of a trained model: scoring graphs, backends, manifest, runtime, parity."""
