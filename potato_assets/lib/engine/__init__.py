"""Where silver runs: the engines and the local Spark cluster (#16, #17)."""
