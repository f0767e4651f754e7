"""A synthetic e-commerce clickstream with structure a sequential recommender can learn.

The shop (items, categories, brands, prices, users and their tastes) is drawn once from the
seed; traffic is then simulated one calendar day at a time. What makes the data worth learning
from: Zipf item popularity, users who stick to a few favourite categories, views that follow
fixed "successor" items (so the order of views carries signal beyond popularity), staple items
each user keeps coming back to (repeat purchases: the history predicts them, the last item does
not), shopping missions (sessions that keep to a fixed set of complementary items: the last item
belongs to several, the session's earlier views tell which), a view → add_to_cart → purchase
funnel, and daily and weekly seasonality.

Read in this order: ``presets`` (sizes and behaviour knobs), ``shop`` (what the seed draws once,
with ``alias`` for fast weighted draws), ``simulation`` (one day's sessions and funnel),
``tables`` (``simulate``: the days as Arrow tables with their ids, a day at a time;
``synthesize``: all at once), ``generator`` (the ``generate`` stage streaming them to
Parquet), ``oracle`` (the best ranking of the test targets the generator's own probabilities
give: the ceiling beside the models).
"""
