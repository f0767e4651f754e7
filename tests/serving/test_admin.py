"""The admin API in process: load from a version folder, canary, shadow, promote, roll back."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from starlette.testclient import TestClient

from tests.serving.test_app import ADMIN_AUTH, AUTH, make_client, recommend, settle

USERS = [f"user-{i}" for i in range(200)]


def admin(client: TestClient, path: str, body: object = None, status: int = 200) -> dict:
    answer = client.post(path, json=body, headers=ADMIN_AUTH)
    assert answer.status_code == status, answer.text
    return answer.json()


def test_canary_is_sticky_by_user_and_takes_its_share(
    served_folder: Path, version_folder: Path, tmp_path: Path
) -> None:
    with make_client(served_folder, tmp_path, version_folder) as client:
        state = admin(client, "/admin/load", {"version": "v2"})
        assert state["desired"]["staged"] == "v2" and state["converged"]
        state = admin(client, "/admin/canary", {"version": "v2", "weight": 0.3})
        assert state["workers"][0]["canary"] == {
            "version": "v2",
            "artifact": "onnxruntime-fp32",
            "weight": 0.3,
        }
        first = {u: recommend(client, u, [])["model_version"] for u in USERS}
        again = {u: recommend(client, u, [])["model_version"] for u in USERS}
        assert first == again  # one user, one model
        share = Counter(first.values())["v2"] / len(USERS)
        assert 0.15 < share < 0.45
        arms = {recommend(client, u, [])["arm"] for u in USERS if first[u] == "v2"}
        assert arms == {"canary"}


def test_promote_then_roll_back(served_folder: Path, version_folder: Path, tmp_path: Path) -> None:
    with make_client(served_folder, tmp_path, version_folder) as client:
        admin(client, "/admin/load", {"version": "v2"})
        admin(client, "/admin/canary", {"version": "v2", "weight": 0.5})
        state = admin(client, "/admin/promote", {})
        assert state["desired"]["stable"] == "v2" and state["desired"]["canary"] is None
        assert {recommend(client, u, [])["model_version"] for u in USERS[:20]} == {"v2"}
        state = admin(client, "/admin/rollback")
        assert state["desired"]["stable"] == "v1" and state["desired"]["previous"] == []
        assert {recommend(client, u, [])["model_version"] for u in USERS[:20]} == {"v1"}
        refused = admin(client, "/admin/rollback", status=409)
        assert "no previous stable version" in refused["detail"]


def test_shadow_scores_copies_off_the_request_path(
    served_folder: Path, version_folder: Path, tmp_path: Path
) -> None:
    with make_client(served_folder, tmp_path, version_folder) as client:
        admin(client, "/admin/load", {"version": "v2"})
        admin(client, "/admin/shadow/start", {"version": "v2"})
        for i, user in enumerate(USERS[:30]):
            body = recommend(client, user, [f"unknown-{i}"] if i % 2 else [])
            assert body["model_version"] == "v1"  # the shadow never answers
        settle(client)  # the copies are scored in the background
        service = client.app.state.service  # type: ignore[attr-defined]
        service.write_report()
        shadow = client.get("/admin/state", headers=ADMIN_AUTH).json()["workers"][0]["shadow"]
        assert shadow["version"] == "v2" and shadow["scored"] == 30
        assert shadow["mean_overlap"] == 1.0  # the same model: the same answers
        assert shadow["mean_latency_ms"] > 0
        state = admin(client, "/admin/shadow/stop")
        assert state["desired"]["shadow"] is None and state["workers"][0]["shadow"] is None


def test_a_tampered_version_is_refused_and_the_current_one_keeps_serving(
    served_folder: Path, version_folder: Path, tmp_path: Path
) -> None:
    with make_client(served_folder, tmp_path, version_folder) as client:
        refused = admin(client, "/admin/load", {"version": "v-bad"}, status=409)
        assert "model.onnx" in refused["detail"] and "sha256" in refused["detail"]
        assert recommend(client, "u", [])["model_version"] == "v1"
        state = client.get("/admin/state", headers=ADMIN_AUTH).json()
        assert "v-bad" not in state["desired"]["versions"]
        missing = admin(client, "/admin/load", {"version": "v404"}, status=404)
        assert "v404" in missing["detail"]


def test_an_unloadable_artifact_is_refused(
    served_folder: Path, version_folder: Path, tmp_path: Path
) -> None:
    from pipelines.serving.server.sources import VersionFolder

    broken = tmp_path / "broken"
    broken.mkdir()
    for path in served_folder.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "model.onnx").write_bytes(b"not an onnx graph")  # recorded with its new sha256
    VersionFolder(version_folder).publish(broken, "v-broken")
    with make_client(served_folder, tmp_path, version_folder) as client:
        refused = admin(client, "/admin/load", {"version": "v-broken"}, status=409)
        assert "v-broken refused" in refused["detail"]
        assert recommend(client, "u", [])["model_version"] == "v1"


def test_admin_refusals_name_the_problem(
    served_folder: Path, version_folder: Path, tmp_path: Path
) -> None:
    with make_client(served_folder, tmp_path, version_folder) as client:
        cases = [
            ("/admin/load", {"version": "../../etc"}, 422, "version"),
            ("/admin/load", {"version": "v1/../../x"}, 422, "version"),
            ("/admin/load", {"version": ".."}, 422, "version"),
            ("/admin/canary", {"version": "v9", "weight": 0.1}, 409, "v9 is not loaded"),
            ("/admin/canary", {"version": "v1", "weight": 0.1}, 409, "stable version"),
            ("/admin/canary", {"version": "v1", "weight": 1.5}, 422, "weight"),
            ("/admin/promote", {}, 409, "no canary to promote"),
            ("/admin/shadow/start", {"version": "v1"}, 409, "stable version"),
        ]
        for path, body, status, words in cases:
            refused = admin(client, path, body, status=status)
            assert words in refused["detail"], (path, body, refused)
        assert recommend(client, "u", [])["model_version"] == "v1"


def test_tokens_keep_clients_and_admins_apart(served_folder: Path, tmp_path: Path) -> None:
    with make_client(served_folder, tmp_path) as client:
        as_client = client.get("/admin/state", headers=AUTH)
        assert as_client.status_code == 403
        assert "client token may not use the admin API" in as_client.json()["detail"]
        assert client.get("/admin/state").status_code == 401
        wrong = client.get("/admin/state", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "nope" not in wrong.text
        as_admin = client.post("/recommend", json={"user_id": "u"}, headers=ADMIN_AUTH)
        assert as_admin.status_code == 403
        no_registry = admin(client, "/admin/load", {"version": "v2"}, status=409)
        assert "no registry" in no_registry["detail"]


def test_unload_drops_a_canary_or_staged_version_and_keeps_what_serves(
    served_folder: Path, version_folder: Path, tmp_path: Path
) -> None:
    with make_client(served_folder, tmp_path, version_folder) as client:
        admin(client, "/admin/load", {"version": "v2"})
        admin(client, "/admin/canary", {"version": "v2", "weight": 0.5})
        state = admin(client, "/admin/unload", {"version": "v2"})
        desired = state["desired"]
        assert (desired["canary"], desired["canary_weight"], desired["staged"]) == (None, 0.0, None)
        assert state["workers"][0]["loaded"] == ["v1"]
        assert {recommend(client, u, [])["model_version"] for u in USERS[:40]} == {"v1"}
        refused = admin(client, "/admin/unload", {"version": "v1"}, status=409)
        assert "is the stable version" in refused["detail"]
        refused = admin(client, "/admin/unload", {"version": "v9"}, status=409)
        assert "was never loaded here" in refused["detail"]
        admin(client, "/admin/load", {"version": "v2"})
        admin(client, "/admin/promote", {"version": "v2"})
        refused = admin(client, "/admin/unload", {"version": "v1"}, status=409)
        assert "kept for a rollback" in refused["detail"]
        admin(client, "/admin/unload", {"version": "../x"}, status=422)


def test_the_model_latency_of_each_arm_is_measured(
    served_folder: Path, version_folder: Path, tmp_path: Path
) -> None:
    from tests.serving.test_app import metric

    with make_client(served_folder, tmp_path, version_folder, cache={"enabled": False}) as client:
        for user in USERS[:20]:
            recommend(client, user, [])
        count = metric(client, "recflow_model_latency_seconds_count", version="v1", arm="stable")
        assert count == 20
