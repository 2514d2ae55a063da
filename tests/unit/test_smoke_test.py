"""Unit tests of flows.smoke_test's pure parts: /version against labels, golden-set comparison."""

from __future__ import annotations

from flows.manifest import GoldenSet
from flows.smoke_test import compare_golden, golden_table, lookup, version_mismatches

LABELS = {
    "org.opencontainers.image.revision": "a" * 40,
    "io.aiship.model.name": "iris",
    "io.aiship.model.version": "3",
    "io.aiship.model.sha256": "b" * 64,
}


def version_doc(**overrides):
    doc = {"git_sha": "a" * 40, "model": {"name": "iris", "version": 3, "sha256": "b" * 64}}
    doc.update(overrides)
    return doc


def test_lookup_follows_dotted_paths():
    assert lookup({"model": {"name": "x"}}, "model.name") == "x"
    assert lookup({"model": "flat"}, "model.name") is None


def test_version_matching_the_labels_has_no_mismatch():
    assert version_mismatches(version_doc(), LABELS) == []


def test_version_with_another_git_sha_is_reported():
    problems = version_mismatches(version_doc(git_sha="c" * 40), LABELS)
    assert len(problems) == 1 and "org.opencontainers.image.revision" in problems[0] and "c" * 40 in problems[0]


def test_version_without_the_model_reports_each_missing_field():
    problems = version_mismatches({"git_sha": "a" * 40}, LABELS)
    assert len(problems) == 3 and all("None" in p for p in problems)


def test_exact_rule_flags_only_differing_rows():
    golden = GoldenSet(rule="exact", inputs=[[1.0], [2.0], [3.0]], expected=[0, 1, 1])
    rows = compare_golden(golden, [0, 0, 1])
    assert [r.ok for r in rows] == [True, False, True]
    assert rows[1].expected == 1 and rows[1].got == 0 and rows[1].inputs == (2.0,)


def test_abs_tol_rule_accepts_within_tolerance_and_flags_beyond():
    golden = GoldenSet(rule="abs_tol", tolerance=0.01, inputs=[[1.0], [2.0]], expected=[0.5, 0.25])
    rows = compare_golden(golden, [0.505, 0.30])
    assert [r.ok for r in rows] == [True, False]


def test_abs_tol_compares_probability_vectors_elementwise():
    golden = GoldenSet(rule="abs_tol", tolerance=1e-6, inputs=[[1.0]], expected=[[0.2, 0.8]])
    assert compare_golden(golden, [[0.2, 0.8]])[0].ok
    assert not compare_golden(golden, [[0.8, 0.2]])[0].ok


def test_fewer_answers_than_rows_fail_every_row():
    golden = GoldenSet(rule="exact", inputs=[[1.0], [2.0]], expected=[0, 1])
    rows = compare_golden(golden, [0])
    assert [r.ok for r in rows] == [False, False] and rows[1].got is None


def test_table_summarizes_long_inputs():
    golden = GoldenSet(rule="exact", inputs=[[float(i) for i in range(30)]], expected=[1])
    table = golden_table(compare_golden(golden, [1]))
    assert table == [{"row": 0, "inputs": "[0, 1, 2, 3, …] (30 values)", "expected": "1", "got": "1", "ok": "yes"}]
