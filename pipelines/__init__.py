"""recflow: the chain's stages (``pipelines.stages``) over its domain packages.

``core`` (params, IO, errors, schema) is the floor; ``data``, ``model``, ``serving`` and
``gate`` stand on it in that order, and the thin stage modules call into them. Nothing in this
package imports Airflow; ``dags/`` and ``plugins/`` run the stages through their command lines.
"""
