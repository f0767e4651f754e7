"""Commands of ``recflow`` that are not stages of the chain (no DVC stage, no DAG task)."""
