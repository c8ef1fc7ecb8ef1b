"""The one place that opens, probes, counts and reads video files (PyAV), and the one
definition of a bad video. Every tool (`prepare`, `transcode`, both loaders, evaluation) gives
the same verdict on the same file:

- *not a video*: missing, empty, unreadable, FFmpeg cannot open it, or it has no video stream
  (an MP4 whose index is missing says so);
- *corrupt*: decoding, with FFmpeg's default error concealment, stops with an error, or yields
  no frame;
- *truncated*: it decodes to clearly fewer frames than its container declares
  (`TRUNCATION_TOLERANCE`), or, where the container declares no count, its data ends well before
  the declared duration (`DURATION_TOLERANCE`; any stream counts);
- *variable resolution*: its frame size changes mid-stream (rejected, never resized: every
  reader raises it at the first frame of another size; a random-access read that stops before
  the change cannot know of it, as with truncation).

Every other file is accepted. Frame `i` is the i-th frame a sequential decode yields;
`read_frames` returns exactly those frames in any container. Also here: the video extensions,
`--videos` listing (a folder scan enters each folder and lists each file once, by real path, so
symbolic-link loops end at once), the crash-tolerant process pool and file fingerprints.
This package imports nothing else of mcl_fast.
"""
from .container import DURATION_TOLERANCE, TRUNCATION_TOLERANCE, check_path, open_video, probe, truncation_reason
from .errors import VideoError
from .fingerprint import file_fingerprint
from .inputs import VIDEO_EXTENSIONS, VideoListError, collect_videos, is_video_file, read_video_list, scan_folder
from .pool import CRASH_REASON, crash_tolerant_map
from .random_access import FrameIndex, frame_index, read_frames
from .reader import VideoReader, check_video, count_frames, first_frame_problem, iter_frames, target_size

__all__ = ["VideoError", "VideoListError", "VIDEO_EXTENSIONS", "TRUNCATION_TOLERANCE", "DURATION_TOLERANCE",
           "CRASH_REASON", "open_video", "probe", "check_path", "truncation_reason", "VideoReader", "iter_frames",
           "check_video", "count_frames", "first_frame_problem", "target_size", "FrameIndex", "frame_index",
           "read_frames", "is_video_file", "scan_folder", "read_video_list", "collect_videos", "crash_tolerant_map",
           "file_fingerprint"]
