"""Deployment: rollouts of registered versions to the serving fleets of each cloud (shadow,
canary, full, with analysis at every step and automatic rollback), traffic replay, the local
fleets and Prometheus, and the serving manifests for Kubernetes."""
