"""Domain: the one error root of the `serving` package and its typed children."""


class ServingError(Exception):
    """Root of every error raised on purpose by `serving`."""


class InvalidInputError(ServingError):
    """An input (image, array, file) cannot be processed as given."""


class MissingWeightsError(ServingError):
    """A model file or package that must be present is absent.

    The message says which file was looked for and how to get it.
    """


class ArtifactMismatchError(ServingError):
    """An artifact fails hash verification or disagrees with its manifest."""


class DatasetError(ServingError):
    """A dataset directory does not have the expected layout or content."""


class InferenceUnavailableError(ServingError):
    """A remote inference service cannot be reached right now (transient)."""
