"""Stage ``evaluate``: the regression gate of the candidate against the production model.

    python -m pipelines.stages.evaluate --params params.yaml --candidate models/candidate \\
        --prepared data/prepared --out models/candidate/evaluation --metrics metrics/evaluate.json

Both models answer through their shipped artifacts (``<model>/optimized``, opened by the
serving runtime), on a fixed golden set of test users. The gate checks, in order:

- infra: the candidate's artifact loads in the serving runtime and answers a request with the
  promised shapes; its parity with the PyTorch model passed; its file is within the size budget;
- behaviour: finite scores, no duplicate items, catalog items only, a cold-start user gets a
  full list, answers do not change with padding or with the rest of the batch;
- latency: p99 of batch-1 requests within budget;
- quality: NDCG@10 and Recall@10 on the golden set (``pipelines.gate.golden``) above their
  minimums and, against production, not worse than the allowed drop with bootstrap confidence
  (``pipelines.gate.rules``). Both models are scored under the candidate's protocol (history
  masked or not, tie rule; its manifest, or the config in ``model.pt`` for a manifest written
  before version 3); a production model selected under another protocol is not compared: the
  ``production_protocol`` check fails and names both.

With no production model (none is given, or its folder does not exist) the first-model rule
applies: every check but the comparison must pass. ``--out`` receives ``verdict.json``
(:class:`~pipelines.gate.verdict.Verdict`), ``verdict.schema.json``, ``report.md`` and
``report.html`` in every case, the same bytes for the same inputs; the measured latency goes to
``--metrics``. A blocked candidate then exits with code 3.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.core.errors import InputError, RecflowError
from pipelines.core.io import atomic_dir, write_json, write_text
from pipelines.core.judgment import Check
from pipelines.core.params import EvaluateConfig
from pipelines.gate import behaviour
from pipelines.gate.golden import (
    DEFAULT_PROTOCOL,
    GOLDEN_SEED,
    answer_quality,
    golden_set,
    mean_quality,
)
from pipelines.gate.report import render_html, render_markdown
from pipelines.gate.rules import absolute_check, comparative_check, verdict
from pipelines.gate.verdict import (
    QUALITY_METRICS,
    VERDICT_VERSION,
    CandidateResult,
    ProductionResult,
    QualityMetric,
    Verdict,
    write_verdict,
)
from pipelines.model.saved import load_model, saved_protocol
from pipelines.model.training.metrics import ScoringProtocol
from pipelines.serving.latency import Timing, measure
from pipelines.serving.manifest import ArtifactError, ArtifactManifest, read_manifest
from pipelines.serving.parity import Scorer, eager_scorer
from pipelines.serving.runtime import Recommender

log = logging.getLogger("recflow.evaluate")


class GateBlocked(RecflowError):
    """The candidate did not pass the gate; the verdict and report say why."""

    exit_code = 3


def _reference(model_path: Path) -> Scorer | None:
    """The PyTorch model's scores, where the candidate's ``model.pt`` is there to load."""
    return eager_scorer(load_model(model_path)) if model_path.is_file() else None


def _infra_checks(
    cfg: EvaluateConfig, candidate: Path, prepared: Path
) -> tuple[list[Check], Recommender | None, list[np.ndarray], np.ndarray]:
    """Load and infra checks of the candidate, and the golden set as its artifact reads it."""
    optimized = candidate / "optimized"
    try:
        recommender = Recommender.load(optimized)
    except ArtifactError as exc:
        histories, targets = golden_set(prepared, cfg.golden_users)
        return (
            [Check(metric="infra_load", outcome="fail", detail=str(exc))],
            None,
            histories,
            targets,
        )
    histories, targets = golden_set(prepared, cfg.golden_users, event_types=recommender.event_types)
    loaded = f"{recommender.name} loads"
    checks = [Check(metric="infra_load", outcome="pass", value=recommender.name, detail=loaded)]
    try:
        items, _ = recommender.recommend(recommender.pad(histories[:4] or [np.zeros(0, np.int64)]))
        shape = [int(n) for n in items.shape]
        answers = "answers a request"
        checks.append(Check(metric="infra_request", outcome="pass", value=shape, detail=answers))
    except (ArtifactError, ValueError) as exc:
        checks.append(Check(metric="infra_request", outcome="fail", detail=str(exc)))
        return checks, None, histories, targets
    checks.append(_parity_check(recommender))
    file = recommender.entry.file or ""
    size_mb = (optimized / file).stat().st_size / 2**20
    checks.append(
        Check(
            metric="artifact_size_mb",
            outcome="pass" if size_mb <= cfg.max_artifact_mb else "fail",
            value=round(size_mb, 3),
            limit=cfg.max_artifact_mb,
            detail=f"{file} is {size_mb:.2f} MB",
        )
    )
    return checks, recommender, histories, targets


def _parity_check(recommender: Recommender) -> Check:
    """The manifest's record of the shipped artifact's parity with the PyTorch model."""
    entry, parity = recommender.entry, recommender.entry.parity
    if parity is None or not parity.passed or entry.status != "shipped":
        reason = parity.reason if parity else "none recorded"
        return Check(
            metric="parity",
            outcome="fail",
            detail=f"shipped artifact has no passing parity record: {reason}",
        )
    return Check(
        metric="parity",
        outcome="pass",
        value={"max_abs_error": parity.max_abs_error, "top10_overlap": parity.top10_overlap},
        limit=parity.thresholds.model_dump(),
        detail="parity with the PyTorch model passed at optimize time",
    )


def _behaviour_checks(
    cfg: EvaluateConfig,
    recommender: Recommender,
    histories: list[np.ndarray],
    reference: Scorer | None,
) -> list[Check]:
    sample = recommender.pad(histories[:256])
    checks = []
    for run in (
        lambda: behaviour.finite_scores(recommender, sample),
        lambda: behaviour.no_duplicates(recommender, sample),
        lambda: behaviour.catalog_only(recommender, sample),
        lambda: behaviour.cold_start(recommender),
        lambda: behaviour.batch_invariance(recommender, sample, cfg.invariance_tolerance),
    ):
        try:
            checks.append(run())
        except ArtifactError as exc:
            checks.append(Check(metric="behaviour", outcome="fail", detail=str(exc)))
    if reference is not None:
        checks.append(
            behaviour.padding_invariance(
                recommender, histories, reference, cfg.invariance_tolerance
            )
        )
    return checks


def _latency_check(
    cfg: EvaluateConfig, recommender: Recommender, history: np.ndarray
) -> tuple[Check, Timing]:
    """Batch-1 latency against its budget.

    The check records only pass or fail: the measured p50 and p99 differ from run to run and
    go to the metrics file, so the verdict and report stay the same bytes on a rerun.
    """
    timing = measure(
        recommender.backend,
        recommender.precision,
        recommender.recommend,
        history,
        [1],
        warmup=5,
        iterations=cfg.latency_requests,
    )[0]
    ok = timing.p99_ms <= cfg.latency_p99_ms
    budget = f"{cfg.latency_p99_ms:g} ms"
    where = "within" if ok else "over"
    check = Check(
        metric="latency_p99_ms",
        outcome="pass" if ok else "fail",
        limit=cfg.latency_p99_ms,
        detail=f"batch-1 p99 {where} the {budget} budget over {cfg.latency_requests} requests "
        "(measured values in the evaluate metrics)",
    )
    return check, timing


def judge_candidate(
    cfg: EvaluateConfig,
    candidate: Path,
    prepared: Path,
    out: Path,
    *,
    production: Path | None = None,
    metrics: Path | None = None,
) -> Verdict:
    """Judge ``candidate`` against ``production``; write the verdict.

    Args:
        cfg: The ``evaluate`` section.
        candidate: The candidate's folder (``model.pt`` and ``optimized/``).
        prepared: The prepare stage's folder (the golden set's users).
        out: Folder for ``verdict.json``, its schema and the reports (replaced as a whole).
        production: The production model's folder (``model.pt``, ``optimized/``); None (or
            a folder without ``optimized/``): there is none, the first-model rule applies.
        metrics: Where to write the verdict's numbers and the measured latency for DVC.

    Returns:
        The verdict (also written to ``out/verdict.json``).

    Raises:
        GateBlocked: The candidate is blocked (after the verdict and report are written).
        InputError: The prepared data is missing or malformed.
    """
    checks, recommender, histories, targets = _infra_checks(cfg, candidate, prepared)
    log.info("golden set: %d test users", len(targets))
    quality: dict[QualityMetric, float] = {}
    production_quality: dict[QualityMetric, float] = {}
    timing: Timing | None = None
    first_model = production is None or not (production / "optimized").exists()
    if recommender is not None:
        checks += _behaviour_checks(cfg, recommender, histories, _reference(candidate / "model.pt"))
        latency, timing = _latency_check(cfg, recommender, recommender.pad(histories))
        checks.append(latency)
        protocol = _protocol(recommender.manifest, candidate)
        candidate_users = answer_quality(recommender, histories, targets, protocol)
        quality = mean_quality(candidate_users)
        checks += [absolute_check(m, quality[m], cfg.quality) for m in QUALITY_METRICS]
        if first_model:
            checks.append(
                Check(
                    metric="quality_vs_production",
                    outcome="skipped",
                    detail=f"no production model ({production or 'none set'}): first-model rule "
                    "(every other check must pass, quality must meet its minimums)",
                )
            )
        else:
            assert production is not None
            production_quality, comparisons = _compare(
                cfg,
                production,
                prepared,
                (histories, targets),
                recommender.event_types,
                candidate_users,
                protocol,
            )
            checks += comparisons
    outcome, blocked = verdict(checks, cfg.on_inconclusive)
    manifest = recommender.manifest if recommender else _manifest_or_none(candidate / "optimized")
    result = Verdict(
        schema_version=VERDICT_VERSION,
        outcome=outcome,
        blocked=blocked,
        first_model=first_model,
        on_inconclusive=cfg.on_inconclusive,
        golden_users=len(targets),
        candidate=CandidateResult(
            path=str(candidate),
            artifact=recommender.name if recommender else None,
            model_sha256=manifest.model_sha256 if manifest else None,
            quality=quality,
        ),
        production=None
        if first_model
        else ProductionResult(path=str(production), quality=production_quality),
        checks=tuple(checks),
    )
    with atomic_dir(out) as folder:
        write_verdict(folder, result)
        write_text(folder / "report.md", render_markdown(result))
        write_text(folder / "report.html", render_html(result))
    if metrics is not None:
        write_json(metrics, _metrics(result, timing))
    stopping = result.stopping
    log.info("verdict: %s%s", outcome, f" ({', '.join(stopping)})" if stopping else "")
    if blocked:
        raise GateBlocked(
            f"candidate blocked ({outcome}): {', '.join(stopping)}; see {out / 'report.md'}"
        )
    return result


def _compare(
    cfg: EvaluateConfig,
    production: Path,
    prepared: Path,
    golden: tuple[list[np.ndarray], np.ndarray],
    event_types: bool,
    candidate_users: dict[QualityMetric, np.ndarray],
    protocol: ScoringProtocol,
) -> tuple[dict[QualityMetric, float], list[Check]]:
    """Paired quality of production against the candidate's per-user quality.

    ``golden`` is the golden set in the candidate's form (step tokens when ``event_types``);
    production answers the same users in the form its own artifact reads.
    """
    try:
        serving = Recommender.load(production / "optimized")
    except ArtifactError as exc:
        detail = f"production model: {exc}"
        return {}, [Check(metric="production_load", outcome="fail", detail=detail)]
    try:
        production_protocol = _protocol(serving.manifest, production)
    except InputError as exc:
        detail = f"production model: {exc}"
        return {}, [Check(metric="production_load", outcome="fail", detail=detail)]
    if production_protocol != protocol:
        detail = (
            f"the candidate is scored with {_describe(protocol)}, production was selected with "
            f"{_describe(production_protocol)}: numbers of different protocols do not compare. "
            "Retrain the candidate under production's protocol, or promote it by hand "
            "(recflow registry promote) with the reason"
        )
        return {}, [Check(metric="production_protocol", outcome="fail", detail=detail)]
    histories, targets = golden
    if serving.event_types != event_types:
        histories, targets = golden_set(prepared, cfg.golden_users, event_types=serving.event_types)
    production_users = answer_quality(serving, histories, targets, protocol)
    checks = []
    for index, metric in enumerate(QUALITY_METRICS):
        check, _ = comparative_check(
            metric,
            candidate_users[metric],
            production_users[metric],
            cfg.quality,
            seed=GOLDEN_SEED + index,
        )
        checks.append(check)
    return mean_quality(production_users), checks


def _protocol(manifest: ArtifactManifest, model_folder: Path) -> ScoringProtocol:
    """The model's protocol: its manifest's, else its ``model.pt`` config's, else the default.

    Raises:
        InputError: ``model.pt`` is unreadable.
    """
    if manifest.protocol is not None:
        return manifest.protocol
    model_path = model_folder / "model.pt"
    return saved_protocol(model_path) if model_path.is_file() else DEFAULT_PROTOCOL


def _describe(protocol: ScoringProtocol) -> str:
    masked = "history masked" if protocol.mask_history else "history not masked"
    return f"{masked} (mask_history={str(protocol.mask_history).lower()}), ties {protocol.ties}"


def _manifest_or_none(folder: Path) -> ArtifactManifest | None:
    try:
        return read_manifest(folder)
    except ArtifactError:
        return None


def _metrics(result: Verdict, timing: Timing | None) -> dict[str, Any]:
    """The verdict's numbers for DVC, with the latency the verdict leaves out."""
    values: dict[str, Any] = {
        "verdict": result.outcome,
        "blocked": result.blocked,
        # the key of the committed metrics file, kept so it stays the same bytes
        "bootstrap": result.first_model,
        **{f"candidate_{k}": v for k, v in result.candidate.quality.items()},
    }
    if timing is not None:
        values["latency_p50_ms"] = timing.p50_ms
        values["latency_p99_ms"] = timing.p99_ms
    for check in result.checks:
        if check.metric == "artifact_size_mb":
            values["artifact_size_mb"] = check.value
        elif check.metric.startswith("quality_vs_production_") and isinstance(check.value, dict):
            metric = check.metric.removeprefix("quality_vs_production_")
            values[f"diff_{metric}"] = check.value["difference"]
            values[f"diff_{metric}_ci"] = check.value["ci"]
    return values
