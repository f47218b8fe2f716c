"""Videos: frames decoded in-process (``frames``), with no ffmpeg or ffprobe binary."""
