"""recflow stages: plain Python functions with thin command-line entry points.

Nothing in this package imports Airflow; the DAGs in ``dags/`` and the wiring in
``plugins/`` call these stages through their command lines.
"""

__version__ = "0.1.0"
