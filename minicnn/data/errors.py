"""The one exception the data package raises for bad files, missing data and failed downloads."""


class DataError(ValueError):
    """A dataset is missing, corrupt, unsafe, or could not be fetched. The message is one line."""
