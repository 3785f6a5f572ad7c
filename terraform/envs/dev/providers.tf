provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

# Second region: replicas of the data lake and MLflow artifacts (disaster recovery).
provider "aws" {
  alias  = "replica"
  region = var.replica_region

  default_tags {
    tags = local.tags
  }
}
