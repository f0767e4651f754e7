"""The synthetic e-commerce clickstream of the embedded default, drawn from a seed."""
