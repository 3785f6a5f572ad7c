"""Names and conventions shared by the asset layers."""

from __future__ import annotations

OWNERS = ["team:data-engineering"]
SCIENCE_OWNERS = ["team:analytics"]

# Bumped when an asset's code changes what it produces, so unchanged assets show as up to date.
CODE_VERSION = "1"
