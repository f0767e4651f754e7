"""The lean pandas frames the suites run on, built from the Arrow tables read from Parquet.

Strings become Arrow-backed pandas strings (vectorised string checks, little memory). Catalog
membership is computed in Arrow and handed to GX as the derived column
``item_id_not_in_catalog``, so that it is checked and reported like any other column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

NOT_IN_CATALOG = "item_id_not_in_catalog"
# derived column -> the input column it is computed from, for "column missing" reports
DERIVED_FROM: dict[str, str] = {NOT_IN_CATALOG: "item_id"}


def events_frame(events: pa.Table, catalog_item_ids: pa.Array, offset: int = 0) -> pd.DataFrame:
    """The lean pandas frame the ``events`` suite runs on.

    Strings become Arrow-backed pandas strings (vectorised string checks, little memory), and
    the derived column ``item_id_not_in_catalog`` is added when the events have item ids.

    Args:
        events: The event table as read from Parquet.
        catalog_item_ids: The catalog's item ids (empty when it has none, so that every item
            counts as missing from it).
        offset: The file's row number of the first event (a partition's frame is indexed by
            the rows' numbers in the file, so that reports name rows of the file).

    Returns:
        The frame to validate.
    """
    if "item_id" in events.column_names:
        item_ids = events.column("item_id")
        missing = not_in(item_ids, catalog_item_ids)
        if missing is not None:
            derived = pc.if_else(missing, item_ids.cast(pa.string()), pa.scalar(None, pa.string()))
            events = events.append_column(NOT_IN_CATALOG, derived)
    frame = events.to_pandas(types_mapper=_arrow_strings)
    if offset:
        frame.index = pd.RangeIndex(offset, offset + len(frame))
    return frame


def not_in(
    values: pa.Array | pa.ChunkedArray, reference: pa.Array | pa.ChunkedArray
) -> pa.ChunkedArray | pa.Array | None:
    """Where ``values`` are missing from ``reference`` (compared as strings), in Arrow.

    Arrow's ``is_in`` instead of pandas' ``isin``, which converts the reference set value by
    value. ``None`` if either side cannot be read as strings (its type check reports why).
    """
    try:
        as_text = values.cast(pa.string())
        known = pa.chunked_array(reference).cast(pa.string()).unique()
    except (pa.ArrowException, ValueError):
        return None
    if isinstance(known, pa.ChunkedArray):
        known = known.combine_chunks()
    return pc.invert(pc.is_in(as_text, value_set=known))


def catalog_frame(catalog: pa.Table) -> pd.DataFrame:
    """The pandas frame the ``catalog`` suite runs on."""
    return catalog.to_pandas(types_mapper=_arrow_strings)


def _arrow_strings(arrow_type: pa.DataType) -> pd.api.extensions.ExtensionDtype | None:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("pyarrow", na_value=np.nan)
    return None
