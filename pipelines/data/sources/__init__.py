"""Loaders of event data sets into the canonical event and catalog schema, one per format."""
