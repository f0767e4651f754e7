"""The chain's stages, one thin module each, run as ``python -m pipelines.stages.<name>``.

``registry.py`` lists them with their commands and edges; nothing imports a stage module.
"""
