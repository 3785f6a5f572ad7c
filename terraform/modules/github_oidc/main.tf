# GitHub Actions OIDC federation: no long-lived AWS keys. Two roles, each trusting exactly one
# token subject of exactly one repository:
#   plan  - repo:OWNER/REPO:pull_request         read-only, for `terraform plan` on PRs
#   apply - repo:OWNER/REPO:ref:refs/heads/main  for `terraform apply`, only from workflows on main
# AWS evaluates only the token's `sub` and `aud` (no custom claims), and an environment job's
# `sub` names the environment but not the branch, so the apply trust pins the ref: which branch
# may deploy is then in code, not in the environment's settings on GitHub.
#
# The apply role cannot grant itself more: every role it creates or changes must carry the
# permissions boundary below (which allows no IAM writes), it may attach only this stack's
# policies, and it may not change its own role, its own policies or trust, or the boundary.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  oidc_host  = "token.actions.githubusercontent.com"

  oidc_provider_arn = (
    var.create_oidc_provider
    ? aws_iam_openid_connect_provider.github[0].arn
    : "arn:${local.partition}:iam::${local.account_id}:oidc-provider/${local.oidc_host}"
  )

  plan_subject  = "repo:${var.github_repository}:pull_request"
  apply_subject = "repo:${var.github_repository}:ref:${var.apply_ref}"

  apply_role_name = "${var.name_prefix}-github-apply"
  apply_role_arn  = "arn:${local.partition}:iam::${local.account_id}:role/${local.apply_role_name}"
  boundary_name   = "${var.name_prefix}-role-boundary"
  boundary_arn    = "arn:${local.partition}:iam::${local.account_id}:policy/${local.boundary_name}"
  oidc_arn        = "arn:${local.partition}:iam::${local.account_id}:oidc-provider/${local.oidc_host}"

  # ARNs of what the stack manages; every CI permission is scoped to these.
  bucket_arns    = "arn:${local.partition}:s3:::${var.name_prefix}-*"
  key_arns       = "arn:${local.partition}:kms:*:${local.account_id}:key/*"
  alias_arns     = "arn:${local.partition}:kms:*:${local.account_id}:alias/${var.name_prefix}-*"
  role_arns      = "arn:${local.partition}:iam::${local.account_id}:role/${var.name_prefix}-*"
  policy_arns    = "arn:${local.partition}:iam::${local.account_id}:policy/${var.name_prefix}-*"
  table_arn      = "arn:${local.partition}:dynamodb:*:${local.account_id}:table/${var.mlflow_index_table_name}"
  log_group_arns = "arn:${local.partition}:logs:*:${local.account_id}:log-group:${var.log_group_name}*"
  all_log_groups = "arn:${local.partition}:logs:*:${local.account_id}:log-group:*"
  state_bucket   = "arn:${local.partition}:s3:::${var.state_bucket}"
  # EMR Serverless applications (ids are generated) and the Spark jobs' execution role.
  spark_app_arns     = "arn:${local.partition}:emr-serverless:*:${local.account_id}:/applications/*"
  spark_job_role_arn = "arn:${local.partition}:iam::${local.account_id}:role/${var.name_prefix}-spark-job"
}

resource "aws_iam_openid_connect_provider" "github" {
  count = var.create_oidc_provider ? 1 : 0

  url            = "https://${local.oidc_host}"
  client_id_list = ["sts.amazonaws.com"]
  # AWS validates GitHub's certificate against its own trusted CAs; the thumbprints are only
  # kept because the API still accepts them (GitHub's published intermediate CAs).
  thumbprint_list = [
    "6938fd4d98bab03faadb97b34396831e3780aea1",
    "1c58a3a8518e8759bf075b76b750d4f2df264fcd",
  ]
  tags = var.tags
}

# --- Trust policies --------------------------------------------------------------------------

data "aws_iam_policy_document" "plan_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = [local.plan_subject]
    }
  }
}

data "aws_iam_policy_document" "apply_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = [local.apply_subject]
    }
  }
}

resource "aws_iam_role" "plan" {
  name                 = "${var.name_prefix}-github-plan"
  description          = "terraform plan from pull requests of ${var.github_repository}"
  assume_role_policy   = data.aws_iam_policy_document.plan_trust.json
  max_session_duration = 3600
  permissions_boundary = aws_iam_policy.role_boundary.arn
  tags                 = var.tags
}

