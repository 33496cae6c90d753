"""EKG's user-facing error type (reported as one line by `train.ekg`)."""

from tfgraft import errors


class EKGError(errors.ArgumentError):
    """Bad EKG input or an unreachable search target; names the culprit."""
