"""``recflow deploy --dry-run``: the plan of a rollout, read from the params, the registry and the
rollout record, with nothing started or changed."""

from __future__ import annotations

from pipelines.core.errors import InputError, RecflowError
from pipelines.registry.aliases import read_alias
from pipelines.registry.clouds import open_registry
from pipelines.registry.names import marker_key
from pipelines.registry.stores.base import Store
from pipelines.registry.versions import read_version
from pipelines.rollout.context import Context
from pipelines.rollout.prometheus import find_binary
from pipelines.rollout.record import Records


def _alias(store: Store, alias: str) -> str:
    state = read_alias(store, alias)
    return state.version if state else "none"


def plan_lines(
    ctx: Context,
    version: str,
    through: str | None = None,
    require_approval: bool | None = None,
) -> list[str]:
    """What ``recflow deploy version [--target through]`` would do, line by line."""
    cfg = ctx.params.deploy
    approval = cfg.require_approval if require_approval is None else require_approval
    targets = list(cfg.targets)
    if through is not None:
        if through not in targets:
            raise InputError(
                f"target {through!r} is not one of deploy.targets ({', '.join(targets)})"
            )
        targets = targets[: targets.index(through) + 1]
    registry = open_registry(ctx.params, ctx.root)
    reg_cfg = registry.cfg
    lines = [f"plan: roll out {version} to {' then '.join(targets)} (dry run: nothing changes)"]
    try:
        marker = registry.record.head(marker_key(version))
        gate = read_version(registry.record, version).gate if marker else {}
        lines.append(
            f"  version: {'registered' if marker else 'NOT registered'} in the "
            f"{registry.record_cloud} store"
            + (f", gate verdict {gate.get('verdict')}" if marker else "")
            + (" (blocked: never deployed)" if gate.get("blocked") else "")
        )
    except RecflowError as exc:
        lines.append(f"  version: the store of record cannot be read: {exc}")
    record = Records(ctx.run_dir).load(version)
    if record is not None:
        lines.append(
            f"  rollout record: {record.status}, at {record.where()} (a run resumes there)"
        )
    metrics = cfg.metrics
    prometheus = find_binary(metrics.prometheus) if metrics.source != "scrape" else None
    source = (
        f"Prometheus ({prometheus}, scraping every {metrics.scrape_interval_s:g} s, PromQL)"
        if prometheus
        else "each server's /metrics"
    )
    lines.append(f"  metrics: {source}")
    for index, cloud in enumerate(targets):
        fleet = getattr(cfg.fleets, cloud)
        try:
            store = registry.store(cloud)
            production = _alias(store, reg_cfg.promote_alias)
            candidate = _alias(store, reg_cfg.candidate_alias)
            present = "present" if store.head(marker_key(version)) else "to be replicated"
            state = f"production {production}, candidate {candidate}, {version} {present}"
        except RecflowError as exc:
            production, state = "unknown", f"store unreachable: {exc}"
        if index and approval:
            lines.append("  -- wait for the decision: recflow deploy approve|reject --")
        lines.append(
            f"  {cloud}: fleet of {fleet.servers} local server(s) x {fleet.workers} worker(s), "
            f"store {getattr(ctx.params.stores, cloud).url}; {state}"
        )
        if production == version:
            lines.append("    nothing to do: the version is production there")
            continue
        first = production == "none"
        lines.append("    1. infra: version intact in the store, every server ready, metrics seen")
        if first:
            lines.append(
                f"    2. bake (no stable version yet): {cfg.shadow.requests} replayed requests "
                "against the candidate alone, hit rate against the popularity fallback's"
            )
        else:
            lines.append(
                f"    2. shadow: {cfg.shadow.requests} replayed requests, copies scored by the "
                f"candidate against stable {production}"
            )
            for n, weight in enumerate(cfg.canary.weights, start=3):
                lines.append(
                    f"    {n}. canary {weight * 100:g}%: until each arm answered "
                    f"{cfg.analysis.min_requests} (at most {cfg.canary.max_requests} requests)"
                )
        lines.append(
            f"    {len(cfg.canary.weights) + 3 if not first else 3}. full: every server serves "
            f"{version}; {reg_cfg.promote_alias} in {cloud} -> {version} in the ledger"
        )
    if len(targets) < len(cfg.targets):
        after = cfg.targets[len(targets)]
        lines.append(
            f"  then stop: the rollout stays open for {after} (recflow deploy {version} "
            f"--target {after})"
        )
    a = cfg.analysis

    def limit(name: str, unit: str = "") -> str:
        lim = getattr(a, name)
        return (
            f"max {lim.max:g}{unit}, stable + max({lim.max_increase:g}{unit}, "
            f"{lim.max_relative_increase:g} x stable)"
        )

    shown = (
        ctx.prepared.relative_to(ctx.root)
        if ctx.prepared.is_relative_to(ctx.root)
        else ctx.prepared
    )
    lines += [
        f"  replay: {cfg.replay.split} sessions of {shown}, {cfg.replay.rate:g}/s, "
        f"{cfg.replay.concurrency} in flight, k={cfg.replay.k}, at most {cfg.replay.max_s:g} s",
        f"  analysis: at least {a.min_requests} answers per arm, confidence {a.confidence:g}; "
        f"inconclusive: {cfg.on_inconclusive}"
        + (f" (up to {cfg.max_holds} holds)" if cfg.on_inconclusive == "hold" else ""),
        f"    error rate: {limit('error_rate')}",
        f"    fallback rate: {limit('fallback_rate')}",
        f"    p99 latency: {limit('latency_p99_ms', ' ms')}",
        f"    hit rate: stable - max({a.hit_rate.max_drop:g}, {a.hit_rate.max_relative_drop:g} x "
        f"stable); shadow overlap at least {a.min_shadow_overlap:g}",
        "  on a failed step: every touched target back to stable at once, candidate unloaded, "
        "ledger entries with the step, metrics and thresholds",
    ]
    return lines
