"""Benchmarks: each module writes one JSON file into ``benchmarks/results/``."""
