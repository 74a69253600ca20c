"""The vendored SSVC decision tables: every input combination of each looked up through
``triage.ssvc`` and compared with the CSV row read here with nothing but the csv module."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest

from endpoint_forensics.triage import ssvc

FOLDER = Path(ssvc.__file__).with_name("decision_tables")
TABLES = {
    "cisa_coordinator_2_0_3.csv": ssvc.COORDINATOR,
    "cisa_bod_26_04_1_0_0.csv": ssvc.BOD_2604,
    "deployer_patch_application_priority_1_0_0.csv": ssvc.DEPLOYER,
}
# The inputs' values each table must accept: the published decision points, not what the
# file happens to use (a file missing a value would be caught here, not only a wrong cell).
VALUES = {
    "cisa_coordinator_2_0_3.csv": (
        ("none", "public poc", "active"),
        ("no", "yes"),
        ("partial", "total"),
        ("low", "medium", "high"),
    ),
    "cisa_bod_26_04_1_0_0.csv": (("no", "yes"), ("no", "yes"), ("no", "yes"), ("partial", "total")),
    "deployer_patch_application_priority_1_0_0.csv": (
        ("none", "public poc", "active"),
        ("small", "controlled", "open"),
        ("no", "yes"),
        ("low", "medium", "high", "very high"),
    ),
}


def _csv_rows(file: str) -> dict[tuple[str, ...], str]:
    with (FOLDER / file).open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        return {tuple(r[1:-1]): r[-1] for r in reader}


@pytest.mark.parametrize("file", sorted(TABLES))
def test_every_input_combination_gives_the_vendored_csv_outcome(file: str) -> None:
    table, expected = TABLES[file], _csv_rows(file)
    combinations = list(itertools.product(*VALUES[file]))
    assert len(expected) == len(combinations), "one row per combination, no more"
    for combination in combinations:
        assert table.decide(*combination) == expected[combination], combination
    assert sorted(table.combinations()) == sorted(combinations)


def test_our_spellings_reach_the_same_cells() -> None:
    # EPF_Triage_CL stores "poc" and booleans; the files say "public poc" and yes/no.
    assert ssvc.COORDINATOR.decide("poc", "no", "total", "medium") == "track*"
    assert ssvc.COORDINATOR.decide("active", "yes", "total", "low") == "attend"
    assert ssvc.BOD_2604.decide(True, True, "no", "total") == "3 days & forensic investigation"
    assert ssvc.BOD_2604.decide(False, False, "no", "total") == "fix on system upgrade"
    assert ssvc.display(ssvc.COORDINATOR, "track*") == "Track*"
    assert ssvc.display(ssvc.DEPLOYER, "out-of-cycle") == "Out-of-Cycle"


def test_a_value_the_table_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="Exploitation cannot be 'likely'"):
        ssvc.COORDINATOR.decide("likely", "no", "total", "low")
    with pytest.raises(ValueError, match="takes 4 inputs"):
        ssvc.BOD_2604.decide(True, True, "no")


def test_versions_and_clocks_come_from_the_files() -> None:
    assert ssvc.model_versions() == {
        "Coordinator": "CISA Coordinator 2.0.3",
        "Bod2604": "CISA BOD 26-04 1.0.0",
        "Deployer": "SSVC Deployer patch application priority 1.0.0",
    }
    assert [p.label for p in ssvc.BOD_2604.inputs] == [
        "cisa:In KEV v1.0.0",
        "cisa:Asset Exposure v1.0.0",
        "ssvc:Automatable v2.0.0",
        "ssvc:Technical Impact v1.0.0",
    ]
    days = {o: ssvc.bod_due_days(o) for o in ssvc.BOD_2604.outcome.values}
    assert days == {
        "fix on system upgrade": None,
        "14 days": 14,
        "60 days": 60,
        "3 days": 3,
        "3 days & forensic investigation": 3,
    }
    assert [o for o in days if ssvc.is_forensic(o)] == ["3 days & forensic investigation"]


def test_a_table_with_a_hole_or_a_repeat_is_refused(tmp_path: Path, monkeypatch) -> None:
    text = (FOLDER / "cisa_bod_26_04_1_0_0.csv").read_text()
    monkeypatch.setattr(ssvc, "_FOLDER", tmp_path)
    (tmp_path / "holed_1_0_0.csv").write_text("\n".join(text.splitlines()[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"no outcome for \('yes', 'yes', 'yes', 'total'\)"):
        ssvc._read("x", "x", "holed_1_0_0.csv")
    lines = text.splitlines()
    (tmp_path / "repeat_1_0_0.csv").write_text("\n".join([*lines, "16" + lines[1][1:]]) + "\n")
    with pytest.raises(ValueError, match="row 16 repeats"):
        ssvc._read("x", "x", "repeat_1_0_0.csv")
