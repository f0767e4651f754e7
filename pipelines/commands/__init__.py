"""Commands of ``recflow`` that are not tasks of the chain (``recflow registry ...``)."""
