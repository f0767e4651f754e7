"""The synthetic quality bench's variant flag: checked before any work, as strictly as the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_synthetic_ceiling import main
from pipelines.core.params import ConfigError


@pytest.mark.parametrize(
    ("train_json", "message"),
    [
        ('{"repeat_term": true', "--train-json is not valid JSON"),
        ('["repeat_term"]', "--train-json must be a JSON object"),
        ('{"repeat_term": "yes"}', "train.repeat_term: Input should be a valid boolean"),
        ('{"repeat_trm": true}', "train.repeat_trm: unknown key"),
    ],
)
def test_a_bad_variant_is_refused_before_anything_runs(
    project_root: Path, tmp_path: Path, train_json: str, message: str
) -> None:
    out = tmp_path / "variant.json"
    argv = ["--params", str(project_root / "params.yaml"), "--train-json", train_json]
    with pytest.raises(ConfigError) as info:
        main([*argv, "--out", str(out)])
    assert message in str(info.value)
    assert not out.exists()
