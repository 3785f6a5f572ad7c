# The role of the scheduled lake-checks workflow (.github/workflows/lake-checks.yml): it runs the
# asset checks against the production lake, so it may list and read the lake's tables and
# nothing else. No write, delete or tagging action on anything; the lake key only decrypts,
# and only when S3 asks on the role's behalf.
#
# Trust: GitHub OIDC tokens of this repository's `lake-checks` environment only (sub =
# repo:OWNER/REPO:environment:NAME). IAM can match only the token's sub and aud, not the
# workflow file or the event: the environment's deployment-branch rule (main only, set in
# GitHub like the `dev` environment's) is what keeps other branches out, and the workflow uses
# the environment only in its scheduled job.

locals {
  oidc_host         = "token.actions.githubusercontent.com"
  checks_subject    = "repo:${var.github_repository}:environment:${var.checks_environment}"
  table_prefixes    = [for layer in var.lake_layer_prefixes : "${var.lake_prefix}${layer}"]
  object_arns       = [for prefix in local.table_prefixes : "${var.lake_bucket_arn}/${prefix}*"]
  listable_prefixes = flatten([for prefix in local.table_prefixes : [prefix, "${prefix}*"]])
}

data "aws_iam_policy_document" "checks_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = [local.checks_subject]
    }
  }
}

resource "aws_iam_role" "checks" {
  name                 = "${var.name_prefix}-github-lake-checks"
  description          = "Read-only asset checks of the lake from the scheduled workflow of ${var.github_repository}"
  assume_role_policy   = data.aws_iam_policy_document.checks_trust.json
  max_session_duration = 3600
  # The apply role may create roles only under this boundary (modules/github_oidc).
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

data "aws_iam_policy_document" "checks" {
  # Listing only under the table prefixes (s3fs lists a key's prefix to stat it).
  statement {
    sid       = "ListLakeTables"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = local.listable_prefixes
    }
  }

  statement {
    sid       = "ReadLakeTables"
    actions   = ["s3:GetObject"]
    resources = local.object_arns
  }

  # The objects are SSE-KMS: reading one needs the key's Decrypt, granted through S3 only.
  statement {
    sid       = "DecryptLakeObjectsViaS3"
    actions   = ["kms:Decrypt"]
    resources = [var.lake_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.lake_region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "checks" {
  name   = "lake-checks-read-only"
  role   = aws_iam_role.checks.id
  policy = data.aws_iam_policy_document.checks.json
}
