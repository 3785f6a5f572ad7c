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
            "repo:${var.github_repository}:ref:${var.apply_ref}",
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

    # The repository and ref variables reject wildcards; the dev stack pins main.
    validation = variables(mod)["github_repository"]["validation"][0]["condition"]
    assert "A-Za-z0-9_.-" in validation
    assert "refs/heads/" in variables(mod)["apply_ref"]["validation"][0]["condition"]
    assert variables(mod)["apply_ref"]["default"] == "refs/heads/main"
    call = module_calls(load_dir(DEV_ENV_DIR))["github_oidc"]
    assert unwrap(call["apply_ref"]) == "var.github_apply_ref"
    assert variables(load_dir(DEV_ENV_DIR))["github_apply_ref"]["default"] == "refs/heads/main"
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


CHECKS_ROLE = MODULES_DIR / "ci_checks_role"
# What a read-only look at the lake needs; anything else (a write, a delete, a tag, a grant, a
# wildcard) fails the test.
CHECKS_ROLE_ACTIONS = {"s3:ListBucket", "s3:GetObject", "kms:Decrypt"}
WRITE_ACTION = re.compile(
    r"(\*|:(Put|Delete|Create|Update|Restore|Replicate|Abort|Tag|Untag|Encrypt|ReEncrypt|GenerateDataKey|"
    r"Pass|Attach|Detach|Write|Batch|Copy|Upload|Bypass|Object.*Acl))"
)


def test_lake_checks_role_may_only_list_and_read_the_lake() -> None:
    mod = load_dir(CHECKS_ROLE)
    doc = one(mod, "data", "aws_iam_policy_document", "checks")
    by_sid = {s["sid"]: s for s in statements(doc)}
    granted = {a for s in by_sid.values() for a in s["actions"]}
    assert granted == CHECKS_ROLE_ACTIONS
    assert not [a for a in granted if WRITE_ACTION.search(a)]
    assert all(s.get("effect", "Allow") == "Allow" for s in by_sid.values())
    assert not any("not_actions" in s or "not_resources" in s for s in by_sid.values())

    listing = by_sid["ListLakeTables"]
    assert (listing["actions"], listing["resources"]) == (["s3:ListBucket"], ["${var.lake_bucket_arn}"])
    (prefix,) = listing["condition"]
    assert (prefix["test"], prefix["variable"]) == ("StringLike", "s3:prefix")
    assert unwrap(prefix["values"]) == "local.listable_prefixes"
    assert by_sid["ReadLakeTables"] == {
        "sid": "ReadLakeTables",
        "actions": ["s3:GetObject"],
        "resources": "${local.object_arns}",
    }
    object_arns = locals_of(mod)["object_arns"]
    assert "var.lake_bucket_arn" in object_arns and "local.table_prefixes" in object_arns
    assert variables(mod)["lake_layer_prefixes"]["default"] == ["bronze/", "silver/", "gold/"]

    decrypt = by_sid["DecryptLakeObjectsViaS3"]
    assert (decrypt["actions"], decrypt["resources"]) == (["kms:Decrypt"], ["${var.lake_kms_key_arn}"])
    (via,) = decrypt["condition"]
    assert (via["test"], via["variable"], via["values"]) == (
        "StringEquals",
        "kms:ViaService",
        ["s3.${var.lake_region}.amazonaws.com"],
    )
    # One inline policy, no managed policy attached that could add anything.
    assert set(blocks(mod, "resource", "aws_iam_role_policy")) == {"checks"}
    assert not blocks(mod, "resource", "aws_iam_role_policy_attachment")
    assert not blocks(mod, "resource", "aws_iam_policy")


def test_lake_checks_role_trusts_only_this_repositorys_checks_environment() -> None:
    mod = load_dir(CHECKS_ROLE)
    (statement,) = statements(one(mod, "data", "aws_iam_policy_document", "checks_trust"))
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    (principal,) = statement["principals"]
    assert (principal["type"], principal["identifiers"]) == ("Federated", ["${var.oidc_provider_arn}"])
    conditions = {c["variable"]: c for c in statement["condition"]}
    assert set(conditions) == {"${local.oidc_host}:aud", "${local.oidc_host}:sub"}
    assert conditions["${local.oidc_host}:aud"]["values"] == ["sts.amazonaws.com"]
    sub = conditions["${local.oidc_host}:sub"]
    assert sub["test"] == "StringEquals"
    assert [unwrap(v) for v in sub["values"]] == ["local.checks_subject"]
    assert locals_of(mod)["checks_subject"] == "repo:${var.github_repository}:environment:${var.checks_environment}"
    assert variables(mod)["checks_environment"]["default"] == "lake-checks"
    call = module_calls(load_dir(DEV_ENV_DIR))["ci_checks_role"]
    assert unwrap(call["github_repository"]) == "var.github_repository"
    assert unwrap(call["oidc_provider_arn"]) == "module.github_oidc.oidc_provider_arn"
    assert unwrap(call["lake_bucket_arn"]) == "local.active_lake.bucket_arn"


