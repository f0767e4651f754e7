"""Running the suites with Great Expectations: an in-memory context, one validation per frame.

A frame given in partitions is validated partition by partition and the results combined
into one (``combine``), which is what the reports and Data Docs show.

Nothing is read from or written to a GX project folder or the user's home; the Data Docs site,
when asked for, is built into a given folder and made reproducible (``docs``).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

# GX reads this when it is imported; set it before the import so no usage statistics are sent.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.data_context.types.resource_identifiers import (
    ValidationResultIdentifier,
)

from pipelines.data.validation.combine import combine_results
from pipelines.data.validation.docs import add_offline_index, freeze_data_docs
from pipelines.data.validation.suites import SuiteFrame, expectation_id

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.data_context import AbstractDataContext

DOCS_SITE = "local_site"


def add_suite(
    context: AbstractDataContext,
    name: str,
    expectations: list[gxe.Expectation],
    ids: list[str] | None = None,
) -> gx.ExpectationSuite:
    """Add a suite holding ``expectations`` to ``context``, with ids fixed by position.

    GX gives each expectation a random id when the suite is stored; fixed ids make the
    validation result the same bytes on every rerun. ``ids`` overrides the ids by position
    (a part of a suite keeps its expectations' ids in the whole suite).
    """
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    for index, expectation in enumerate(suite.expectations):
        expectation.id = ids[index] if ids is not None else expectation_id(name, index)
    suite.save()
    return suite


def _context(docs_dir: Path | None) -> AbstractDataContext:
    """An in-memory data context, with a filesystem Data Docs site under ``docs_dir``.

    Nothing is read from or written to a GX project folder or the user's home.
    """
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # GX logs its own set-up at INFO on every run; only its warnings matter here.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    sites = {}
    if docs_dir is not None:
        sites[DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir.resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


@contextlib.contextmanager
def _lean_pandas() -> Iterator[None]:
    """Settings under which GX's pandas checks stay vectorised on large frames.

    GX's string checks call ``astype(str)``: with pandas' ``future.infer_string`` that keeps
    Arrow strings (Arrow kernels) instead of building millions of Python strings. GX also hashes
    every frame under 1 GB for a batch fingerprint (about 2 s per million events) that nothing
    here uses; the stage records the sha256 of the input files instead.
    """
    from great_expectations.execution_engine import pandas_execution_engine as engine

    threshold = engine.HASH_THRESHOLD
    engine.HASH_THRESHOLD = 0
    try:
        with pd.option_context("future.infer_string", True):
            yield
    finally:
        engine.HASH_THRESHOLD = threshold


def _row_local_definition(item: SuiteFrame) -> gx.ValidationDefinition:
    """The suite of ``item`` less its whole-batch expectations, in a context of its own.

    The partitions after the first are validated with it: their results for whole-batch
    expectations would be discarded anyway (``combine``), and uniqueness is costly. Nothing
    of this context reaches the reports or Data Docs.
    """
    context = _context(None)
    source = context.data_sources.add_pandas("recflow")
    batch = source.add_dataframe_asset(item.name).add_batch_definition_whole_dataframe(item.name)
    ids = [expectation_id(item.name, i) for i in range(len(item.expectations))]
    kept = [i for i, key in enumerate(ids) if key not in item.batch_wide]
    suite = add_suite(
        context,
        item.name,
        [copy.copy(item.expectations[i]) for i in kept],
        [ids[i] for i in kept],
    )
    return context.validation_definitions.add(
        gx.ValidationDefinition(name=item.name, data=batch, suite=suite)
    )


def _run_partitioned(
    context: AbstractDataContext,
    definition: gx.ValidationDefinition,
    item: SuiteFrame,
    run_id: gx.RunIdentifier,
    result_format: dict[str, Any],
) -> ExpectationSuiteValidationResult:
    """Validate each partition of ``item`` in turn, then store their combined result.

    The first partition is validated with the whole suite, the others with its row-local
    expectations (``_row_local_definition``). The combined result replaces the first
    partition's in the context's store, so Data Docs show one page for the suite, over the
    whole batch.
    """
    assert item.partitions is not None
    partials = []
    row_local: gx.ValidationDefinition | None = None
    for frame in item.partitions():
        with _lean_pandas():
            partials.append(
                (row_local or definition).run(
                    batch_parameters={"dataframe": frame},
                    result_format=result_format,
                    run_id=run_id,
                )
            )
        # drop the partition before the next one is read
        del frame
        row_local = row_local or _row_local_definition(item)
    combined = combine_results(partials, item.batch_wide, result_format)
    store = context.validation_results_store
    for key in store.list_keys():
        if (
            isinstance(key, ValidationResultIdentifier)
            and key.expectation_suite_identifier.name == item.name
        ):
            store.set(key, combined)
    return combined


def run_suites(
    suites: list[SuiteFrame],
    run_name: str,
    run_time: dt.datetime,
    example_values: int,
    docs_dir: Path | None = None,
) -> list[ExpectationSuiteValidationResult]:
    """Validate each frame with its suite in one in-memory context; build Data Docs.

    Args:
        suites: The suites and their frames.
        run_name: Name of the run in results and Data Docs (the batch name).
        run_time: Time recorded for the run (the logical date, never the clock).
        example_values: How many unexpected values each result keeps.
        docs_dir: Folder to build the Data Docs site into, or ``None`` for none.

    Returns:
        One validation result per suite, in order.
    """
    context = _context(docs_dir)
    source = context.data_sources.add_pandas("recflow")
    run_id = gx.RunIdentifier(run_name=run_name, run_time=run_time)
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": example_values}
    results = []
    # One validation definition per frame, run directly: a Checkpoint would hand the same
    # batch parameters (the same dataframe) to every validation definition it holds.
    for item in suites:
        batch = source.add_dataframe_asset(item.name).add_batch_definition_whole_dataframe(
            item.name
        )
        suite = add_suite(context, item.name, item.expectations)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=item.name, data=batch, suite=suite)
        )
        if item.partitions is None:
            with _lean_pandas():
                results.append(
                    definition.run(
                        batch_parameters={"dataframe": item.frame},
                        result_format=result_format,
                        run_id=run_id,
                    )
                )
        else:
            results.append(_run_partitioned(context, definition, item, run_id, result_format))
    if docs_dir is not None:
        context.build_data_docs(site_names=[DOCS_SITE])
        add_offline_index(docs_dir, results)
        freeze_data_docs(docs_dir, run_time.strftime("%Y%m%dT%H%M%S.%fZ"))
    return results
