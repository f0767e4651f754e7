"""Commands of ``recflow`` that are not tasks of the chain (``serve``, ``registry``)."""
