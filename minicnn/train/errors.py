"""The errors a user can cause while training; each message is one line (they are ValueErrors,
so `minicnn` prints them without a traceback)."""


class TrainError(ValueError):
    """A bad setting, architecture, run folder or input file."""


class CheckpointError(TrainError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


class DivergedError(TrainError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
