"""Parse terraform/ with python-hcl2 and assert the properties the architecture requires."""

from __future__ import annotations

import importlib.util
import re

import pytest

from potato_assets_tests.infra._support import (
    DEV_ENV_DIR,
    MODULES_DIR,
    TERRAFORM_DIR,
    blocks,
    load_dir,
    locals_of,
    module_calls,
    one,
    policy_documents,
    resolve,
    statements,
    tf_files,
    unwrap,
    variables,
)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("hcl2") is None,
    reason="python-hcl2 is not installed in this environment (add it to the dev group); "
    "the HCL property checks cannot run",
)

SECURE_BUCKET = MODULES_DIR / "secure_bucket"
LOG_BUCKET = MODULES_DIR / "access_log_bucket"
RUNTIME = MODULES_DIR / "pipeline_runtime"
OIDC = MODULES_DIR / "github_oidc"

# Actions that read or write data (objects, items, log events, plaintext/keys). None of them
# may be granted on "*" or on a whole-service wildcard ARN.
DATA_ACTION = re.compile(
    r"^(s3:(\*|Get\*|Put\*|GetObject.*|PutObject.*|DeleteObject.*|ListBucket.*|Replicate.*|"
    r"RestoreObject|AbortMultipartUpload)"
    r"|dynamodb:(\*|GetItem|PutItem|UpdateItem|DeleteItem|Query|Scan|Batch.*|PartiQL.*)"
    r"|logs:(\*|PutLogEvents|CreateLogStream|GetLogEvents|FilterLogEvents)"
    r"|kms:(\*|Encrypt|Decrypt|ReEncrypt.*|GenerateDataKey.*))$"
)
# Where AWS offers no resource-level permission, "*" is unavoidable (README lists these).
STAR_ALLOWED = {"kms:CreateKey", "kms:TagResource", "kms:ListAliases"}
WILDCARD_RESOURCE = re.compile(r"^(\*|arn:[^:]*:(s3|dynamodb|logs|kms):[^/]*:\*)$")


def test_every_tf_file_parses() -> None:
    files = tf_files()
    assert len(files) >= 10, files
    for directory in sorted({p.parent for p in files}):
        assert load_dir(directory), directory


def test_provider_and_terraform_versions_are_pinned() -> None:
    for directory in [DEV_ENV_DIR, *sorted(p for p in MODULES_DIR.iterdir() if p.is_dir())]:
        tf_blocks = load_dir(directory).get("terraform", [])
        required = [b for b in tf_blocks if "required_providers" in b]
        assert required, f"{directory} has no required_providers"
        aws = required[0]["required_providers"][0]["aws"]
        assert aws["source"] == "hashicorp/aws"
        assert re.fullmatch(r"\d+\.\d+\.\d+", aws["version"]), f"{directory}: {aws['version']}"
        assert "required_version" in required[0]
    lock = (DEV_ENV_DIR / ".terraform.lock.hcl").read_text()
    assert 'version     = "5.100.0"' in lock


def test_remote_state_backend_is_s3_with_locking_and_documented() -> None:
    backends = [b["backend"] for b in load_dir(DEV_ENV_DIR)["terraform"] if "backend" in b]
    assert len(backends) == 1
    s3 = backends[0][0]["s3"]
    assert s3["use_lockfile"] is True
    assert s3["encrypt"] is True
    assert (DEV_ENV_DIR / "backend.hcl.example").is_file()
    assert (DEV_ENV_DIR / "terraform.tfvars.example").is_file()
    readme = (TERRAFORM_DIR / "README.md").read_text()
    for needle in ("use_lockfile", "backend.hcl", "make infra-plan", "make infra-apply"):
        assert needle in readme, needle


def test_replica_provider_is_a_second_region() -> None:
    dev = load_dir(DEV_ENV_DIR)
    providers = [p["aws"] for p in dev["provider"]]
    replica = [p for p in providers if p.get("alias") == "replica"]
    assert len(replica) == 1
    assert unwrap(replica[0]["region"]) == "var.replica_region"
    conditions = [v["condition"] for v in variables(dev)["replica_region"]["validation"]]
    assert any("var.replica_region != var.region" in c for c in conditions)


