"""The tenant scores as documented (defender-apis.md B.5.8): one object each, Score.Read.All,
Defender's seven fractional digits; the values follow the recommendations as of now."""

from __future__ import annotations

import re
from typing import Any

import httpx

from epf_emulator import Emulator
from epf_emulator.mde.scores import tenant_scores

from .conftest import bearer, get_all

MDE = "https://api.securitycenter.microsoft.com"


def test_each_score_is_one_documented_object(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> None:
    recommendations, _ = get_all(
        posture_client, f"{posture_emu.base_url}/api/recommendations", posture_token
    )
    expected = tenant_scores(recommendations)
    assert 0.0 < expected["exposureScore"] <= 100.0
    assert 0.0 < expected["configurationScore"] < 1000.0
    for path, entity in (
        ("exposureScore", "ExposureScore"),
        ("configurationScore", "ConfigurationScore"),
    ):
        answer = posture_client.get(
            f"{posture_emu.base_url}/api/{path}", headers=bearer(posture_token)
        )
        assert answer.status_code == 200, answer.text[:200]
        body: dict[str, Any] = answer.json()
        assert set(body) == {"@odata.context", "time", "score"}
        assert body["@odata.context"].endswith(f"/api/$metadata#{entity}/$entity")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", body["time"])
        assert body["score"] == expected[path]


def test_a_score_needs_score_read_all(posture_emu: Emulator, posture_client: httpx.Client) -> None:
    others = ["Machine.Read.All", "Vulnerability.Read.All", "SecurityRecommendation.Read.All"]
    for path in ("exposureScore", "configurationScore"):
        url = f"{posture_emu.base_url}/api/{path}"
        denied = posture_client.get(url, headers=bearer(posture_emu.token(MDE, roles=others)))
        assert denied.status_code == 403
        assert "Score.Read.All" in denied.json()["error"]["message"]
        allowed = posture_client.get(
            url, headers=bearer(posture_emu.token(MDE, roles=["Score.Read.All"]))
        )
        assert allowed.status_code == 200


def test_the_scores_follow_the_active_recommendations() -> None:
    records = [
        {"status": "Active", "exposureImpact": 30.5, "configScoreImpact": 2.0},
        {"status": "Active", "exposureImpact": 80.0, "configScoreImpact": 0.0},
        {"status": "Exception", "exposureImpact": 50.0, "configScoreImpact": 50.0},
    ]
    assert tenant_scores(records) == {"exposureScore": 100.0, "configurationScore": 980.0}
    assert tenant_scores([]) == {"exposureScore": 0.0, "configurationScore": 1000.0}
