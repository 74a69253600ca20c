from endpoint_forensics.sources.tvm import without_group_moves


def change(status, group, ts="2026-11-20 06:00:00", rid="d1_edge_1.0_CVE-1_"):
    return {"id": rid, "status": status, "rbacGroupName": group, "eventTimestamp": ts}


def test_a_device_group_move_pair_is_removed():
    records = [
        change("Fixed", "Old"),
        change("New", "New"),
        change("New", "Old", rid="d2_x_1_CVE-2_"),
    ]
    kept, dropped = without_group_moves(records)
    assert dropped == 2
    assert kept == [records[2]]


def test_a_version_upgrade_is_a_real_change():
    # Fixed for the old version and New for the new one: different record ids, both kept.
    records = [
        change("Fixed", "G", rid="d1_edge_1.0_CVE-1_"),
        change("New", "G", rid="d1_edge_2.0_CVE-1_"),
    ]
    assert without_group_moves(records) == (records, 0)


def test_fixed_then_new_in_the_same_group_or_at_other_times_are_kept():
    same_group = [change("Fixed", "G"), change("New", "G")]
    other_time = [change("Fixed", "A"), change("New", "B", ts="2026-11-20 12:00:00")]
    assert without_group_moves(same_group)[1] == 0
    assert without_group_moves(other_time)[1] == 0
    updated = [change("Updated", "A"), change("Updated", "B")]
    assert without_group_moves(updated)[1] == 0
