"""The contract checks on the Spark cluster (#17, POTATO_CONTRACT_ENGINE=spark): on the seed study
every contract check gives the in-step runner's result (verdict, severity, each rule's outcome,
unexpected count and examples), the cluster's jobs computed it (their tags in the driver's REST
API), and broken datasets fail the same rules with the same example rows."""

from __future__ import annotations

import pytest

from potato_assets.defs.resources import build_resources
from potato_assets.lib import contracts
from potato_assets.lib.engine import spark_cluster as sc
from potato_assets.lib.engine.spark import SparkEngine, contract_tag
from potato_assets.settings import load_settings
from potato_assets_tests.helpers import (
    BROKEN_TABLES,
    CONTRACT_SUITES,
    check_evaluations,
    materialize_all,
    spark_cluster,
    write_dataset,
)

pytestmark = pytest.mark.e2e
TYPE_RULE = "expect_column_values_to_be_in_type_list"


@pytest.fixture(scope="module")
def cluster(spark_state):
    return spark_cluster(spark_state)


def _comparable(rules: dict[str, dict]) -> dict[str, dict]:
    """Each rule's outcome; a type rule's observed value is the engine's own type name (pandas'
    int64, Spark's LongType), so only its verdict is compared."""
    return {
        rule: {**outcome, "observed_value": None} if outcome["expectation"] == TYPE_RULE else outcome
        for rule, outcome in rules.items()
    }


def _jobs_by_suite(cluster: sc.SparkCluster) -> dict[str, int]:
    (app,) = sc.driver_api(cluster)
    jobs = sc.driver_api(cluster, f"/{app['id']}/jobs")
    return {
        suite: sum(
            1
            for job in jobs
            if job["status"] == "SUCCEEDED" and any(t.endswith(f"_Tag_{contract_tag(suite)}") for t in job["jobTags"])
        )
        for suite in CONTRACT_SUITES
    }


def test_every_contract_check_on_the_cluster_equals_the_in_step_one(cluster, seed_dir, tmp_path):
    embedded = materialize_all(seed_dir, tmp_path / "embedded")
    assert embedded.success

    before = _jobs_by_suite(cluster)
    settings = load_settings(
        {"POTATO_ENGINE": "spark", "POTATO_SPARK_REMOTE": cluster.connect_url, "POTATO_CONTRACT_ENGINE": "spark"}
    )
    resources = build_resources(settings)
    on_spark = materialize_all(
        seed_dir,
        tmp_path / "spark",
        resources={"silver_engine": resources["silver_engine"], "contract_engine": resources["contract_engine"]},
    )
    assert on_spark.success

    expected, got = check_evaluations(embedded), check_evaluations(on_spark)
    contract_checks = sorted(k for k in expected if k.endswith(":contract"))
    assert len(contract_checks) == len(CONTRACT_SUITES)
    for key in contract_checks:
        want, have = expected[key], got[key]
        assert have.metadata["contract_engine"].value == f"spark ({cluster.connect_url})", key
        assert want.metadata["contract_engine"].value == "step", key
        assert (have.passed, have.severity) == (want.passed, want.severity), key
        assert have.metadata["rows_checked"] == want.metadata["rows_checked"], key
        assert _comparable(have.metadata["rules"].value) == _comparable(want.metadata["rules"].value), key
        assert have.description == want.description, key

    # The cluster computed them: every suite's jobs ran there, under its tag.
    after = _jobs_by_suite(cluster)
    assert all(after[s] > before[s] for s in CONTRACT_SUITES), (before, after)


# Broken datasets with more unexpected rows than examples among them (duplicates: 7 rows of
# repeated subject-days; mostly_failed: half the weights missing), so the examples' order matters.
BROKEN = ("out_of_range", "duplicates", "mostly_failed", "vocabulary", "missing_column", "duplicate_subject")


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_dataset_fails_the_same_rules_with_the_same_examples_on_the_cluster(
    cluster, seed_tables, case, tmp_path
):
    suite_name, breaking, must_fail = BROKEN_TABLES[case]
    ref = write_dataset(tmp_path / "table", breaking(seed_tables[suite_name]), buckets=4)
    suite = contracts.load_suite(suite_name)
    expected = contracts.run_contract_dataset(suite, ref)
    engine = SparkEngine(cluster.connect_url)
    try:
        got = engine.contract(suite, ref)
    finally:
        engine.close()
    failed = {o.rule for o in got.outcomes if not o.success}
    assert must_fail <= failed and failed == {o.rule for o in expected.outcomes if not o.success}
    assert got.rows == expected.rows
    want = {o.rule: o.as_dict() for o in expected.outcomes}
    assert _comparable({o.rule: o.as_dict() for o in got.outcomes}) == _comparable(want)
    # The summary quotes the examples as dicts: the same keys in the same order.
    assert got.summary() == expected.summary()
    if case in ("duplicates", "mostly_failed"):
        (rule,) = must_fail
        assert want[rule]["unexpected_count"] > contracts.EXAMPLE_COUNT
        # The smallest lines, in order, as the in-step runner shows them.
        lines = [e["source_line"] for e in want[rule]["unexpected_examples"]]
        assert lines == sorted(lines) and len(lines) == contracts.EXAMPLE_COUNT