# Created and changed by an administrator only (see README): the apply role may not touch itself.
resource "aws_iam_role" "apply" {
  name                 = local.apply_role_name
  description          = "terraform apply from ${var.github_repository} ${var.apply_ref}"
  assume_role_policy   = data.aws_iam_policy_document.apply_trust.json
  max_session_duration = 3600
  tags                 = var.tags
}

# --- Permissions boundary: the most any role created by the apply role can ever do ----------
# The stack's workload roles (pipeline runtime, S3 replication) and the plan role: data access to
# the stack's buckets, keys, table and log group, and reads of its configuration. No IAM writes,
# no key policies: a role the apply role creates can never be a way to more than this.

data "aws_iam_policy_document" "role_boundary" {
  statement {
    sid       = "StackBucketsAndObjects"
    actions   = ["s3:Get*", "s3:ListBucket", "s3:PutObject", "s3:DeleteObject", "s3:Replicate*"]
    resources = [local.bucket_arns, "${local.bucket_arns}/*"]
  }

  statement {
    sid       = "State"
    actions   = ["s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [local.state_bucket, "${local.state_bucket}/${var.state_key}", "${local.state_bucket}/${var.state_key}.tflock"]
  }

  statement {
    sid = "UseAndReadStackKeys"
    actions = [
      "kms:Decrypt",
      "kms:DescribeKey",
      "kms:Encrypt",
      "kms:GenerateDataKey",
      "kms:GetKeyPolicy",
      "kms:GetKeyRotationStatus",
      "kms:ListResourceTags",
    ]
    resources = [local.key_arns]
  }

  # kms:ListAliases has no resource-level permissions: AWS requires "*". It lists alias names.
  statement {
    sid       = "ListAliases"
    actions   = ["kms:ListAliases"]
    resources = ["*"]
  }

  statement {
    sid = "RunIndexTable"
    actions = [
      "dynamodb:DescribeContinuousBackups",
      "dynamodb:DescribeTable",
      "dynamodb:DescribeTimeToLive",
      "dynamodb:GetItem",
      "dynamodb:ListTagsOfResource",
      "dynamodb:PutItem",
      "dynamodb:Query",
      "dynamodb:UpdateItem",
    ]
    resources = [local.table_arn]
  }

  statement {
    sid       = "PipelineLogs"
    actions   = ["logs:CreateLogStream", "logs:GetLogEvents", "logs:PutLogEvents"]
    resources = [local.log_group_arns]
  }

  statement {
    sid       = "ReadLogGroups"
    actions   = ["logs:DescribeLogGroups", "logs:ListTagsForResource", "logs:ListTagsLogGroup"]
    resources = [local.all_log_groups]
  }

  # The runtime submits, watches and cancels Spark job runs (Dagster Pipes on EMR Serverless).
  statement {
    sid = "RunSparkJobs"
    actions = [
      "emr-serverless:CancelJobRun",
      "emr-serverless:GetApplication",
      "emr-serverless:GetDashboardForJobRun",
      "emr-serverless:GetJobRun",
      "emr-serverless:StartJobRun",
    ]
    resources = [local.spark_app_arns, "${local.spark_app_arns}/jobruns/*"]
  }

  # The plan role reads the application's configuration.
  statement {
    sid       = "ReadSparkApplications"
    actions   = ["emr-serverless:GetApplication", "emr-serverless:ListTagsForResource"]
    resources = [local.spark_app_arns]
  }

  # StartJobRun passes the jobs' role: that one role, and only to EMR Serverless. The one IAM
  # action a bounded role may use beyond reads; it grants nothing the job role does not have.
  statement {
    sid       = "PassSparkJobRole"
    actions   = ["iam:PassRole"]
    resources = [local.spark_job_role_arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["emr-serverless.amazonaws.com"]
    }
  }

  statement {
    sid = "ReadIam"
    actions = [
      "iam:GetOpenIDConnectProvider",
      "iam:GetPolicy",
      "iam:GetPolicyVersion",
      "iam:GetRole",
      "iam:GetRolePolicy",
      "iam:ListAttachedRolePolicies",
      "iam:ListPolicyVersions",
      "iam:ListRolePolicies",
    ]
    resources = [local.role_arns, local.policy_arns, local.oidc_arn]
  }
}

resource "aws_iam_policy" "role_boundary" {
  name        = local.boundary_name
  description = "Permissions boundary of every role the ${var.name_prefix} apply role creates"
  policy      = data.aws_iam_policy_document.role_boundary.json
  tags        = var.tags
}

# --- Plan: read the state and the configuration of managed resources -----------------------

data "aws_iam_policy_document" "plan" {
  statement {
    sid       = "ListState"
    actions   = ["s3:ListBucket"]
    resources = [local.state_bucket]
  }

  statement {
    sid       = "ReadState"
    actions   = ["s3:GetObject"]
    resources = ["${local.state_bucket}/${var.state_key}"]
  }

  # S3-native state locking (use_lockfile = true): plan takes the lock too.
  statement {
    sid       = "StateLock"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${local.state_bucket}/${var.state_key}.tflock"]
  }

  dynamic "statement" {
    for_each = var.state_kms_key_arn == null ? [] : [var.state_kms_key_arn]

    content {
      sid       = "StateKey"
      actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }

  # Bucket ARNs only (no "/*"): bucket-configuration reads, never object contents.
  statement {
    sid       = "ReadBucketConfiguration"
    actions   = ["s3:Get*", "s3:ListBucket"]
    resources = [local.bucket_arns]
  }

  statement {
    sid       = "ReadKeys"
    actions   = ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListResourceTags"]
    resources = [local.key_arns]
  }

  statement {
    sid = "ReadIam"
    actions = [
      "iam:GetRole",
      "iam:GetRolePolicy",
      "iam:ListRolePolicies",
      "iam:ListAttachedRolePolicies",
      "iam:GetPolicy",
      "iam:GetPolicyVersion",
      "iam:ListPolicyVersions",
      "iam:GetOpenIDConnectProvider",
    ]
    resources = [
      local.role_arns,
      local.policy_arns,
      "arn:${local.partition}:iam::${local.account_id}:oidc-provider/${local.oidc_host}",
    ]
  }

  statement {
    sid = "ReadTable"
    actions = [
      "dynamodb:DescribeTable",
      "dynamodb:DescribeContinuousBackups",
      "dynamodb:DescribeTimeToLive",
      "dynamodb:ListTagsOfResource",
    ]
    resources = [local.table_arn]
  }

  statement {
    sid       = "ReadLogGroups"
    actions   = ["logs:DescribeLogGroups", "logs:ListTagsForResource", "logs:ListTagsLogGroup"]
    resources = [local.all_log_groups]
  }

  # kms:ListAliases has no resource-level permissions: AWS requires "*". It lists alias names.
  statement {
    sid       = "ListAliases"
    actions   = ["kms:ListAliases"]
    resources = ["*"]
  }

  statement {
    sid       = "ReadSparkApplications"
    actions   = ["emr-serverless:GetApplication", "emr-serverless:ListTagsForResource"]
    resources = [local.spark_app_arns]
  }
}

resource "aws_iam_role_policy" "plan" {
  name   = "terraform-plan"
  role   = aws_iam_role.plan.id
  policy = data.aws_iam_policy_document.plan.json
}

# --- Apply: manage exactly the resources of this stack --------------------------------------

data "aws_iam_policy_document" "apply" {
  statement {
    sid       = "ListState"
    actions   = ["s3:ListBucket"]
    resources = [local.state_bucket]
  }

  statement {
    sid       = "ReadWriteState"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${local.state_bucket}/${var.state_key}", "${local.state_bucket}/${var.state_key}.tflock"]
  }

  dynamic "statement" {
    for_each = var.state_kms_key_arn == null ? [] : [var.state_kms_key_arn]

    content {
      sid       = "StateKey"
      actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }

  # Bucket ARNs only (no "/*"): s3:Put* here cannot write objects, only bucket configuration.
  statement {
    sid       = "ManageBuckets"
    actions   = ["s3:CreateBucket", "s3:DeleteBucket", "s3:DeleteBucketPolicy", "s3:Get*", "s3:ListBucket", "s3:Put*"]
    resources = [local.bucket_arns]
  }

  # kms:CreateKey has no resource-level permissions: AWS requires "*" (and tagging on create
  # needs kms:TagResource too). Both are limited to requests carrying this stack's Project tag
  # (provider default_tags); DenyAdoptingKeys below keeps TagResource off every existing key
  # that is not already the stack's, so no other key can be tagged into the stack.
  statement {
    sid       = "CreateProjectKeys"
    actions   = ["kms:CreateKey", "kms:TagResource"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/Project"
      values   = [var.project]
    }
  }

  statement {
    sid       = "DenyAdoptingKeys"
    effect    = "Deny"
    actions   = ["kms:TagResource", "kms:UntagResource"]
    resources = [local.key_arns]

    condition {
      test     = "StringNotEquals"
      variable = "aws:ResourceTag/Project"
      values   = [var.project]
    }
  }

  # kms:ListAliases has no resource-level permissions either: AWS requires "*".
  statement {
    sid       = "ListAliases"
    actions   = ["kms:ListAliases"]
    resources = ["*"]
  }

  # Existing keys: only those tagged with this stack's Project.
  statement {
    sid = "ManageProjectKeys"
    actions = [
      "kms:CreateAlias",
      "kms:CreateGrant",
      "kms:DeleteAlias",
      "kms:DescribeKey",
      "kms:EnableKeyRotation",
      "kms:GetKeyPolicy",
      "kms:GetKeyRotationStatus",
      "kms:ListResourceTags",
      "kms:PutKeyPolicy",
      "kms:ScheduleKeyDeletion",
      "kms:TagResource",
      "kms:UntagResource",
      "kms:UpdateAlias",
      "kms:UpdateKeyDescription",
    ]
    resources = [local.key_arns]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Project"
      values   = [var.project]
    }
  }

  statement {
    sid       = "ManageProjectAliases"
    actions   = ["kms:CreateAlias", "kms:DeleteAlias", "kms:UpdateAlias"]
    resources = [local.alias_arns]
  }

  # Creating a role or changing its permissions requires the boundary on it (the condition key
  # is the role's boundary, so these fail on any role without it, the apply role included).
  statement {
    sid = "ManageBoundedRoles"
    actions = [
      "iam:CreateRole",
      "iam:DeleteRolePolicy",
      "iam:DetachRolePolicy",
      "iam:PutRolePermissionsBoundary",
      "iam:PutRolePolicy",
    ]
    resources = [local.role_arns]

    condition {
      test     = "StringEquals"
      variable = "iam:PermissionsBoundary"
      values   = [local.boundary_arn]
    }
  }

  # Only the stack's own managed policies may be attached (never an AWS-managed one).
  statement {
    sid       = "AttachStackPolicies"
    actions   = ["iam:AttachRolePolicy"]
    resources = [local.role_arns]

    condition {
      test     = "StringEquals"
      variable = "iam:PermissionsBoundary"
      values   = [local.boundary_arn]
    }

    condition {
      test     = "ArnLike"
      variable = "iam:PolicyARN"
      values   = [local.policy_arns]
    }
  }

  statement {
    sid = "ManageRoles"
    actions = [
      "iam:DeleteRole",
      "iam:GetRole",
      "iam:GetRolePolicy",
      "iam:ListAttachedRolePolicies",
      "iam:ListInstanceProfilesForRole",
      "iam:ListRolePolicies",
      "iam:TagRole",
      "iam:UntagRole",
      "iam:UpdateAssumeRolePolicy",
      "iam:UpdateRole",
      "iam:UpdateRoleDescription",
    ]
    resources = [local.role_arns]
  }

  statement {
    sid = "ManagePolicies"
    actions = [
      "iam:CreatePolicy",
      "iam:CreatePolicyVersion",
      "iam:DeletePolicy",
      "iam:DeletePolicyVersion",
      "iam:GetPolicy",
      "iam:GetPolicyVersion",
      "iam:ListPolicyVersions",
      "iam:TagPolicy",
      "iam:UntagPolicy",
    ]
    resources = [local.policy_arns]
  }

  # Explicit denies win over every allow above: the apply role cannot change its own role,
  # permissions or trust, nor the boundary that limits what it creates, nor drop a boundary.
  statement {
    sid    = "DenyChangingItself"
    effect = "Deny"
    actions = [
      "iam:AttachRolePolicy",
      "iam:DeleteRole",
      "iam:DeleteRolePermissionsBoundary",
      "iam:DeleteRolePolicy",
      "iam:DetachRolePolicy",
      "iam:PutRolePermissionsBoundary",
      "iam:PutRolePolicy",
      "iam:TagRole",
      "iam:UntagRole",
      "iam:UpdateAssumeRolePolicy",
      "iam:UpdateRole",
      "iam:UpdateRoleDescription",
    ]
    resources = [local.apply_role_arn]
  }

  statement {
    sid    = "DenyChangingTheBoundary"
    effect = "Deny"
    actions = [
      "iam:CreatePolicyVersion",
      "iam:DeletePolicy",
      "iam:DeletePolicyVersion",
      "iam:SetDefaultPolicyVersion",
      "iam:TagPolicy",
      "iam:UntagPolicy",
    ]
    resources = [local.boundary_arn]
  }

  statement {
    sid       = "DenyRemovingBoundaries"
    effect    = "Deny"
    actions   = ["iam:DeleteRolePermissionsBoundary"]
    resources = [local.role_arns]
  }

  # Only S3 (replication) is handed one of the stack's roles.
  statement {
    sid       = "PassReplicationRoles"
    actions   = ["iam:PassRole"]
    resources = [local.role_arns]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["s3.amazonaws.com"]
    }
  }

  statement {
    sid = "ManageOidcProvider"
    actions = [
      "iam:AddClientIDToOpenIDConnectProvider",
      "iam:CreateOpenIDConnectProvider",
      "iam:DeleteOpenIDConnectProvider",
      "iam:GetOpenIDConnectProvider",
      "iam:RemoveClientIDFromOpenIDConnectProvider",
      "iam:TagOpenIDConnectProvider",
      "iam:UntagOpenIDConnectProvider",
      "iam:UpdateOpenIDConnectProviderThumbprint",
    ]
    resources = [local.oidc_arn]
  }

  statement {
    sid = "ManageTable"
    actions = [
      "dynamodb:CreateTable",
      "dynamodb:CreateTableReplica",
      "dynamodb:DeleteTable",
      "dynamodb:DeleteTableReplica",
      "dynamodb:DescribeContinuousBackups",
      "dynamodb:DescribeTable",
      "dynamodb:DescribeTimeToLive",
      "dynamodb:ListTagsOfResource",
      "dynamodb:TagResource",
      "dynamodb:UntagResource",
      "dynamodb:UpdateContinuousBackups",
      "dynamodb:UpdateTable",
    ]
    resources = [local.table_arn]
  }

  # Creating a global-table replica requires these item permissions on the table itself
  # (DynamoDB copies the data as the caller). Scoped to the one table.
  statement {
    sid = "SeedTableReplica"
    actions = [
      "dynamodb:BatchWriteItem",
      "dynamodb:DeleteItem",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:Query",
      "dynamodb:Scan",
      "dynamodb:UpdateItem",
    ]
    resources = [local.table_arn]
  }

  # EMR Serverless applications: created only with the stack's Project tag, managed only when
  # they carry it.
  statement {
    sid       = "CreateSparkApplications"
    actions   = ["emr-serverless:CreateApplication", "emr-serverless:TagResource"]
    resources = [local.spark_app_arns]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/Project"
      values   = [var.project]
    }
  }

  statement {
    sid = "ManageSparkApplications"
    actions = [
      "emr-serverless:DeleteApplication",
      "emr-serverless:GetApplication",
      "emr-serverless:ListTagsForResource",
      "emr-serverless:StartApplication",
      "emr-serverless:StopApplication",
      "emr-serverless:UntagResource",
      "emr-serverless:UpdateApplication",
    ]
    resources = [local.spark_app_arns]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Project"
      values   = [var.project]
    }
  }

  statement {
    sid       = "EmrServerlessServiceRole"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role/aws-service-role/ops.emr-serverless.amazonaws.com/AWSServiceRoleForAmazonEMRServerless"]

    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["ops.emr-serverless.amazonaws.com"]
    }
  }

  statement {
    sid       = "DynamoDbReplicationServiceRole"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role/aws-service-role/replication.dynamodb.amazonaws.com/AWSServiceRoleForDynamoDBReplication"]

    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["replication.dynamodb.amazonaws.com"]
    }
  }

  statement {
    sid = "ManageLogGroup"
    actions = [
      "logs:AssociateKmsKey",
      "logs:CreateLogGroup",
      "logs:DeleteLogGroup",
      "logs:DisassociateKmsKey",
      "logs:ListTagsForResource",
      "logs:ListTagsLogGroup",
      "logs:PutRetentionPolicy",
      "logs:TagLogGroup",
      "logs:TagResource",
      "logs:UntagLogGroup",
      "logs:UntagResource",
    ]
    resources = [local.log_group_arns]
  }

  statement {
    sid       = "DescribeLogGroups"
    actions   = ["logs:DescribeLogGroups"]
    resources = [local.all_log_groups]
  }
}

resource "aws_iam_role_policy" "apply" {
  name   = "terraform-apply"
  role   = aws_iam_role.apply.id
  policy = data.aws_iam_policy_document.apply.json
}
