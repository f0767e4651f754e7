"""The figure a person looks at after each stage, read from the files the stage wrote.

Paths come from the stage table's command lines (``--out``, ``--metrics``, ``--reports``),
so a stage that moves its outputs moves its figure with it. ``KEY_FIGURES`` has an entry for
every stage of the table (a test checks it); ``None`` there means the stage has no figure. The
``deploy`` stage runs as one task per cloud with an approval between them
(``pipelines.stages.table.chain_task_ids``): :func:`task_figure` gives each of those tasks the
figure of its own cloud.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipelines.core.errors import RecflowError
from pipelines.core.params import load_params
from pipelines.registry.names import CLOUDS
from pipelines.stages.table import approval_task_id, deploy_task_id, stage

Figure = Callable[[Path], str]

# the training baseline a candidate must beat (models/candidate/metrics.json: baselines)
BASELINE = "item_transition"
# what the shipped serving artifact is compared with in metrics/optimize.json: latency
EAGER = "torch-eager-fp32"


def stage_path(name: str, flag: str, *parts: str) -> Path:
    """A path from stage ``name``'s command line: the value after ``flag``, joined with ``parts``.

    Raises:
        KeyError: The stage table has no such stage.
        ValueError: The stage's command line has no ``flag``.
    """
    args = stage(name).args
    return Path(args[args.index(flag) + 1], *parts)


def _json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def _logical_date(root: Path) -> str:
    return load_params(root / "params.yaml").run.logical_date.isoformat()


def logical_date_figure(root: Path) -> str:
    """``set_logical_date``: the date the run wrote into ``params.yaml``."""
    return f"run.logical_date {_logical_date(root)}"


def ingest_figure(root: Path) -> str:
    """``ingest``: the size of the run's raw batch, from its manifest."""
    date = _logical_date(root)
    manifest = _json(root / stage_path("ingest", "--out", date, "manifest.json"))
    return f"{manifest['rows']:,} events, {manifest['users']:,} users, {manifest['items']:,} items"


def validate_figure(root: Path) -> str:
    """``validate``: rows accepted and expectations passed."""
    m = _json(root / stage_path("validate", "--metrics"))
    verdict = "accepted" if m["success"] else "REJECTED"
    return (
        f"{m['rows']:,} rows {verdict} "
        f"({m['successful_expectations']}/{m['evaluated_expectations']} expectations)"
    )


def prepare_figure(root: Path) -> str:
    """``prepare``: users and their sequences."""
    m = _json(root / stage_path("prepare", "--metrics"))
    return f"{m['users']:,} users, {m['sequences']:,} sequences, {m['items']:,} items"


def train_figure(root: Path) -> str:
    """``train``: epochs run, and test NDCG@10 against the item-transition baseline's."""
    m = _json(root / stage_path("train", "--out", "metrics.json"))
    figure = f"{m['epochs_run']} epochs, test NDCG@10 {m['test']['ndcg@10']:.4f}"
    baseline = m.get("baselines", {}).get(BASELINE, {}).get("ndcg@10")
    if baseline is not None:
        figure += f" vs transition {baseline:.4f}"
    return figure


def optimize_figure(root: Path) -> str:
    """``optimize``: the artifact shipped and its speed-up over torch eager at batch 1."""
    m = _json(root / stage_path("optimize", "--metrics"))
    shipped = m["shipped"]
    latency: Mapping[str, Any] = m.get("latency", {})
    if shipped == EAGER or shipped not in latency or EAGER not in latency:
        return f"ships {shipped}"
    speedup = latency[shipped]["batch_1"]["items_per_s"] / latency[EAGER]["batch_1"]["items_per_s"]
    return f"ships {shipped}, {speedup:.1f}x torch eager at batch 1"


def reference_figure(root: Path) -> str:
    """``reference``: the size of the monitoring reference the version will carry."""
    m = _json(root / stage_path("reference", "--out", "reference.json"))
    return f"{m['rows']:,} reference requests, {len(m['features'])} features"


def evaluate_figure(root: Path) -> str:
    """``evaluate``: the regression gate's verdict."""
    m = _json(root / stage_path("evaluate", "--metrics"))
    return f"gate verdict: {m['verdict']}"


def pin_figure(root: Path) -> str:
    """The production version the run's gate compares against."""
    pin = _json(root / stage_path("pin_production", "--out"))
    return f"production {pin['version']}" if pin["version"] else "no production yet (first model)"


