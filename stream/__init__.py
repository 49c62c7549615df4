"""stream: real-time video pipeline (YOLO-NAS → ByteTrack → SAM → live view, publish, record)."""

__version__ = "0.1.0"
