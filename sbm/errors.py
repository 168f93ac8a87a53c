"""The errors a user can cause, shared by every layer and the stage scripts (the lowest layer).

Each message names what is wrong (the key, file or step) and what is allowed; `run_stage`
turns them into one line on stderr and exit status 2.
"""


class ConfigError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or of an unexpected kind."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, too little data); the message names the step."""
