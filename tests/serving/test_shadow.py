"""The shadow compares what users would see: the catalog ids of its answer, from the request
encoded with its own item table, against stable's; stable's answers do not change under it."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.core.io import read_parquet
from pipelines.serving.server import state as run_state
from pipelines.serving.server.metrics import Metrics
from pipelines.serving.server.service import Service
from tests.rollout import faults
from tests.serving.conftest import serve_config


def _histories(folder: Path) -> list[list[str]]:
    """Cold starts, known histories of one to three items, and one with an unknown id."""
    ids = read_parquet(folder / "items.parquet", "items").column("item_id").to_pylist()
    n = len(ids)
    histories: list[list[str]] = [[], ["not-in-the-catalog", ids[0]]]
    for i in range(40):
        histories.append([ids[(7 * i + 3 * j) % n] for j in range(1 + i % 3)])
    return histories


def _serve(
    stable: Path, shadow: Path | None, histories: list[list[str]], tmp: Path
) -> tuple[list[bytes], dict[str, Any] | None]:
    """Stable's answers to ``histories`` with ``shadow`` (if any) scoring copies, and the
    shadow's report once every copy is scored."""
    cfg = serve_config(tmp)
    versions = {"stable": str(stable)}
    if shadow is not None:
        versions["shadow"] = str(shadow)
    run_state.write_initial(
        cfg.run_dir,
        run_state.DesiredState(
            generation=1,
            stable="stable",
            versions=versions,
            shadow="shadow" if shadow else None,
        ),
    )

    async def scenario() -> tuple[list[bytes], dict[str, Any] | None]:
        service = Service(cfg, cfg.run_dir, Metrics())
        await service.reconcile()
        try:
            bodies = [
                await service.recommend(f"u{i}", history, 10, time.perf_counter())
                for i, history in enumerate(histories)
            ]
            await asyncio.gather(*list(service._tasks))  # every copy scored
            stats = service.shadow_stats
            return bodies, stats.report() if stats else None
        finally:
            await service.stop()

    return asyncio.run(scenario())


def test_a_shadow_with_a_wrong_item_table_does_not_overlap_stable(
    served_folder: Path, tmp_path: Path
) -> None:
    histories = _histories(served_folder)
    same = shutil.copytree(served_folder, tmp_path / "same")
    wrong = faults.wrong_item_table(served_folder, tmp_path / "wrong")
    alone, none = _serve(served_folder, None, histories, tmp_path / "alone")
    with_same, same_report = _serve(served_folder, same, histories, tmp_path / "with-same")
    with_wrong, wrong_report = _serve(served_folder, wrong, histories, tmp_path / "with-wrong")

    assert none is None
    assert with_same == with_wrong == alone  # a shadow never changes stable's answers
    assert same_report is not None and wrong_report is not None
    assert same_report["scored"] == wrong_report["scored"] == len(histories)
    assert same_report["failed"] == wrong_report["failed"] == 0
    # the same model and the same table: the same catalog ids
    assert same_report["mean_overlap"] == 1.0
    # the same model, its indices meaning other items: what users would see differs
    assert wrong_report["mean_overlap"] < 0.2


@pytest.mark.parametrize("history", [["a", "b"], ["b", "zzz", "a"], []])
def test_an_item_table_encodes_and_decodes_catalog_ids(
    served_folder: Path, history: list[str]
) -> None:
    from pipelines.serving.items import ItemTable

    table = ItemTable.read(served_folder, len(read_parquet(served_folder / "items.parquet", "t")))
    known = [str(table.ids[3]), str(table.ids[1])]
    named = {"a": known[0], "b": known[1]}
    ids = [named.get(item, item) for item in history]
    indices = table.encode(ids)
    assert table.decode(indices) == [i for i in ids if i in table.index]  # unknown ids dropped
    assert all(1 <= i <= table.n_items for i in indices)
