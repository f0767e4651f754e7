"""Monitoring: drift and online quality of served traffic and incoming batches.

Served traffic (the request log) and incoming event batches become one table of requests,
featurized the same way as the reference a model version was registered with; Evidently
judges the drift of each feature, recflow adds the divergence of item popularity, the share of
unseen items and the online quality of what was served.
"""
