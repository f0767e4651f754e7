"""Stage ``evaluate``: the regression gate of the candidate against the production model.

    python -m pipelines.gate.judge --params params.yaml --candidate models/candidate \\
        --prepared data/prepared --out models/candidate/evaluation --metrics metrics/evaluate.json

Both models answer through their shipped artifacts (``<model>/optimized``, opened by the
serving runtime), on a fixed golden set of test users. The gate checks, in order:

- infra: the candidate's artifact loads in the serving runtime and answers a request with the
  promised shapes; its parity with the PyTorch model passed; its file is within the size budget;
- behaviour: finite scores, no duplicate items, catalog items only, a cold-start user gets a
  full list, answers do not change with padding or with the rest of the batch;
- latency: p99 of batch-1 requests within budget;
- quality: NDCG@10 and Recall@10 above their minimums and, against production, not worse than
  the allowed drop with bootstrap confidence (``pipelines/gate.py``).

With no production model (``evaluate.production`` does not exist) the bootstrap rule applies:
every check but the comparison must pass. ``--out`` receives ``verdict.json``, ``report.md``
and ``report.html`` in every case; a blocked candidate then exits with code 3.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.core.errors import RecflowError
from pipelines.core.io import atomic_dir, write_json, write_text
from pipelines.core.params import EvaluateConfig
from pipelines.data.prepared import load_prepared
from pipelines.gate import behaviour
from pipelines.gate.report import render_html, render_markdown
from pipelines.gate.rules import Check, absolute_check, comparative_check, verdict
from pipelines.model.saved import load_model
from pipelines.serving.latency import measure
from pipelines.serving.manifest import ArtifactError, read_manifest
from pipelines.serving.runtime import Recommender

log = logging.getLogger("recflow.evaluate")

GOLDEN_SEED = 7
METRICS = ("ndcg@10", "recall@10")


class GateBlocked(RecflowError):
    """The candidate did not pass the gate; the verdict and report say why."""

    exit_code = 3


def golden_set(
    prepared: Path, users: int, *, event_types: bool = False
) -> tuple[list[np.ndarray], np.ndarray]:
    """A fixed, seeded sample of test users: their histories and next items.

    With ``event_types`` the histories are step tokens (``pipelines.model.sasrec.step_tokens``), for
    an artifact that reads them; the users are the same either way.
    """
    data = load_prepared(prepared, event_types=event_types)
    rng = np.random.default_rng(GOLDEN_SEED)
    count = min(users, len(data.test_target))
    rows = np.sort(rng.choice(len(data.test_target), size=count, replace=False))
    histories = data.model_inputs("test", event_types)
    return [histories[row] for row in rows], data.test_target[rows]


def per_user_quality(items: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """NDCG@10 and Recall@10 of each user from its top-k list (one held-out item per user)."""
    top = items[:, :10]
    hit = top == targets[:, None]
    found = hit.any(axis=1)
    rank = hit.argmax(axis=1)
    ndcg = np.where(found, 1.0 / np.log2(rank + 2.0), 0.0)
    return {"ndcg@10": ndcg, "recall@10": found.astype(np.float64)}


def _answer(recommender: Recommender, histories: list[np.ndarray]) -> np.ndarray:
    padded = recommender.pad(histories)
    return np.concatenate(
        [recommender.recommend(padded[i : i + 256])[0] for i in range(0, len(padded), 256)]
    )


def _reference(model_path: Path) -> Callable[[np.ndarray], np.ndarray] | None:
    if not model_path.is_file():
        return None
    model = load_model(model_path)

    def score(history: np.ndarray) -> np.ndarray:
        return model.score(torch.from_numpy(history)).numpy()

    return score


def _infra_checks(
    cfg: EvaluateConfig, candidate: Path, prepared: Path
) -> tuple[list[Check], Recommender | None, list[np.ndarray], np.ndarray]:
    """Load and infra checks of the candidate, and the golden set as its artifact reads it."""
    optimized = candidate / "optimized"
    try:
        recommender = Recommender.load(optimized)
    except ArtifactError as exc:
        histories, targets = golden_set(prepared, cfg.golden_users)
        return [Check("infra_load", "fail", None, None, str(exc))], None, histories, targets
    histories, targets = golden_set(prepared, cfg.golden_users, event_types=recommender.event_types)
    checks = [Check("infra_load", "pass", recommender.name, None, f"{recommender.name} loads")]
    try:
        items, _ = recommender.recommend(recommender.pad(histories[:4] or [np.zeros(0, np.int64)]))
        checks.append(Check("infra_request", "pass", list(items.shape), None, "answers a request"))
    except (ArtifactError, ValueError) as exc:
        checks.append(Check("infra_request", "fail", None, None, str(exc)))
        return checks, None, histories, targets
    parity = recommender.entry.get("parity") or {}
    passed = bool(parity.get("passed")) and recommender.entry.get("status") == "shipped"
    checks.append(
        Check(
            "parity",
            "pass" if passed else "fail",
            {k: parity.get(k) for k in ("max_abs_error", "top10_overlap")},
            parity.get("thresholds"),
            "parity with the PyTorch model passed at optimize time"
            if passed
            else f"shipped artifact has no passing parity record: {parity.get('reason')}",
        )
    )
    size_mb = (optimized / recommender.entry["file"]).stat().st_size / 2**20
    checks.append(
        Check(
            "artifact_size_mb",
            "pass" if size_mb <= cfg.max_artifact_mb else "fail",
            round(size_mb, 3),
            cfg.max_artifact_mb,
            f"{recommender.entry['file']} is {size_mb:.2f} MB",
        )
    )
    return checks, recommender, histories, targets


def _behaviour_checks(
    cfg: EvaluateConfig,
    recommender: Recommender,
    histories: list[np.ndarray],
    reference: Callable[[np.ndarray], np.ndarray] | None,
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
            checks.append(Check("behaviour", "fail", None, None, str(exc)))
    if reference is not None:
        checks.append(
            behaviour.padding_invariance(
                recommender, histories, reference, cfg.invariance_tolerance
            )
        )
    return checks


def _latency_check(cfg: EvaluateConfig, recommender: Recommender, history: np.ndarray) -> Check:
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
    return Check(
        "latency_p99_ms",
        "pass" if ok else "fail",
        timing.p99_ms,
        cfg.latency_p99_ms,
        f"batch-1 p99 {timing.p99_ms:.3f} ms (p50 {timing.p50_ms:.3f} ms) over "
        f"{cfg.latency_requests} requests",
    )


def evaluate(
    cfg: EvaluateConfig,
    candidate: Path,
    prepared: Path,
    out: Path,
    *,
    production: Path | None = None,
    metrics: Path | None = None,
) -> dict[str, Any]:
    """Judge ``candidate`` against ``production`` (default ``cfg.production``); write the verdict.

    Returns:
        The verdict (also written to ``out/verdict.json``).

    Raises:
        GateBlocked: The candidate is blocked (after the verdict and report are written).
        InputError: The prepared data is missing or malformed.
    """
    production = cfg.production if production is None else production
    checks, recommender, histories, targets = _infra_checks(cfg, candidate, prepared)
    log.info("golden set: %d test users", len(targets))
    quality: dict[str, Any] = {}
    production_quality: dict[str, Any] | None = None
    bootstrap = not (production / "optimized").exists()
    if recommender is not None:
        checks += _behaviour_checks(cfg, recommender, histories, _reference(candidate / "model.pt"))
        checks.append(_latency_check(cfg, recommender, recommender.pad(histories)))
        candidate_users = per_user_quality(_answer(recommender, histories), targets)
        quality = {m: round(float(candidate_users[m].mean()), 6) for m in METRICS}
        checks += [absolute_check(m, quality[m], cfg.quality) for m in METRICS]
        if bootstrap:
            checks.append(
                Check(
                    "quality_vs_production",
                    "skipped",
                    None,
                    None,
                    f"no production model at {production}: bootstrap rule (every other check "
                    "must pass, quality must meet its minimums)",
                )
            )
        else:
            production_quality, comparisons = _compare(
                cfg,
                production,
                prepared,
                (histories, targets),
                recommender.event_types,
                candidate_users,
            )
            checks += comparisons
    outcome, blocked = verdict(checks, cfg.on_inconclusive)
    manifest = _manifest_or_none(candidate / "optimized")
    result = {
        "verdict": outcome,
        "blocked": blocked,
        "bootstrap": bootstrap,
        "on_inconclusive": cfg.on_inconclusive,
        "golden_users": len(targets),
        "candidate": {
            "path": str(candidate),
            "artifact": recommender.name if recommender else None,
            "model_sha256": (manifest or {}).get("model_sha256"),
            "quality": quality,
        },
        "production": None
        if bootstrap
        else {"path": str(production), "quality": production_quality},
        "checks": [check.to_dict() for check in checks],
    }
    with atomic_dir(out) as folder:
        write_json(folder / "verdict.json", result)
        write_text(folder / "report.md", render_markdown(result))
        write_text(folder / "report.html", render_html(result))
    if metrics is not None:
        write_json(metrics, _metrics(result))
    failed = [c.name for c in checks if c.status in ("fail", "inconclusive")]
    log.info("verdict: %s%s", outcome, f" ({', '.join(failed)})" if failed else "")
    if blocked:
        raise GateBlocked(
            f"candidate blocked ({outcome}): {', '.join(failed)}; see {out / 'report.md'}"
        )
    return result


def _compare(
    cfg: EvaluateConfig,
    production: Path,
    prepared: Path,
    golden: tuple[list[np.ndarray], np.ndarray],
    event_types: bool,
    candidate_users: dict[str, np.ndarray],
) -> tuple[dict[str, float], list[Check]]:
    """Paired quality of production against the candidate's per-user quality.

    ``golden`` is the golden set in the candidate's form (step tokens when ``event_types``);
    production answers the same users in the form its own artifact reads.
    """
    try:
        serving = Recommender.load(production / "optimized")
    except ArtifactError as exc:
        return {}, [Check("production_load", "fail", None, None, f"production model: {exc}")]
    histories, targets = golden
    if serving.event_types != event_types:
        histories, targets = golden_set(prepared, cfg.golden_users, event_types=serving.event_types)
    production_users = per_user_quality(_answer(serving, histories), targets)
    checks = []
    for index, metric in enumerate(METRICS):
        check, _ = comparative_check(
            metric,
            candidate_users[metric],
            production_users[metric],
            cfg.quality,
            seed=GOLDEN_SEED + index,
        )
        checks.append(check)
    return {m: round(float(production_users[m].mean()), 6) for m in METRICS}, checks


def _manifest_or_none(folder: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(folder)
    except ArtifactError:
        return None


def _metrics(result: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "verdict": result["verdict"],
        "blocked": result["blocked"],
        "bootstrap": result["bootstrap"],
        **{f"candidate_{k}": v for k, v in result["candidate"]["quality"].items()},
    }
    for check in result["checks"]:
        if check["name"] == "latency_p99_ms":
            values["latency_p99_ms"] = check["value"]
        elif check["name"] == "artifact_size_mb":
            values["artifact_size_mb"] = check["value"]
        elif check["name"].startswith("quality_vs_production_") and isinstance(
            check["value"], dict
        ):
            metric = check["name"].removeprefix("quality_vs_production_")
            values[f"diff_{metric}"] = check["value"]["difference"]
            values[f"diff_{metric}_ci"] = check["value"]["ci"]
    return values
