"""`VideoError`: a video that cannot be used, with its path and the reason kept apart."""
from __future__ import annotations


class VideoError(ValueError):
    """A video that cannot be used. `path` and `reason` are kept apart for error reports
    (prepare's errors.json, transcode's error list, the loaders' replacement notes)."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # survive the trip back from a worker process
        return (type(self), (self.path, self.reason))


def ffmpeg_message(exc: BaseException) -> str:
    """An FFmpeg error without PyAV's '[Errno N]' prefix and the file name it repeats."""
    return getattr(exc, "strerror", None) or str(exc)