# --- The apply role cannot grant itself more ---------------------------------------------------
# A small IAM evaluator over the parsed policy: explicit Deny wins, then any Allow; the policy's
# ${local.*} / ${var.*} references are filled in with one concrete stack.

STACK = {
    "local.partition": "aws",
    "local.account_id": "123456789012",
    "local.oidc_host": "token.actions.githubusercontent.com",
    "var.name_prefix": "potato-dev",
    "var.project": "potato",
    "var.github_repository": "octo/potato",
    "var.apply_ref": "refs/heads/main",
    "var.mlflow_index_table_name": "potato-dev-mlflow-runs",
    "var.log_group_name": "/potato/dev/pipeline",
    "var.state_bucket": "potato-terraform-state",
    "var.state_key": "potato/dev/terraform.tfstate",
}
ACCOUNT = "arn:aws:iam::123456789012"
APPLY_ROLE = f"{ACCOUNT}:role/potato-dev-github-apply"
PLAN_ROLE = f"{ACCOUNT}:role/potato-dev-github-plan"
RUNTIME_ROLE = f"{ACCOUNT}:role/potato-dev-pipeline-runtime"
BOUNDARY = f"{ACCOUNT}:policy/potato-dev-role-boundary"
STACK_POLICY = f"{ACCOUNT}:policy/potato-dev-pipeline-runtime"
ADMIN_POLICY = "arn:aws:iam::aws:policy/AdministratorAccess"
OTHER_KEY = "arn:aws:kms:eu-west-1:123456789012:key/1111-other-team"
STACK_KEY = "arn:aws:kms:eu-west-1:123456789012:key/2222-potato"


def _fill(text: str, locals_: dict) -> str:
    for _ in range(10):

        def one_ref(match: re.Match) -> str:
            ref = match.group(1)
            if ref in STACK:
                return STACK[ref]
            if ref.startswith("local.") and isinstance(locals_.get(ref[6:]), str):
                return locals_[ref[6:]]
            raise KeyError(ref)

        filled = re.sub(r"\$\{([a-z_.]+)\}", one_ref, text)
        if filled == text:
            return filled
        text = filled
    return text


def _glob(pattern: str, value: str) -> bool:
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), value) is not None


def _condition_holds(condition: dict, context: dict, locals_: dict) -> bool:
    values = [_fill(str(v), locals_) for v in condition["values"]]
    actual = context.get(condition["variable"])
    test = condition["test"]
    if test in ("StringEquals", "ArnEquals"):
        return actual is not None and actual in values
    if test in ("StringLike", "ArnLike"):
        return actual is not None and any(_glob(v, actual) for v in values)
    if test == "StringNotEquals":  # true when the key is absent, as in IAM
        return actual is None or actual not in values
    raise AssertionError(f"the evaluator does not know {test}")


def _decision(document: dict, locals_: dict, action: str, resource: str, context: dict) -> str:
    allowed = False
    for statement in statements(document):
        if not any(_glob(a, action) for a in statement["actions"]):
            continue
        resources = [_fill(r, locals_) for r in statement["resources"] if "statement.value" not in r]
        if not any(_glob(r, resource) for r in resources):
            continue
        if not all(_condition_holds(c, context, locals_) for c in statement.get("condition", [])):
            continue
        if statement.get("effect", "Allow") == "Deny":
            return "deny"
        allowed = True
    return "allow" if allowed else "implicit deny"


def _apply_policy() -> tuple[dict, dict]:
    mod = load_dir(OIDC)
    return one(mod, "data", "aws_iam_policy_document", "apply"), locals_of(mod)


SELF_CHANGES = [
    "iam:AttachRolePolicy",
    "iam:DetachRolePolicy",
    "iam:PutRolePolicy",
    "iam:DeleteRolePolicy",
    "iam:UpdateAssumeRolePolicy",
    "iam:PutRolePermissionsBoundary",
    "iam:DeleteRolePermissionsBoundary",
    "iam:UpdateRole",
    "iam:DeleteRole",
    "iam:TagRole",
    "iam:UntagRole",
]


