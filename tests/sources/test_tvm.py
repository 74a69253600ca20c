import orjson

from endpoint_forensics.sources.tvm_changes import group_move_lines


def change(line, status, group, ts="2026-11-20 06:00:00", rid="d1_edge_1.0_CVE-1_"):
    return {
        "_line": line,
        "id": rid,
        "status": status,
        "rbacGroupName": group,
        "eventTimestamp": ts,
    }


def spill(tmp_path, records):
    path = tmp_path / "changes.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def test_a_device_group_move_pair_is_found(tmp_path):
    records = [
        change(0, "Fixed", "Old"),
        change(1, "New", "New"),
        change(2, "New", "Old", rid="d2_x_1_CVE-2_"),
    ]
    assert group_move_lines(spill(tmp_path, records)) == {0, 1}


def test_a_line_that_is_not_an_object_does_not_stop_the_pairing(tmp_path):
    """Fuzzing: a delta page item that is not an object is spilled as it is; DuckDB refused
    it ("Expected OBJECT"), and when its quote of the line was cut inside a character the
    message itself raised UnicodeDecodeError. The pairing now reads past such lines."""
    item = ["00000\x1f\U00010000\U00010000\U00010000"] * 2
    records = [change(0, "Fixed", "Old"), item, [1], "x", None, change(5, "New", "New")]
    assert group_move_lines(spill(tmp_path, records)) == {0, 5}


def test_a_version_upgrade_is_a_real_change(tmp_path):
    # Fixed for the old version and New for the new one: different record ids, both kept.
    records = [
        change(0, "Fixed", "G", rid="d1_edge_1.0_CVE-1_"),
        change(1, "New", "G", rid="d1_edge_2.0_CVE-1_"),
    ]
    assert group_move_lines(spill(tmp_path, records)) == set()


def test_same_group_other_times_and_updates_are_not_moves(tmp_path):
    same_group = [change(0, "Fixed", "G"), change(1, "New", "G")]
    other_time = [change(0, "Fixed", "A"), change(1, "New", "B", ts="2026-11-20 12:00:00")]
    updated = [change(0, "Updated", "A"), change(1, "Updated", "B")]
    for records in (same_group, other_time, updated):
        assert group_move_lines(spill(tmp_path, records)) == set()


def test_each_fixed_pairs_with_one_new(tmp_path):
    records = [change(0, "Fixed", "A"), change(1, "New", "B"), change(2, "New", "C")]
    assert group_move_lines(spill(tmp_path, records)) == {0, 1}
