# What the running pipeline needs besides the buckets: the MLflow run-index table, a log group,
# and the runtime role with least-privilege access to exactly those, the lake and MLflow buckets
# and the compute-log prefix.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id     = data.aws_caller_identity.current.account_id
  partition      = data.aws_partition.current.partition
  region         = data.aws_region.current.name
  log_group_name = "/${var.name_prefix}/pipeline"
  log_group_arn  = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_name}"

  # The run index in this region and, when replicated, the same table in the DR region.
  table_arns = concat(
    [aws_dynamodb_table.mlflow_index.arn],
    [for r in aws_dynamodb_table.mlflow_index.replica : r.arn],
  )
}

# --- MLflow run index ------------------------------------------------------------------------

resource "aws_dynamodb_table" "mlflow_index" {
  name                        = var.mlflow_index_table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "experiment_id"
  range_key                   = "run_uuid"
  deletion_protection_enabled = true

  attribute {
    name = "experiment_id"
    type = "S"
  }

  attribute {
    name = "run_uuid"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.mlflow_kms_key_arn
  }

  # A global-table replica in the DR region (PITR alone is regional). Replicas need streams.
  stream_enabled   = var.table_replica != null
  stream_view_type = var.table_replica != null ? "NEW_AND_OLD_IMAGES" : null

  dynamic "replica" {
    for_each = var.table_replica == null ? [] : [var.table_replica]

    content {
      region_name            = replica.value.region
      kms_key_arn            = replica.value.kms_key_arn
      point_in_time_recovery = true
      propagate_tags         = true
    }
  }

  tags = var.tags
}

# --- Logs ------------------------------------------------------------------------------------

resource "aws_kms_key" "logs" {
  description             = "Encrypts CloudWatch log group ${local.log_group_name}"
  enable_key_rotation     = true
  deletion_window_in_days = 30

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "DelegateToAccountIam"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "AllowCloudWatchLogsForThisLogGroup"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action = [
          "kms:Encrypt*",
          "kms:Decrypt*",
          "kms:ReEncrypt*",
          "kms:GenerateDataKey*",
          "kms:Describe*",
        ]
        Resource = "*"
        Condition = {
          ArnEquals = { "kms:EncryptionContext:aws:logs:arn" = local.log_group_arn }
        }
      },
    ]
  })

  tags = var.tags
}

resource "aws_kms_alias" "logs" {
  name          = "alias/${var.name_prefix}-pipeline-logs"
  target_key_id = aws_kms_key.logs.key_id
}

resource "aws_cloudwatch_log_group" "pipeline" {
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
  tags              = var.tags
}

# --- Runtime role ----------------------------------------------------------------------------

data "aws_iam_policy_document" "runtime_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = var.runtime_service_principals
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "runtime" {
  name                 = "${var.name_prefix}-pipeline-runtime"
  description          = "Runs the potato_assets Dagster pipeline"
  assume_role_policy   = data.aws_iam_policy_document.runtime_trust.json
  max_session_duration = 3600
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

# Every data action below is scoped to a named bucket prefix, table, log group or key ARN.
data "aws_iam_policy_document" "runtime" {
  statement {
    sid       = "ListLakePrefixes"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values = concat(
        ["", var.landing_prefix, "${var.landing_prefix}*"],
        var.lake_layer_prefixes,
        [for p in var.lake_layer_prefixes : "${p}*"],
      )
    }
  }

  statement {
    sid       = "ReadLanding"
    actions   = ["s3:GetObject"]
    resources = ["${var.lake_bucket_arn}/${var.landing_prefix}*"]
  }

  statement {
    sid       = "ReadWriteLakeLayers"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [for p in var.lake_layer_prefixes : "${var.lake_bucket_arn}/${p}*"]
  }

  statement {
    sid       = "ListMlflowArtifacts"
    actions   = ["s3:ListBucket"]
    resources = [var.mlflow_bucket_arn]
  }

  statement {
    sid       = "ReadWriteMlflowArtifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${var.mlflow_bucket_arn}/*"]
  }

  # Dagster's S3ComputeLogManager: uploads step logs, lists and reads them back for the UI,
  # deletes them with their run. Only under its prefix.
  statement {
    sid       = "ListComputeLogs"
    actions   = ["s3:ListBucket"]
    resources = [var.compute_log_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.compute_log_prefix, "${var.compute_log_prefix}*"]
    }
  }

  statement {
    sid       = "ReadWriteComputeLogs"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${var.compute_log_bucket_arn}/${var.compute_log_prefix}*"]
  }

  statement {
    sid = "MlflowRunIndex"
    actions = [
      "dynamodb:DescribeTable",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:Query",
    ]
    resources = local.table_arns
  }

  statement {
    sid       = "WritePipelineLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.pipeline.arn}:*"]
  }

  statement {
    sid       = "UseDataKeys"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.lake_kms_key_arn, var.mlflow_kms_key_arn, var.compute_log_kms_key_arn]
  }
}

resource "aws_iam_policy" "runtime" {
  name        = "${var.name_prefix}-pipeline-runtime"
  description = "Least-privilege data access for the potato_assets pipeline"
  policy      = data.aws_iam_policy_document.runtime.json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "runtime" {
  role       = aws_iam_role.runtime.name
  policy_arn = aws_iam_policy.runtime.arn
}