@pytest.mark.parametrize("action", SELF_CHANGES)
@pytest.mark.parametrize("boundary", [None, BOUNDARY])
def test_the_apply_role_cannot_change_its_own_role_policies_or_trust(action: str, boundary: str | None) -> None:
    doc, locals_ = _apply_policy()
    context = {"iam:PermissionsBoundary": boundary, "iam:PolicyARN": STACK_POLICY}
    assert _decision(doc, locals_, action, APPLY_ROLE, {k: v for k, v in context.items() if v}) == "deny"
    # The name the denies protect is the apply role's own name.
    role = one(load_dir(OIDC), "resource", "aws_iam_role", "apply")
    assert _fill(role["name"], locals_) == APPLY_ROLE.rsplit("/", 1)[1]


@pytest.mark.parametrize(
    "action",
    ["iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion"],
)
def test_the_apply_role_cannot_change_the_boundary(action: str) -> None:
    doc, locals_ = _apply_policy()
    assert _decision(doc, locals_, action, BOUNDARY, {}) == "deny"
    # ...while the stack's other policies stay manageable (terraform never sets a default version).
    expected = "implicit deny" if action == "iam:SetDefaultPolicyVersion" else "allow"
    assert _decision(doc, locals_, action, STACK_POLICY, {}) == expected
    policy = one(load_dir(OIDC), "resource", "aws_iam_policy", "role_boundary")
    assert _fill(policy["name"], locals_) == BOUNDARY.rsplit("/", 1)[1]


@pytest.mark.parametrize(
    "action",
    ["iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:DeleteRolePolicy"],
)
def test_roles_the_apply_role_creates_or_changes_must_carry_the_boundary(action: str) -> None:
    doc, locals_ = _apply_policy()
    for role in (RUNTIME_ROLE, PLAN_ROLE, f"{ACCOUNT}:role/potato-dev-new"):
        assert _decision(doc, locals_, action, role, {"iam:PolicyARN": STACK_POLICY}) != "allow"
        other = {"iam:PermissionsBoundary": f"{ACCOUNT}:policy/potato-dev-wide-open", "iam:PolicyARN": STACK_POLICY}
        assert _decision(doc, locals_, action, role, other) != "allow"
        bounded = {"iam:PermissionsBoundary": BOUNDARY, "iam:PolicyARN": STACK_POLICY}
        assert _decision(doc, locals_, action, role, bounded) == "allow"
    # Never on roles outside the stack, boundary or not.
    outside = {"iam:PermissionsBoundary": BOUNDARY, "iam:PolicyARN": STACK_POLICY}
    assert _decision(doc, locals_, action, f"{ACCOUNT}:role/admin", outside) != "allow"


def test_only_the_stacks_own_policies_can_be_attached() -> None:
    doc, locals_ = _apply_policy()
    context = {"iam:PermissionsBoundary": BOUNDARY, "iam:PolicyARN": ADMIN_POLICY}
    assert _decision(doc, locals_, "iam:AttachRolePolicy", RUNTIME_ROLE, context) != "allow"


def test_every_role_the_stack_creates_carries_the_boundary() -> None:
    roles = {}
    for directory in sorted({p.parent for p in tf_files()}):
        for name, body in blocks(load_dir(directory), "resource", "aws_iam_role").items():
            roles[f"{directory.relative_to(TERRAFORM_DIR).as_posix()}/{name}"] = body
    assert set(roles) == {
        "modules/ci_checks_role/checks",
        "modules/github_oidc/apply",
        "modules/github_oidc/plan",
        "modules/pipeline_runtime/runtime",
        "modules/secure_bucket/replication",
        "modules/spark_emr_serverless/job",
    }
    # The apply role itself is the administrator's to change (it may not touch itself).
    assert "permissions_boundary" not in roles["modules/github_oidc/apply"]
    assert unwrap(roles["modules/github_oidc/plan"]["permissions_boundary"]) == "aws_iam_policy.role_boundary.arn"
    for name in (
        "modules/pipeline_runtime/runtime",
        "modules/secure_bucket/replication",
        "modules/ci_checks_role/checks",
        "modules/spark_emr_serverless/job",
    ):
        assert unwrap(roles[name]["permissions_boundary"]) == "var.permissions_boundary_arn"
    calls = module_calls(load_dir(DEV_ENV_DIR))
    for bounded in ("pipeline_runtime", "ci_checks_role", "spark_emr_serverless"):
        assert unwrap(calls[bounded]["permissions_boundary_arn"]) == "module.github_oidc.role_boundary_arn"
    with_replication = [
        n for n, c in calls.items() if unwrap(c["source"]).endswith("secure_bucket") and "replication" in c
    ]
    assert with_replication
    for name in with_replication:
        assert unwrap(calls[name].get("permissions_boundary_arn")) == "module.github_oidc.role_boundary_arn", name


