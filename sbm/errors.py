"""Errors a user can cause, shared by the library and the stage scripts."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, too little data); the message names the step."""
