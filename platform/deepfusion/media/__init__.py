"""Decoding of raw media into arrays: the one code path shared by Ray Data jobs and Serve."""


class MediaError(ValueError):
    """A file that cannot be decoded (corrupt, truncated, empty, unsupported).

    Its message names the file and what is wrong; ingestion quarantines the sample.
    """


class NoAudioTrack(MediaError):
    """A container (mp4) without sound: not corrupt, the sample simply has no audio."""


class MediaLimitExceeded(MediaError):
    """A file over one of ``MediaLimits``' caps; ``limit`` names the cap (``max_video_frames``...)."""

    def __init__(self, message: str, limit: str):
        super().__init__(message)
        self.limit = limit


class DecodeTimeout(MediaError):
    """Decoding one file took longer than ``MediaLimits.decode_timeout_s``."""
