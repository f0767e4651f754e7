"""Inference backends: which this machine can run, and each one's build and open code."""
