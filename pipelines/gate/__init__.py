"""The regression gate: decision rules, behavioural checks, golden set, verdict and report."""
