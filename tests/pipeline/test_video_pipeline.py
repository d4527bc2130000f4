"""Videos through ``anonymize_file`` with the real detector: a moving face pasted from ``astronaut()`` into
a VFR video with a sine-tone track, and the real no-face control clip from ``../shared/data/video``."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from skimage.data import astronaut
from typer.testing import CliRunner

from efface.arrays import ImageArray
from efface.audit import AuditStore
from efface.cli import app
from efface.config import load_settings
from efface.detection import StaticModels
from efface.detection.multiscale import MultiScaleSpec
from efface.detection.presets import light_pass_spec
from efface.detection.tracking import TrackingSpec
from efface.media.atomic import find_leftovers
from efface.media.video import VideoOptions
from efface.pipeline.build import build_policy, load_models
from efface.pipeline.core import FileJob, Policy, anonymize_file
from efface.pipeline.jobs import plan_jobs
from efface.pipeline.pool import InProcess
from efface.pipeline.run import AuditedRun, run_plan
from efface.records import BBox, Face, Outcome, WriteMode

NO_FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "video" / "no_faces_320x240.avi"
WIDTH, HEIGHT, FRAMES = 320, 240, 24
# Irregular intervals (ms): a variable frame rate.
PTS_MS = tuple(itertools.accumulate((70 if i % 4 == 0 else 40 for i in range(FRAMES - 1)), initial=0))
FACE_PX = 96


def _face() -> np.ndarray:
    crop = astronaut()[20:220, 140:340]  # her head and shoulders
    return np.asarray(av.VideoFrame.from_ndarray(crop, format="rgb24").reformat(FACE_PX, FACE_PX).to_ndarray())


def _position(index: int) -> tuple[int, int]:
    return 20 + index * 7, 60 + (index % 5) * 3


def _picture(index: int, face: np.ndarray | None) -> np.ndarray:
    picture = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    picture[:, :, 1] = np.linspace(60, 140, WIDTH, dtype=np.uint8)[None, :]
    if face is not None:
        x, y = _position(index)
        picture[y : y + FACE_PX, x : x + FACE_PX] = face
    return picture


def _write_face_video(path: Path, *, face_from_frame: int = 0) -> None:
    face = _face()
    with av.open(str(path), "w") as container:
        container.metadata["title"] = "Alice at home"
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.time_base = Fraction(1, 1000)
        video.codec_context.options = {"crf": "12"}
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for index, pts in enumerate(PTS_MS):
            shown = face if index >= face_from_frame else None
            frame = av.VideoFrame.from_ndarray(_picture(index, shown), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        size = audio.codec_context.frame_size or 1024
        samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)).astype(np.float32)
        for start in range(0, len(samples) - size + 1, size):
            chunk = av.AudioFrame.from_ndarray(samples[None, start : start + size], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = 48000, start, Fraction(1, 48000)
            container.mux(audio.encode(chunk))
        container.mux(audio.encode())


def _read(path: Path) -> tuple[list[np.ndarray], list[float], list[bytes], dict[str, str]]:
    with av.open(str(path)) as container:
        frames, times = [], []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * frame.time_base))
        audio = []
        if container.streams.audio:
            container.seek(0)
            audio = [bytes(p) for p in container.demux(audio=0) if p.size]
        return frames, times, audio, dict(container.metadata)


@pytest.fixture(scope="module")
def worker() -> InProcess:
    """The real models and the default policy, run in this process."""
    settings = load_settings(db_url="sqlite://")
    return InProcess(load_models(settings, inference_threads=2), build_policy(settings))


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "in-place"])
def test_a_video_is_opened_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dry_run: bool, count_av_opens: Callable[[], list[tuple[str, str]]]
) -> None:
    source = tmp_path / "clip.mp4"
    _write_face_video(source)
    face = Face(BBox(20, 60, 20 + FACE_PX, 60 + FACE_PX), 0.9)
    opened = count_av_opens()

    job = FileJob(source=source, destination=None if dry_run else source)
    result = anonymize_file(job, models=StaticModels(faces=(face,)), policy=Policy())

    assert result.outcome is (Outcome.DRY_RUN if dry_run else Outcome.ANONYMIZED), result.error_message
    assert result.video is not None and result.video.frames == FRAMES
    reads = [name for name, mode in opened if mode == "r"]
    writes = [name for name, mode in opened if mode == "w"]
    assert reads == ["clip.mp4"]  # probe, inspection and the pass share one open
    assert len(writes) == (0 if dry_run else 1)  # the temporary file beside it
    assert all(name != "clip.mp4" for name in writes)


class _PassModels:
    """Fake models whose detectors count the frames they see, per detection spec, and find one face."""

    name = "passes"
    weights_sha256 = "0" * 64

    def __init__(self, face: Face) -> None:
        self.face = face
        self.frames_by_scales: dict[tuple[float, ...], int] = {}

    def detector(self, spec: MultiScaleSpec) -> _PassModels.Detector:
        return self.Detector(self, spec.scales)

    class Detector:
        def __init__(self, models: _PassModels, scales: tuple[float, ...]) -> None:
            self.models, self.scales = models, scales

        def detect(self, image: ImageArray) -> tuple[Face, ...]:
            counts = self.models.frames_by_scales
            counts[self.scales] = counts.get(self.scales, 0) + 1
            return (self.models.face,)


@pytest.mark.parametrize(("light_passes", "light_frames"), [(True, 16), (False, 0)])
def test_light_passes_run_on_the_frames_between_full_detections(
    tmp_path: Path, light_passes: bool, light_frames: int
) -> None:
    source = tmp_path / "clip.mp4"
    _write_face_video(source)
    models = _PassModels(Face(BBox(20, 60, 20 + FACE_PX, 60 + FACE_PX), 0.9))
    policy = Policy(tracking=TrackingSpec(detect_every=3, light_passes=light_passes))

    result = anonymize_file(FileJob(source=source, destination=source), models=models, policy=policy)

    assert result.outcome is Outcome.ANONYMIZED, result.error_message
    full, light = policy.detection.scales, light_pass_spec(policy.detection).scales
    # Frames 0, 3, ..., 21 get the full detection; the 16 others the light pass, or nothing without it.
    assert models.frames_by_scales == {full: 8, **({light: light_frames} if light_frames else {})}
    video = result.video
    assert video is not None and video.frames_detected == 8 + light_frames
    assert video.detections == 8 + light_frames and video.frames_with_faces == FRAMES


@pytest.mark.parametrize("encoder_threads", [1, 2])
def test_the_encoder_runs_on_the_threads_the_policy_gives_it(tmp_path: Path, encoder_threads: int) -> None:
    source = tmp_path / "clip.mp4"
    _write_face_video(source)
    policy = Policy(video=VideoOptions(encoder_threads=encoder_threads))

    result = anonymize_file(FileJob(source=source, destination=source), models=StaticModels(), policy=policy)

    assert result.outcome is Outcome.NO_FACES, result.error_message
    # x264 writes the settings it ran with into the stream (an SEI message), its thread count among them.
    assert f" threads={encoder_threads} ".encode() in source.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize(("light_passes", "first_covered"), [(True, 13), (False, 15)])
def test_a_face_entering_between_detections_is_covered_from_the_light_pass_that_finds_it(
    tmp_path: Path, worker: InProcess, light_passes: bool, first_covered: int
) -> None:
    # The face appears on frame 13, between the full detections of frames 12 and 15; no look-back frames, so
    # only a detection on its own frame can cover it there.
    source = tmp_path / "clip.mp4"
    _write_face_video(source, face_from_frame=13)
    tracking = TrackingSpec(detect_every=3, lookback_frames=0, light_passes=light_passes)
    policy = dataclasses.replace(worker.policy, tracking=tracking)
    before_frames, _, _, _ = _read(source)

    result = anonymize_file(FileJob(source=source, destination=source), models=worker.models, policy=policy)

    assert result.outcome is Outcome.ANONYMIZED, result.error_message
    after_frames, _, _, _ = _read(source)
    is_filled = []
    for index, (before, after) in enumerate(zip(before_frames, after_frames, strict=True)):
        x, y = _position(index)
        inner = (slice(y + 25, y + FACE_PX - 25), slice(x + 25, x + FACE_PX - 25))
        is_filled.append(bool(np.abs(after[inner].astype(int) - before[inner].astype(int)).mean() > 40))
    assert is_filled == [index >= first_covered for index in range(FRAMES)]


@pytest.mark.slow
def test_a_moving_face_is_covered_on_every_frame_and_audio_and_timing_are_kept(
    tmp_path: Path, worker: InProcess
) -> None:
    source = tmp_path / "clip.mp4"
    _write_face_video(source)
    before_frames, before_times, before_audio, _ = _read(source)
    progress: list[tuple[int, int | None]] = []

    result = anonymize_file(
        FileJob(source=source, destination=source),
        models=worker.models,
        policy=worker.policy,
        on_frame=lambda *args: progress.append(args),
    )

    assert result.outcome is Outcome.ANONYMIZED, result.error_message
    after_frames, after_times, after_audio, metadata = _read(source)
    assert len(after_frames) == len(before_frames) == FRAMES
    assert after_times == pytest.approx(before_times, abs=1e-3)
    assert after_audio == before_audio and after_audio
    assert "title" not in metadata
    for index, (before, after) in enumerate(zip(before_frames, after_frames, strict=True)):
        x, y = _position(index)
        inner = (slice(y + 25, y + FACE_PX - 25), slice(x + 25, x + FACE_PX - 25))
        # the face's middle is filled (black by default): nothing of the face is left on any frame
        assert np.abs(after[inner].astype(int) - before[inner].astype(int)).mean() > 40, f"frame {index}"
        assert after[inner].mean() < 40, f"frame {index}"
    video = result.video
    assert video is not None and video.frames == FRAMES and video.frames_with_faces == FRAMES
    assert video.detections >= FRAMES - 2 and result.faces_detected == video.detections
    assert video.encoder and video.copied_streams == 1
    assert progress[-1] == (FRAMES, FRAMES) and len(progress) == FRAMES
    assert result.output_sha256 is not None and not list(find_leftovers(tmp_path))


@pytest.mark.slow
def test_video_run_is_audited_and_a_dry_run_writes_nothing(tmp_path: Path, worker: InProcess) -> None:
    source = tmp_path / "clip.mp4"
    _write_face_video(source)
    original = source.read_bytes()
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    plan = plan_jobs([tmp_path], dry_run=True)
    with store:
        with AuditedRun.begin(store, command="anonymize", mode=plan.mode, models=worker.models, settings={}) as run:
            run_plan(plan.items(), executor=worker, run=run)
        summary = run.summary
        # The walk also meets the audit database itself (and its journal): files that are not media.
        (stored,) = [row for row in store.list_files(run.run_id) if row.outcome is not Outcome.NOT_MEDIA]
    assert source.read_bytes() == original
    assert summary.files_total == 1 and summary.faces_detected >= FRAMES - 2
    assert stored.outcome is Outcome.DRY_RUN and stored.faces == ()
    details = stored.details["video"]
    assert details["frames"] == FRAMES and details["regions_per_frame"]["min"] >= 1
    assert details["encoder"] is None


@pytest.mark.slow
def test_bad_videos_fail_alone_and_stay_untouched(tmp_path: Path, worker: InProcess) -> None:
    good = tmp_path / "good.mp4"
    _write_face_video(good)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mov"
    text.write_text("this is not a video\n")
    for bad in (truncated, empty, text):
        before = bad.read_bytes()
        result = anonymize_file(FileJob(source=bad, destination=bad), models=worker.models, policy=worker.policy)
        assert result.outcome is Outcome.ERROR and result.error_message, bad
        assert "\n" not in result.error_message
        assert bad.read_bytes() == before
    assert not list(find_leftovers(tmp_path))


@pytest.mark.slow
def test_the_no_face_control_clip_is_barely_touched(tmp_path: Path, worker: InProcess) -> None:
    if not NO_FACES.is_file():
        pytest.skip(f"evaluation data not present: {NO_FACES}")
    source = tmp_path / NO_FACES.name
    shutil.copyfile(NO_FACES, source)
    output = tmp_path / "out" / source.name
    result = anonymize_file(FileJob(source=source, destination=output), models=worker.models, policy=worker.policy)
    assert result.outcome in (Outcome.NO_FACES, Outcome.ANONYMIZED), result.error_message
    assert result.mode is WriteMode.OUTPUT_DIR and source.read_bytes() == NO_FACES.read_bytes()
    video = result.video
    assert video is not None and video.frames == 151  # the stream declares and holds 151 (the data README says 152)
    before, _, _, _ = _read(source)
    after, _, _, _ = _read(output)
    # pixels changed beyond what re-encoding does: a false positive now and then costs a little blur
    changed = np.mean(
        [np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 60 for a, b in zip(before, after, strict=True)]
    )
    assert changed <= 0.01, (changed, video)


@pytest.mark.slow
def test_cli_anonymizes_a_video_and_prints_the_encoder(tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    _write_face_video(source)
    db = f"sqlite:///{tmp_path / 'audit.sqlite3'}"

    result = CliRunner().invoke(app, ["anonymize", str(source), "--db", db, "--video-crf", "23"])

    assert result.exit_code == 0, result.output
    assert f"video clip.mp4: {FRAMES} frames, faces covered on {FRAMES}" in result.stdout
    assert "encoded with libx264 (CRF 23)" in result.stdout
    with AuditStore(db) as store:
        (run,) = store.list_runs()
        (stored,) = store.list_files(run.run_id)
    assert stored.outcome is Outcome.ANONYMIZED and stored.details["video"]["crf"] == 23
    assert run.settings["video_crf"] == 23 and run.settings["tracking"]["hold_frames"] == 8
    assert run.settings["light_passes"] is True and run.settings["tracking"]["light_passes"] is True
