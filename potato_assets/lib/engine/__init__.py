"""Where silver runs: the engines and the local Spark cluster (#16, #17)."""


class EngineUnreachable(ConnectionError):
    """The engine's server does not accept connections; the message names it and the setting."""


class EngineJobFailed(RuntimeError):
    """A Spark job that builds a table failed, was cancelled or reported nothing; the message
    is one sentence naming the job run."""