def register_figure(root: Path) -> str:
    """What the ledger of the store of record says the run's registration did."""
    from pipelines.registry import ledger
    from pipelines.registry.clouds import open_registry

    params = load_params(root / "params.yaml")
    registry = open_registry(params, root)
    if getattr(registry.stores, registry.record_cloud).url.startswith("s3:"):
        return "registered (the store of record is remote: recflow registry history)"
    alias = params.registry.candidate_alias
    entries = ledger.select(ledger.entries(registry.record), alias)
    if not entries:
        return "registered; no alias changed (a blocked candidate is never a candidate)"
    newest = entries[-1].version
    clouds = sorted({e.cloud for e in entries if e.version == newest})
    return f"version {newest}: {alias} in {', '.join(clouds)}"


def _latest_rollout(root: Path) -> Any:
    from pipelines.rollout.record import Records

    return Records(root / load_params(root / "params.yaml").deploy.run_dir).latest()


def _rollout_path(targets: list[Any]) -> str:
    """The steps the targets passed, canary weights folded: ``shadow, canary 5/25/50%``."""
    steps = list(
        dict.fromkeys(
            s["step"]
            for t in targets
            for s in t.steps
            if s["outcome"] == "pass" and s["step"] != "infra"
        )
    )
    canary = [s.removeprefix("canary ").removesuffix("%") for s in steps if s.startswith("canary")]
    path = [s for s in steps if not s.startswith("canary")]
    path += [f"canary {'/'.join(canary)}%"] if canary else []
    return ", ".join(path) or "already production"


def _rolled_back(record: Any) -> str:
    failure = record.failure or {}
    where = f"{failure.get('cloud')} {failure.get('step')}" if failure.get("cloud") else ""
    reason = str(failure.get("reason", ""))
    return f"{record.version[:12]} rolled back at {where or failure.get('step')}: {reason}"


def deploy_figure(root: Path) -> str:
    """Where the latest rollout ended: serving where, through which steps, or why not."""
    record = _latest_rollout(root)
    if record is None:
        return "no rollout yet"
    version = record.version[:12]
    if record.status == "rolled_back":
        return _rolled_back(record)
    if record.status == "awaiting_approval":
        current = record.current
        return f"{version} waits for approval before {current.cloud if current else '?'}"
    done = [t for t in record.targets if t.phase == "done"]
    clouds = ", ".join(t.cloud for t in done)
    return f"{version} serves in {clouds or 'no cloud'} ({_rollout_path(done)})"


def deploy_cloud_figure(cloud: str) -> Figure:
    """``deploy_<cloud>``: where the latest rollout stands in that cloud."""

    def figure(root: Path) -> str:
        record = _latest_rollout(root)
        if record is None:
            return "no rollout yet"
        version = record.version[:12]
        target = next((t for t in record.targets if t.cloud == cloud), None)
        if target is None:
            return f"{version}: {cloud} is not a target of this rollout"
        if record.status == "rolled_back":
            return _rolled_back(record)
        if target.phase == "done":
            return f"{version} serves in {cloud} ({_rollout_path([target])})"
        return f"{version} {cloud}: {target.phase}"

    return figure


def approval_figure(cloud: str) -> Figure:
    """``approve_<cloud>``: who decided about the rollout before that cloud, or that it waits."""

    def figure(root: Path) -> str:
        record = _latest_rollout(root)
        if record is None:
            return "no rollout yet"
        version = record.version[:12]
        current = record.current
        if record.status == "awaiting_approval" and current is not None and current.cloud == cloud:
            return f"{version} waits for a decision before {cloud}"
        from pipelines.rollout.approval import read_decision
        from pipelines.rollout.context import Context

        decision = read_decision(Context.open(root / "params.yaml"), record.version)
        if decision is None:
            return f"{version}: no decision recorded (approval not required)"
        said = f"{version} {decision.decision}d by {decision.actor} via {decision.via}"
        return said + (f": {decision.reason}" if decision.reason else "")

    return figure


def _latest_monitor(root: Path) -> dict[str, Any]:
    """Each monitored cloud's newest summary (checked against its pointer), by cloud."""
    from pipelines.monitoring.summary import read_latest

    cfg = load_params(root / "params.yaml").monitor
    found: dict[str, Any] = {}
    for cloud in cfg.clouds:
        if (root / cfg.out / cloud / "latest.json").is_file():
            found[cloud] = read_latest(root / cfg.out / cloud)
    return found


