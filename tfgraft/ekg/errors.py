"""EKG's user-facing error type (reported as one line by `train.ekg`)."""


class EKGError(ValueError):
    """Bad EKG input or an unreachable search target; names the culprit."""
