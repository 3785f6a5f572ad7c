# Silver on Spark in AWS (#17): an EMR Serverless application (Spark 4.0), the execution role its
# jobs run as (bronze read, silver read/write, the job code read, logs written: nothing else), a
# KMS-encrypted log group for the jobs' output, and the policy that lets the Dagster runtime
# submit, watch and cancel job runs (Dagster Pipes' PipesEMRServerlessClient, README "Spark").

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id     = data.aws_caller_identity.current.account_id
  partition      = data.aws_partition.current.partition
  region         = data.aws_region.current.name
  job_role_name  = "${var.name_prefix}-spark-job"
  log_group_name = "/${var.name_prefix}/pipeline/emr-serverless"
  log_group_arn  = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_name}"
  read_write     = concat(var.read_prefixes, var.write_prefixes)
}

resource "aws_emrserverless_application" "spark" {
  name          = "${var.name_prefix}-spark"
  release_label = var.release_label
  type          = "spark"

  maximum_capacity {
    cpu    = var.maximum_capacity.cpu
    memory = var.maximum_capacity.memory
    disk   = var.maximum_capacity.disk
  }

  auto_start_configuration {
    enabled = true
  }

  auto_stop_configuration {
    enabled              = true
    idle_timeout_minutes = var.idle_timeout_minutes
  }

  tags = var.tags
}

# --- The jobs' log group (Pipes reads the driver's stdout here) ------------------------------

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
  name          = "alias/${var.name_prefix}-spark-job-logs"
  target_key_id = aws_kms_key.logs.key_id
}

resource "aws_cloudwatch_log_group" "jobs" {
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
  tags              = var.tags
}

# --- The jobs' execution role ------------------------------------------------------------------

data "aws_iam_policy_document" "job_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["emr-serverless.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    # Only this application's jobs (confused-deputy guard).
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [aws_emrserverless_application.spark.arn]
    }
  }
}

resource "aws_iam_role" "job" {
  name                 = local.job_role_name
  description          = "Spark jobs of ${aws_emrserverless_application.spark.name}: bronze read, silver write"
  assume_role_policy   = data.aws_iam_policy_document.job_trust.json
  max_session_duration = 3600
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

data "aws_iam_policy_document" "job" {
  statement {
    sid       = "ListLakePrefixes"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values = concat(
        local.read_write,
        [for p in local.read_write : "${p}*"],
        [var.code_prefix, "${var.code_prefix}*"],
      )
    }
  }

  statement {
    sid       = "ReadBronze"
    actions   = ["s3:GetObject"]
    resources = [for p in var.read_prefixes : "${var.lake_bucket_arn}/${p}*"]
  }

  statement {
    sid       = "ReadWriteSilver"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [for p in var.write_prefixes : "${var.lake_bucket_arn}/${p}*"]
  }

  statement {
    sid       = "ReadJobCode"
    actions   = ["s3:GetObject"]
    resources = ["${var.lake_bucket_arn}/${var.code_prefix}*"]
  }

  statement {
    sid       = "WriteJobLogsToS3"
    actions   = ["s3:PutObject"]
    resources = ["${var.log_bucket_arn}/${var.log_prefix}*"]
  }

  statement {
    sid       = "WriteJobLogsToCloudWatch"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.jobs.arn}:*"]
  }

  statement {
    sid       = "UseDataKeys"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.lake_kms_key_arn, var.log_kms_key_arn, aws_kms_key.logs.arn]
  }
}

resource "aws_iam_policy" "job" {
  name        = local.job_role_name
  description = "Least-privilege data access for the Spark jobs of ${var.name_prefix}"
  policy      = data.aws_iam_policy_document.job.json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "job" {
  role       = aws_iam_role.job.name
  policy_arn = aws_iam_policy.job.arn
}

# --- What the Dagster runtime may do with the application ------------------------------------

data "aws_iam_policy_document" "submit" {
  statement {
    sid = "RunJobs"
    actions = [
      "emr-serverless:CancelJobRun",
      "emr-serverless:GetApplication",
      "emr-serverless:GetDashboardForJobRun",
      "emr-serverless:GetJobRun",
      "emr-serverless:StartJobRun",
    ]
    resources = [aws_emrserverless_application.spark.arn, "${aws_emrserverless_application.spark.arn}/jobruns/*"]
  }

  # Dagster Pipes tags each job run it starts (tag on create: StartJobRun with tags).
  statement {
    sid       = "TagJobRunsOnStart"
    actions   = ["emr-serverless:TagResource"]
    resources = ["${aws_emrserverless_application.spark.arn}/jobruns/*"]
  }

  # StartJobRun hands the job role to EMR Serverless, and nothing else to anyone.
  statement {
    sid       = "PassTheJobRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.job.arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["emr-serverless.amazonaws.com"]
    }
  }

  # Dagster Pipes reads the job's messages and logs from its CloudWatch streams.
  statement {
    sid       = "ReadJobLogs"
    actions   = ["logs:GetLogEvents"]
    resources = ["${aws_cloudwatch_log_group.jobs.arn}:*"]
  }

  statement {
    sid       = "UploadJobCode"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${var.lake_bucket_arn}/${var.code_prefix}*"]
  }

  statement {
    sid       = "DecryptJobLogs"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.logs.arn]
  }
}

resource "aws_iam_policy" "submit" {
  name        = "${var.name_prefix}-spark-submit"
  description = "Submit, watch and cancel Spark jobs of ${aws_emrserverless_application.spark.name}"
  policy      = data.aws_iam_policy_document.submit.json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "submit" {
  role       = var.runtime_role_name
  policy_arn = aws_iam_policy.submit.arn
}
