"""Great Expectations suites over event batches, their batch metrics, Data Docs and verdicts."""
