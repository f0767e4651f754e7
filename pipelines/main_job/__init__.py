"""The main job (``make run``) and the Airflow UI (``make airflow``) for this checkout.

``job`` runs the ``recsys_retrain`` DAG once through Airflow's command line, then ``dvc repro``
and ``dvc push``; ``progress`` turns Airflow's log into one line per task start and end;
``figures`` reads each stage's key figure from the files the stage wrote; ``airflow_cli`` holds
the one Airflow home, DAG folder and plugin folder both commands use; ``ui`` starts Airflow's
UI on this machine only. Nothing here imports Airflow.
"""
