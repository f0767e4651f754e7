"""Events from source to model input: synthetic data, sources, ingest, validation, preparation."""
