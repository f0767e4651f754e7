"""The inference server behind ``recflow serve``: HTTP API, batching, routing, admin, request log.

``app`` builds the ASGI application of one worker; ``service`` answers requests from the models
it holds; ``state`` carries admin changes to every worker through a desired-state file;
``launch`` starts the worker processes; ``sources`` fetches the versions it loads, verified,
and ``pseudonyms`` hashes user ids for the request log.
"""
