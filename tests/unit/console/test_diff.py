"""The diff between two versions of a case names each changed element by its path."""

from __future__ import annotations

from service.console.diff import diff, side_by_side


def test_changed_added_removed_and_nested_paths():
    before = {"institution": "A", "surgery": [{"date": "2019", "events": []}], "gone": 1, "same": None}
    after = {
        "institution": "B",
        "surgery": [{"date": "2019-06", "events": []}, {"date": "2020"}],
        "same": None,
    }
    rows = {(c.path, c.kind, c.before, c.after) for c in diff(before, after)}
    assert rows == {
        ("institution", "changed", '"A"', '"B"'),
        ("surgery[0].date", "changed", '"2019"', '"2019-06"'),
        ("surgery[1]", "added", "", '{"date": "2020"}'),
        ("gone", "removed", "1", ""),
    }


def test_no_change_and_type_changes():
    assert diff({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}) == []
    # 1 and 1.0 compare equal in Python, yet the stored JSON differs: shown
    assert [c.path for c in diff({"a": 1}, {"a": 1.0})] == ["a"]
    assert [c.path for c in diff({"a": None}, {"a": {"b": 1}})] == ["a"]


def test_side_by_side_pairs_every_leaf_and_marks_the_differences() -> None:
    ours = {"status": "final", "effectiveDateTime": "2024-12-24", "note": [{"text": "a"}], "gone": {"x": 1}}
    theirs = {"status": "final", "effectiveDateTime": "2025-02-01", "note": [{"text": "a"}, {"text": "b"}]}
    rows = [(c.path, c.before, c.after, c.kind) for c in side_by_side(ours, theirs)]
    assert rows == [
        ("status", '"final"', '"final"', "same"),
        ("effectiveDateTime", '"2024-12-24"', '"2025-02-01"', "changed"),
        ("note[0].text", '"a"', '"a"', "same"),
        ("note[1].text", "", '"b"', "added"),
        ("gone.x", "1", "", "removed"),
    ]


def test_side_by_side_with_a_value_on_one_side_and_a_structure_on_the_other() -> None:
    rows = [(c.path, c.before, c.after, c.kind) for c in side_by_side({"v": "x"}, {"v": {"code": "y"}})]
    assert rows == [("v", '"x"', "", "removed"), ("v.code", "", '"y"', "added")]
