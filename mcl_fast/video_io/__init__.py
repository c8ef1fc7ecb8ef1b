"""The one place that opens, probes, counts and reads video files (PyAV), and the one
definition of a bad video, so every tool (`prepare`, `transcode`, both loaders, evaluation) gives
the same verdict on the same file: *not a video*, *corrupt*, *truncated* (`TRUNCATION_TOLERANCE`,
`DURATION_TOLERANCE`) or *variable resolution*; frame `i` is the i-th frame a sequential decode
yields. Also the video extensions, `--videos` listing, the crash-tolerant process pool and file
fingerprints. Imports nothing else of mcl_fast. The verdicts in full: docs/faults.md.
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