def test_the_boundary_allows_no_iam_writes_and_no_key_policies() -> None:
    mod = load_dir(OIDC)
    doc, locals_ = one(mod, "data", "aws_iam_policy_document", "role_boundary"), locals_of(mod)
    for action in (
        *SELF_CHANGES,
        "iam:CreateRole",
        "iam:PassRole",
        "iam:CreatePolicyVersion",
        "kms:PutKeyPolicy",
        "sts:AssumeRole",
    ):
        for resource in (APPLY_ROLE, RUNTIME_ROLE, BOUNDARY, STACK_KEY, "*"):
            assert _decision(doc, locals_, action, resource, {}) != "allow", (action, resource)
    for statement in statements(doc):
        assert statement.get("effect", "Allow") == "Allow"
        actions = statement["actions"]
        if statement.get("sid") == "PassSparkJobRole":
            # The one exception: handing the Spark jobs' role to EMR Serverless (StartJobRun).
            assert actions == ["iam:PassRole"] and statement["resources"] == ["${local.spark_job_role_arn}"]
            [condition] = statement["condition"]
            assert condition["variable"] == "iam:PassedToService"
            assert condition["values"] == ["emr-serverless.amazonaws.com"]
            continue
        assert not any(
            a == "*" or a.endswith(":*") or a.startswith("iam:") and not a.startswith(("iam:Get", "iam:List"))
            for a in actions
        )
    job_role = f"{ACCOUNT}:role/potato-dev-spark-job"
    to_emr = {"iam:PassedToService": "emr-serverless.amazonaws.com"}
    assert _decision(doc, locals_, "iam:PassRole", job_role, to_emr) == "allow"
    assert _decision(doc, locals_, "iam:PassRole", job_role, {"iam:PassedToService": "ec2.amazonaws.com"}) != "allow"
    assert _decision(doc, locals_, "iam:PassRole", RUNTIME_ROLE, to_emr) != "allow"
    # What the bounded roles need still passes: the runtime writes the lake, S3 replicates it.
    assert _decision(doc, locals_, "s3:PutObject", "arn:aws:s3:::potato-dev-lake-a/gold/x.png", {}) == "allow"
    assert _decision(doc, locals_, "s3:ReplicateObject", "arn:aws:s3:::potato-dev-lake-replica-a/k", {}) == "allow"
    assert _decision(doc, locals_, "kms:Decrypt", STACK_KEY, {}) == "allow"


def test_kms_tagging_cannot_adopt_a_key_of_another_project() -> None:
    doc, locals_ = _apply_policy()
    tag_request = {"aws:RequestTag/Project": "potato"}
    # An existing key of someone else, untagged or tagged otherwise: no tagging it into the stack.
    assert _decision(doc, locals_, "kms:TagResource", OTHER_KEY, tag_request) == "deny"
    other_project = {**tag_request, "aws:ResourceTag/Project": "other"}
    assert _decision(doc, locals_, "kms:TagResource", OTHER_KEY, other_project) == "deny"
    assert _decision(doc, locals_, "kms:PutKeyPolicy", OTHER_KEY, {}) != "allow"
    # The stack's own keys stay manageable, and new keys are created with the Project tag only.
    own = {**tag_request, "aws:ResourceTag/Project": "potato"}
    assert _decision(doc, locals_, "kms:TagResource", STACK_KEY, own) == "allow"
    assert _decision(doc, locals_, "kms:PutKeyPolicy", STACK_KEY, {"aws:ResourceTag/Project": "potato"}) == "allow"
    assert _decision(doc, locals_, "kms:CreateKey", "*", tag_request) == "allow"
    assert _decision(doc, locals_, "kms:CreateKey", "*", {}) != "allow"


def test_the_evaluator_is_not_vacuous() -> None:
    doc, locals_ = _apply_policy()
    bounded = {"iam:PermissionsBoundary": BOUNDARY, "iam:PolicyARN": STACK_POLICY}
    assert _decision(doc, locals_, "iam:PutRolePolicy", RUNTIME_ROLE, bounded) == "allow"
    assert _decision(doc, locals_, "iam:UpdateAssumeRolePolicy", RUNTIME_ROLE, {}) == "allow"
    assert _decision(doc, locals_, "s3:CreateBucket", "arn:aws:s3:::potato-dev-lake-a", {}) == "allow"
    assert _decision(doc, locals_, "s3:CreateBucket", "arn:aws:s3:::someone-else", {}) == "implicit deny"