def _cloud_figure(cloud: str, latest: Any) -> str:
    summary = latest.summary
    drifted = f" ({', '.join(d.feature for d in summary.drifted)})" if summary.drifted else ""
    rates = [q for q in summary.quality if q.hit_rate is not None]
    quality = ""
    if rates:
        quality = ", hit rate " + "/".join(f"{q.hit_rate:.2f}" for q in rates)
        quality += f" ({'/'.join(q.arm for q in rates)})"
    return f"{cloud} {summary.verdict}{drifted} on {summary.rows:,} requests{quality}"


def monitor_figure(root: Path) -> str:
    """Each cloud's verdict on the traffic, with the drifted features and online quality."""
    found = _latest_monitor(root)
    if not found:
        return "no monitoring report yet"
    return "; ".join(_cloud_figure(cloud, latest) for cloud, latest in found.items())


KEY_FIGURES: dict[str, Figure | None] = {
    "set_logical_date": logical_date_figure,
    "pin_production": pin_figure,
    # the synthetic source's size shows again, per batch, in ingest's figure
    "generate": None,
    "ingest": ingest_figure,
    "validate": validate_figure,
    "prepare": prepare_figure,
    "train": train_figure,
    "optimize": optimize_figure,
    "reference": reference_figure,
    "evaluate": evaluate_figure,
    "register": register_figure,
    "deploy": deploy_figure,
    "monitor": monitor_figure,
}


def task_figure(task_id: str) -> Figure | None:
    """The figure of a chain task: its stage's, or a deploy or approval task's for its cloud."""
    if task_id in KEY_FIGURES:
        return KEY_FIGURES[task_id]
    for cloud in CLOUDS:
        if task_id == deploy_task_id(cloud):
            return deploy_cloud_figure(cloud)
        if task_id == approval_task_id(cloud):
            return approval_figure(cloud)
    return None


def key_figure(name: str, root: Path) -> str | None:
    """Task ``name``'s key figure for the project at ``root``, or None if it has none.

    ``name`` is a stage of the table or a task of the chain (``deploy_private``,
    ``approve_public``, ...). A missing or unreadable file gives a short note instead: the
    figure is a summary, the run's outcome does not depend on it.
    """
    figure = task_figure(name)
    if figure is None:
        return None
    try:
        return figure(root)
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError, RecflowError) as exc:
        return f"(no figure: {type(exc).__name__}: {exc})"


# what a person opens after a run: (stage, what the path is, path)
LANDED: tuple[tuple[str, str, Path], ...] = (
    ("validate", "report", stage_path("validate", "--reports", "data_docs", "index.html")),
    ("prepare", "in", stage_path("prepare", "--out")),
    ("train", "in", stage_path("train", "--out")),
    ("optimize", "in", stage_path("optimize", "--out")),
    ("evaluate", "report", stage_path("evaluate", "--out", "report.html")),
)


def _rollout_record(root: Path) -> Path | None:
    """The latest rollout's record, relative to ``root`` where it is under it."""
    try:
        record = _latest_rollout(root)
    except (OSError, ValueError, RecflowError):
        return None
    if record is None:
        return None
    run_dir = load_params(root / "params.yaml").deploy.run_dir
    return run_dir / record.version / "rollout.json"


def summary_lines(root: Path) -> list[str]:
    """One line per output a person opens after a run: its stage's key figure, and where it is."""
    landed = list(LANDED)
    record = _rollout_record(root)
    if record is not None:
        landed.append(("deploy", "record", record))
    try:
        reports = _latest_monitor(root)
    except (OSError, ValueError, RecflowError):
        reports = {}
    monitored = []
    for cloud, latest in reports.items():
        report = latest.path.parent / "report.html"
        shown = report.relative_to(root) if report.is_relative_to(root) else report
        monitored.append((f"monitor {cloud}", _cloud_figure(cloud, latest), shown))
    width = max(len(name) for name, *_ in [*landed, *monitored])
    lines = []
    for name, noun, path in landed:
        where = f"{path}/" if noun == "in" else str(path)
        lines.append(f"  {name:<{width}}  {key_figure(name, root)}; {noun} {where}")
    for name, figure, path in monitored:
        lines.append(f"  {name:<{width}}  {figure.split(' ', 1)[1]}; report {path}")
    return lines