def test_secure_bucket_protections() -> None:
    mod = load_dir(SECURE_BUCKET)
    key = one(mod, "resource", "aws_kms_key", "this")
    assert key["enable_key_rotation"] is True

    sse = one(mod, "resource", "aws_s3_bucket_server_side_encryption_configuration", "this")
    default = sse["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] == "aws:kms"
    assert unwrap(default["kms_master_key_id"]) == "aws_kms_key.this.arn"  # customer key

    versioning = one(mod, "resource", "aws_s3_bucket_versioning", "this")
    assert versioning["versioning_configuration"][0]["status"] == "Enabled"

    pab = one(mod, "resource", "aws_s3_bucket_public_access_block", "this")
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls"):
        assert pab[flag] is True, flag
    assert pab["restrict_public_buckets"] is True

    logging = one(mod, "resource", "aws_s3_bucket_logging", "this")
    assert unwrap(logging["target_bucket"]) == "var.access_log_bucket"

    tls = one(mod, "data", "aws_iam_policy_document", "tls_only")
    deny = [s for s in statements(tls) if s.get("effect") == "Deny"]
    conditions = {(c["variable"], tuple(c["values"])) for s in deny for c in s["condition"]}
    assert ("aws:SecureTransport", ("false",)) in conditions
    policy = one(mod, "resource", "aws_s3_bucket_policy", "this")
    assert unwrap(policy["policy"]) == "data.aws_iam_policy_document.tls_only.json"


def test_access_log_bucket_is_private_and_tls_only() -> None:
    mod = load_dir(LOG_BUCKET)
    pab = one(mod, "resource", "aws_s3_bucket_public_access_block", "this")
    assert all(
        pab[f] is True
        for f in (
            "block_public_acls",
            "block_public_policy",
            "ignore_public_acls",
            "restrict_public_buckets",
        )
    )
    doc = one(mod, "data", "aws_iam_policy_document", "this")
    assert any(c["variable"] == "aws:SecureTransport" for s in statements(doc) for c in s.get("condition", []))


def test_lifecycle_landing_and_noncurrent_to_ia_30_glacier_90_current_lake_stays_standard() -> None:
    mod = load_dir(SECURE_BUCKET)
    lifecycle = one(mod, "resource", "aws_s3_bucket_lifecycle_configuration", "this")

    def transitions(items: list[dict], days_key: str) -> list[tuple[int, str]]:
        return sorted((int(resolve(mod, t[days_key])), t["storage_class"]) for t in items)

    expected = [(30, "STANDARD_IA"), (90, "GLACIER")]
    static_rules = lifecycle["rule"]
    noncurrent = [r for r in static_rules if "noncurrent_version_transition" in r]
    assert len(noncurrent) == 1
    assert noncurrent[0]["filter"] == [{}]  # every prefix
    assert transitions(noncurrent[0]["noncurrent_version_transition"], "noncurrent_days") == expected

    # No static rule moves *current* objects: only the per-prefix dynamic rule does.
    assert not any("transition" in r for r in static_rules)
    dynamic = [d["rule"] for d in lifecycle["dynamic"] if "rule" in d]
    assert len(dynamic) == 1
    assert "var.current_version_transition_prefixes" in dynamic[0]["for_each"]
    content = dynamic[0]["content"][0]
    assert unwrap(content["filter"][0]["prefix"]) == "rule.value"
    assert transitions(content["transition"], "days") == expected
    assert variables(mod)["current_version_transition_prefixes"]["default"] == []

    # The dev stack lists landing/ and nothing else, for the lake and its replica only.
    dev = load_dir(DEV_ENV_DIR)
    assert locals_of(dev)["lake_transition_prefixes"] == ["landing/"]
    calls = module_calls(dev)
    for name, call in calls.items():
        if unwrap(call["source"]) != "../../modules/secure_bucket":
            continue
        prefixes = call.get("current_version_transition_prefixes")
        if name.startswith("lake"):
            assert unwrap(prefixes) == "local.lake_transition_prefixes", name
        else:
            assert prefixes is None, f"{name} must keep current objects in STANDARD"
        for override in ("transition_to_ia_days", "transition_to_glacier_days"):
            assert override not in call, f"{name} overrides {override}"

    assert any("abort_incomplete_multipart_upload" in r for r in static_rules)


def test_cross_region_replication_with_rtc() -> None:
    mod = load_dir(SECURE_BUCKET)
    replication = one(mod, "resource", "aws_s3_bucket_replication_configuration", "this")
    rule = replication["rule"][0]
    assert rule["status"] == "Enabled"
    assert rule["filter"] == [{}]  # the whole bucket
    assert rule["delete_marker_replication"][0]["status"] == "Enabled"
    criteria = rule["source_selection_criteria"][0]["sse_kms_encrypted_objects"][0]
    assert criteria["status"] == "Enabled"
    destination = rule["destination"][0]
    assert destination["storage_class"] == "STANDARD"  # readable at once after fail-over
    assert unwrap(destination["encryption_configuration"][0]["replica_kms_key_id"]) == (
        "var.replication.destination_kms_key_arn"
    )
    rtc = destination["replication_time"][0]
    assert rtc["status"] == "Enabled"
    assert rtc["time"][0]["minutes"] == 15
    metrics = destination["metrics"][0]
    assert metrics["status"] == "Enabled"
    assert metrics["event_threshold"][0]["minutes"] == 15

    # Lake and MLflow artifacts replicate to replica buckets built by the replica provider.
    calls = module_calls(load_dir(DEV_ENV_DIR))
    for primary in ("lake", "mlflow_artifacts", "compute_logs"):
        replica = f"{primary}_replica"
        target = calls[primary]["replication"]
        assert unwrap(target["destination_bucket_arn"]) == f"module.{replica}.bucket_arn"
        assert unwrap(target["destination_kms_key_arn"]) == f"module.{replica}.kms_key_arn"
        assert unwrap(calls[replica]["providers"]["aws"]) == "aws.replica"
        assert "providers" not in calls[primary]
        assert "replication" not in calls[replica]


def test_compute_log_bucket_matches_the_production_instance() -> None:
    """The bucket and prefix the runtime role may write are the ones deploy/dagster.postgres.yaml
    sends step logs to, and the bucket has the baseline of the others (secure_bucket, access logs)."""
    import yaml

    dev = load_dir(DEV_ENV_DIR)
    calls = module_calls(dev)
    logs = calls["compute_logs"]
    assert unwrap(logs["source"]) == "../../modules/secure_bucket"
    assert unwrap(logs["access_log_bucket"]) == "module.access_logs.bucket_id"
    runtime = calls["pipeline_runtime"]
    assert unwrap(runtime["compute_log_bucket_arn"]) == "local.active_logs.bucket_arn"
    assert unwrap(runtime["compute_log_kms_key_arn"]) == "local.active_logs.kms_key_arn"
    assert unwrap(runtime["compute_log_prefix"]) == "local.compute_log_prefix"
    assert "module.compute_logs_replica" in unwrap(locals_of(dev)["active_logs"])
    access_sources = " ".join(unwrap(calls["access_logs"]["source_bucket_arns"]))
    assert "${local.compute_log_bucket}" in access_sources

    instance = yaml.safe_load((TERRAFORM_DIR.parent / "deploy" / "dagster.postgres.yaml").read_text())
    config = instance["compute_logs"]["config"]
    assert config["bucket"] == {"env": "DAGSTER_COMPUTE_LOG_BUCKET"}
    assert locals_of(dev)["compute_log_prefix"] == config["prefix"] + "/"


def test_mlflow_index_table() -> None:
    dev = load_dir(DEV_ENV_DIR)
    assert locals_of(dev)["mlflow_index_table_name"] == "cdp-dev-mlflow-backend"
    call = module_calls(dev)["pipeline_runtime"]
    assert unwrap(call["mlflow_index_table_name"]) == "local.mlflow_index_table_name"

    table = one(load_dir(RUNTIME), "resource", "aws_dynamodb_table", "mlflow_index")
    assert unwrap(table["name"]) == "var.mlflow_index_table_name"
    assert table["hash_key"] == "experiment_id"
    assert table["range_key"] == "run_uuid"
    assert table["billing_mode"] == "PAY_PER_REQUEST"
    assert table["point_in_time_recovery"][0]["enabled"] is True
    sse = table["server_side_encryption"][0]
    assert sse["enabled"] is True
    assert unwrap(sse["kms_key_arn"]) == "var.mlflow_kms_key_arn"
    assert {a["name"] for a in table["attribute"]} == {"experiment_id", "run_uuid"}

    # DR: a global-table replica in the replica region, with PITR and the replica key.
    replica = [d["replica"] for d in table["dynamic"] if "replica" in d][0]["content"][0]
    assert replica["point_in_time_recovery"] is True
    assert unwrap(replica["region_name"]) == "replica.value.region"
    dr = call["table_replica"]
    assert unwrap(dr["region"]) == "var.replica_region"
    assert unwrap(dr["kms_key_arn"]) == "module.mlflow_artifacts_replica.kms_key_arn"


def test_pipeline_log_group_has_retention_and_kms() -> None:
    mod = load_dir(RUNTIME)
    group = one(mod, "resource", "aws_cloudwatch_log_group", "pipeline")
    assert int(resolve(mod, group["retention_in_days"])) >= 365
    assert unwrap(group["kms_key_id"]) == "aws_kms_key.logs.arn"


def _oidc_trust(name: str) -> dict:
    return one(load_dir(OIDC), "data", "aws_iam_policy_document", name)


@pytest.mark.parametrize(
    ("document", "subject_local", "expected_subject"),
    [
        ("plan_trust", "plan_subject", "repo:${var.github_repository}:pull_request"),
        (
            "apply_trust",
            "apply_subject",
            "repo:${var.github_repository}:environment:${var.apply_environment}",
        ),
    ],
)
def test_oidc_trust_admits_only_this_repository(document: str, subject_local: str, expected_subject: str) -> None:
    mod = load_dir(OIDC)
    (statement,) = statements(_oidc_trust(document))
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    assert statement.get("effect", "Allow") == "Allow"
    (principal,) = statement["principals"]
    assert principal["type"] == "Federated"
    conditions = {c["variable"]: c for c in statement["condition"]}
    assert set(conditions) == {"${local.oidc_host}:aud", "${local.oidc_host}:sub"}
    assert locals_of(mod)["oidc_host"] == "token.actions.githubusercontent.com"
    aud = conditions["${local.oidc_host}:aud"]
    assert (aud["test"], aud["values"]) == ("StringEquals", ["sts.amazonaws.com"])
    sub = conditions["${local.oidc_host}:sub"]
    assert sub["test"] == "StringEquals"  # never StringLike: no wildcards in the subject
    assert [unwrap(v) for v in sub["values"]] == [f"local.{subject_local}"]
    assert locals_of(mod)[subject_local] == expected_subject
    assert "*" not in expected_subject

    # The repository variable rejects wildcards, and the dev stack passes the apply environment.
    validation = variables(mod)["github_repository"]["validation"][0]["condition"]
    assert "A-Za-z0-9_.-" in validation
    call = module_calls(load_dir(DEV_ENV_DIR))["github_oidc"]
    assert unwrap(call["apply_environment"]) == "var.github_environment"
    assert unwrap(call["github_repository"]) == "var.github_repository"


def test_oidc_provider_audience() -> None:
    provider = one(load_dir(OIDC), "resource", "aws_iam_openid_connect_provider", "github")
    assert provider["client_id_list"] == ["sts.amazonaws.com"]
    assert provider["url"] == "https://${local.oidc_host}"


def test_no_wildcard_resources_for_data_actions() -> None:
    docs = policy_documents()
    assert len(docs) >= 8, sorted(docs)
    star_grants: list[tuple[str, str]] = []
    for doc_name, doc in docs.items():
        for statement in statements(doc):
            if statement.get("effect", "Allow") != "Allow" or "resources" not in statement:
                continue
            actions = statement["actions"]
            resources = statement["resources"]
            if isinstance(resources, str):  # a `for` expression over prefixes: no bare "*"
                assert not re.search(r'(^|[\[,( ])\\?"\*\\?"', resources), (doc_name, resources)
                resources = [resources]
            wildcard = [r for r in resources if WILDCARD_RESOURCE.match(str(r))]
            if not wildcard:
                continue
            data = [a for a in actions if DATA_ACTION.match(a)]
            assert not data, f"{doc_name} grants data actions {data} on {wildcard}"
            assert set(actions) <= STAR_ALLOWED, f"{doc_name}: {actions} on {wildcard}"
            star_grants.extend((doc_name, a) for a in actions)
    # Exactly the documented exceptions, all non-data, all in the CI roles' policies.
    assert {a for _, a in star_grants} == STAR_ALLOWED
    assert all(name.startswith("modules/github_oidc/") for name, _ in star_grants)


def test_runtime_role_is_least_privilege() -> None:
    mod = load_dir(RUNTIME)
    doc = one(mod, "data", "aws_iam_policy_document", "runtime")
    by_sid = {s["sid"]: s for s in statements(doc)}

    assert by_sid["ReadLanding"]["actions"] == ["s3:GetObject"]
    assert by_sid["ReadLanding"]["resources"] == ["${var.lake_bucket_arn}/${var.landing_prefix}*"]
    layers = by_sid["ReadWriteLakeLayers"]
    assert set(layers["actions"]) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    assert "var.lake_layer_prefixes" in layers["resources"]
    assert variables(mod)["lake_layer_prefixes"]["default"] == ["bronze/", "silver/", "gold/"]
    assert variables(mod)["landing_prefix"]["default"] == "landing/"
    assert by_sid["ListLakePrefixes"]["resources"] == ["${var.lake_bucket_arn}"]
    assert by_sid["ListLakePrefixes"]["condition"][0]["variable"] == "s3:prefix"

    assert by_sid["ReadWriteMlflowArtifacts"]["resources"] == ["${var.mlflow_bucket_arn}/*"]
    assert set(by_sid["MlflowRunIndex"]["actions"]) == {
        "dynamodb:DescribeTable",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
    }
    assert by_sid["MlflowRunIndex"]["resources"] == "${local.table_arns}"
    table_arns = locals_of(mod)["table_arns"]
    assert "aws_dynamodb_table.mlflow_index.arn" in table_arns
    assert "aws_dynamodb_table.mlflow_index.replica" in table_arns
    assert set(by_sid["WritePipelineLogs"]["actions"]) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    assert by_sid["WritePipelineLogs"]["resources"] == ["${aws_cloudwatch_log_group.pipeline.arn}:*"]
    assert set(by_sid["UseDataKeys"]["actions"]) == {
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }
    assert by_sid["UseDataKeys"]["resources"] == [
        "${var.lake_kms_key_arn}",
        "${var.mlflow_kms_key_arn}",
        "${var.compute_log_kms_key_arn}",
    ]

    # Compute logs: objects under the step-log prefix only, listing only that prefix.
    assert set(by_sid["ReadWriteComputeLogs"]["actions"]) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    assert by_sid["ReadWriteComputeLogs"]["resources"] == ["${var.compute_log_bucket_arn}/${var.compute_log_prefix}*"]
    assert by_sid["ListComputeLogs"]["actions"] == ["s3:ListBucket"]
    assert by_sid["ListComputeLogs"]["resources"] == ["${var.compute_log_bucket_arn}"]
    [condition] = by_sid["ListComputeLogs"]["condition"]
    assert condition["test"] == "StringLike" and condition["variable"] == "s3:prefix"
    assert condition["values"] == ["${var.compute_log_prefix}", "${var.compute_log_prefix}*"]

    # Nothing beyond those statements; no wildcard actions.
    assert set(by_sid) == {
        "ListLakePrefixes",
        "ReadLanding",
        "ReadWriteLakeLayers",
        "ListMlflowArtifacts",
        "ReadWriteMlflowArtifacts",
        "ListComputeLogs",
        "ReadWriteComputeLogs",
        "MlflowRunIndex",
        "WritePipelineLogs",
        "UseDataKeys",
    }
    for statement in by_sid.values():
        assert not any(a.endswith(":*") or a == "*" for a in statement["actions"])


def test_ci_role_s3_grants_are_bucket_level_only() -> None:
    """s3:Get*/s3:Put* in the CI roles are on bucket ARNs (no "/*"): config, never objects."""
    mod = load_dir(OIDC)
    assert locals_of(mod)["bucket_arns"] == "arn:${local.partition}:s3:::${var.name_prefix}-*"
    for name in ("plan", "apply"):
        for statement in statements(one(mod, "data", "aws_iam_policy_document", name)):
            if any(a in ("s3:Get*", "s3:Put*") for a in statement["actions"]):
                assert statement["resources"] == ["${local.bucket_arns}"], statement


def test_readme_covers_the_required_topics() -> None:
    readme = (TERRAFORM_DIR / "README.md").read_text()
    for needle in (
        "RPO",
        "RTO",
        "Replication Time Control",
        "OIDC",
        "AWS_PLAN_ROLE_ARN",
        "AWS_APPLY_ROLE_ARN",
        "Postgres",
        "kms:CreateKey",
        "terraform.tfvars.example",
    ):
        assert needle in readme, needle
    for module in ("secure_bucket", "access_log_bucket", "pipeline_runtime", "github_oidc"):
        assert (MODULES_DIR / module / "variables.tf").is_file()
        assert (MODULES_DIR / module / "outputs.tf").is_file()
        assert module in readme


def test_blocks_helper_sees_every_bucket_module() -> None:
    calls = module_calls(load_dir(DEV_ENV_DIR))
    secure = sorted(n for n, c in calls.items() if unwrap(c["source"]).endswith("secure_bucket"))
    assert secure == [
        "compute_logs",
        "compute_logs_replica",
        "lake",
        "lake_replica",
        "mlflow_artifacts",
        "mlflow_artifacts_replica",
    ]
    assert blocks(load_dir(SECURE_BUCKET), "resource", "aws_s3_bucket_notification")
