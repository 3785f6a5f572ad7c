# The dev stack of the potato lakehouse: data lake, MLflow artifact and Dagster compute-log
# buckets (each replicated to a second region), their access-log buckets, the MLflow run-index table, the pipeline log
# group and runtime role, and GitHub OIDC roles for CI.

data "aws_caller_identity" "current" {}

locals {
  name_prefix = "${var.project}-${var.environment}"
  account_id  = data.aws_caller_identity.current.account_id

  tags = {
    Project     = var.project
    Environment = var.environment
    ManagedBy   = "terraform"
    Repository  = var.github_repository
  }

  # Bucket names are global: the account id keeps them unique.
  lake_bucket           = "${local.name_prefix}-lake-${local.account_id}"
  lake_replica_bucket   = "${local.name_prefix}-lake-replica-${local.account_id}"
  mlflow_bucket         = "${local.name_prefix}-mlflow-artifacts-${local.account_id}"
  mlflow_replica_bucket = "${local.name_prefix}-mlflow-replica-${local.account_id}"
  # Step stdout/stderr of every Dagster run (deploy/dagster.postgres.yaml: S3ComputeLogManager).
  compute_log_bucket         = "${local.name_prefix}-compute-logs-${local.account_id}"
  compute_log_replica_bucket = "${local.name_prefix}-compute-logs-replica-${local.account_id}"
  # The prefix deploy/dagster.postgres.yaml writes under; the runtime role may touch nothing else.
  compute_log_prefix  = "dagster/compute-logs/"
  access_logs_bucket  = "${local.name_prefix}-s3-access-logs-${local.account_id}"
  replica_logs_bucket = "${local.name_prefix}-s3-access-logs-replica-${local.account_id}"

  # Fixed name: the MLflow run index the pipeline writes to (POTATO_MLFLOW_INDEX_TABLE).
  mlflow_index_table_name = "cdp-dev-mlflow-backend"

  # Landing files age out to IA/Glacier; bronze/, silver/, gold/ stay in STANDARD while current.
  lake_transition_prefixes = ["landing/"]
}

# --- Access logs (one bucket per region: S3 logs only to a bucket in the same region) -------

module "access_logs" {
  source = "../../modules/access_log_bucket"

  name = local.access_logs_bucket
  source_bucket_arns = [
    "arn:aws:s3:::${local.lake_bucket}",
    "arn:aws:s3:::${local.mlflow_bucket}",
    "arn:aws:s3:::${local.compute_log_bucket}",
  ]
}

module "access_logs_replica" {
  source    = "../../modules/access_log_bucket"
  providers = { aws = aws.replica }

  name = local.replica_logs_bucket
  source_bucket_arns = [
    "arn:aws:s3:::${local.lake_replica_bucket}",
    "arn:aws:s3:::${local.mlflow_replica_bucket}",
    "arn:aws:s3:::${local.compute_log_replica_bucket}",
  ]
}

# --- Data lake: landing/, bronze/, silver/, gold/ --------------------------------------------

module "lake_replica" {
  source    = "../../modules/secure_bucket"
  providers = { aws = aws.replica }

  name                                = local.lake_replica_bucket
  access_log_bucket                   = module.access_logs_replica.bucket_id
  current_version_transition_prefixes = local.lake_transition_prefixes
}

module "lake" {
  source = "../../modules/secure_bucket"

  name                                = local.lake_bucket
  access_log_bucket                   = module.access_logs.bucket_id
  current_version_transition_prefixes = local.lake_transition_prefixes

  replication = {
    destination_bucket_arn  = module.lake_replica.bucket_arn
    destination_kms_key_arn = module.lake_replica.kms_key_arn
  }
  permissions_boundary_arn = module.github_oidc.role_boundary_arn
}

# --- MLflow artifacts ------------------------------------------------------------------------

module "mlflow_artifacts_replica" {
  source    = "../../modules/secure_bucket"
  providers = { aws = aws.replica }

  name              = local.mlflow_replica_bucket
  access_log_bucket = module.access_logs_replica.bucket_id
}

