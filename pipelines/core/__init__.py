"""The floor every other package stands on: typed params, atomic IO, errors, logs, the schema."""
