"""The model registry: immutable, content-addressed versions in the private cloud's store of
record, replicated to the public cloud, with aliases changed by compare-and-set, an append-only
promotion ledger, lineage, backup and restore."""