module "mlflow_artifacts" {
  source = "../../modules/secure_bucket"

  name              = local.mlflow_bucket
  access_log_bucket = module.access_logs.bucket_id

  replication = {
    destination_bucket_arn  = module.mlflow_artifacts_replica.bucket_arn
    destination_kms_key_arn = module.mlflow_artifacts_replica.kms_key_arn
  }
  permissions_boundary_arn = module.github_oidc.role_boundary_arn
}

# --- Dagster compute logs (step stdout/stderr; read back by the webserver) ------------------

module "compute_logs_replica" {
  source    = "../../modules/secure_bucket"
  providers = { aws = aws.replica }

  name              = local.compute_log_replica_bucket
  access_log_bucket = module.access_logs_replica.bucket_id
}

# Current step logs stay in STANDARD: most are a few KB, and IA bills at least 128 KB an object.
module "compute_logs" {
  source = "../../modules/secure_bucket"

  name                     = local.compute_log_bucket
  access_log_bucket        = module.access_logs.bucket_id
  permissions_boundary_arn = module.github_oidc.role_boundary_arn

  replication = {
    destination_bucket_arn  = module.compute_logs_replica.bucket_arn
    destination_kms_key_arn = module.compute_logs_replica.kms_key_arn
  }
}

# --- Pipeline runtime: run-index table, log group, least-privilege role ---------------------

# serve_from_replica is the DR fail-over switch (README): the runtime role then reads and
# writes the replica buckets with the replica keys instead of the primary ones.
locals {
  active_lake   = var.serve_from_replica ? module.lake_replica : module.lake
  active_mlflow = var.serve_from_replica ? module.mlflow_artifacts_replica : module.mlflow_artifacts
  active_logs   = var.serve_from_replica ? module.compute_logs_replica : module.compute_logs
}

module "pipeline_runtime" {
  source = "../../modules/pipeline_runtime"

  name_prefix                = local.name_prefix
  lake_bucket_arn            = local.active_lake.bucket_arn
  lake_kms_key_arn           = local.active_lake.kms_key_arn
  mlflow_bucket_arn          = local.active_mlflow.bucket_arn
  mlflow_kms_key_arn         = local.active_mlflow.kms_key_arn
  compute_log_bucket_arn     = local.active_logs.bucket_arn
  compute_log_kms_key_arn    = local.active_logs.kms_key_arn
  compute_log_prefix         = local.compute_log_prefix
  mlflow_index_table_name    = local.mlflow_index_table_name
  log_retention_days         = var.log_retention_days
  runtime_service_principals = var.runtime_service_principals
  permissions_boundary_arn   = module.github_oidc.role_boundary_arn

  table_replica = {
    region      = var.replica_region
    kms_key_arn = module.mlflow_artifacts_replica.kms_key_arn
  }
}

# --- Silver on Spark: EMR Serverless, reached by Dagster Pipes (README "Spark") --------------

module "spark_emr_serverless" {
  source = "../../modules/spark_emr_serverless"

  name_prefix              = local.name_prefix
  lake_bucket_arn          = local.active_lake.bucket_arn
  lake_kms_key_arn         = local.active_lake.kms_key_arn
  log_bucket_arn           = local.active_logs.bucket_arn
  log_kms_key_arn          = local.active_logs.kms_key_arn
  log_retention_days       = var.log_retention_days
  runtime_role_name        = module.pipeline_runtime.runtime_role_name
  permissions_boundary_arn = module.github_oidc.role_boundary_arn
}

# --- CI: GitHub OIDC provider, plan and apply roles ----------------------------------------

module "github_oidc" {
  source = "../../modules/github_oidc"

  github_repository       = var.github_repository
  apply_ref               = var.github_apply_ref
  create_oidc_provider    = var.create_github_oidc_provider
  project                 = var.project
  name_prefix             = local.name_prefix
  mlflow_index_table_name = local.mlflow_index_table_name
  log_group_name          = module.pipeline_runtime.log_group_name
  state_bucket            = var.state_bucket
  state_key               = var.state_key
  state_kms_key_arn       = var.state_kms_key_arn
}
