"""The ``efface`` command end to end: the real model, real files (good and malformed), a real audit DB."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image
from typer.testing import CliRunner

from efface.audit import AuditStore
from efface.cli import _render, app
from efface.config import Settings
from efface.detection.presets import preset_spec
from efface.records import Outcome, Preset

from .conftest import Carriers, json_files

runner = CliRunner()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_bad_inputs(folder: Path, astronaut: np.ndarray) -> dict[str, str]:
    """Writes one real malformed file of each kind; returns file name -> expected error class."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").write_bytes(b"")
    good = folder / "_good.jpg"
    Image.fromarray(astronaut).save(good, quality=90)
    data = good.read_bytes()
    good.unlink()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.jpg").write_text("this is a text file, not a JPEG\n")
    png = folder / "_good.png"
    Image.fromarray(astronaut[:64, :64]).save(png)
    raw = bytearray(png.read_bytes())
    png.unlink()
    idat = raw.index(b"IDAT")
    (length,) = struct.unpack_from(">I", raw, idat - 4)
    raw[idat + 4 + length] ^= 0xFF  # the stored CRC of IDAT; the image data itself is intact
    (folder / "bad_crc.png").write_bytes(bytes(raw))
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _png_chunk(b"IEND", b"")
    )
    (folder / "bomb.png").write_bytes(bomb)
    Image.fromarray(astronaut[:32, :32]).save(folder / "animated.gif")
    _write_bad_videos(folder)
    return {
        "zero.mp4": "CorruptImageError",
        "cut.mp4": "CorruptImageError",
        "notes.mov": "CorruptImageError",
        "audio_only.mp4": "UnsupportedFormatError",
        "zero.jpg": "CorruptImageError",
        "truncated.jpg": "CorruptImageError",
        "text.jpg": "CorruptImageError",
        "bad_crc.png": "CorruptImageError",
        "bomb.png": "ImageTooLargeError",
        "animated.gif": "UnsupportedFormatError",
    }


def _write_bad_videos(folder: Path) -> None:
    good = folder / "_good.mp4"
    with av.open(str(good), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index * 20, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    data = good.read_bytes()
    good.unlink()
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    (folder / "notes.mov").write_text("meeting notes, not a video\n")
    with av.open(str(folder / "audio_only.mp4"), "w") as container:
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for index in range(10):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 48000, index * 1024
            container.mux(audio.encode(samples))
        container.mux(audio.encode())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _files(db_url: str) -> list:
    with AuditStore(db_url) as store:
        (run,) = store.list_runs(limit=1)
        return store.list_files(run.run_id)


@pytest.mark.slow
def test_anonymize_folder_with_good_and_bad_files(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str) -> None:
    folder = tmp_path / "photos"
    expected_errors = write_bad_inputs(folder / "bad", astronaut)
    Image.fromarray(astronaut).save(folder / "astronaut.jpg", quality=95)
    Image.fromarray(np.full((80, 120, 3), 200, np.uint8)).save(folder / "blank.png")
    bad_before = _snapshot(folder / "bad")

    result = runner.invoke(app, ["anonymize", str(folder), "--db", sqlite_url])

    assert result.exit_code == 1, result.output
    for name, error_class in expected_errors.items():
        lines = [line for line in result.stderr.splitlines() if name in line]
        assert len(lines) == 1 and error_class in lines[0], result.stderr
    assert _snapshot(folder / "bad") == bad_before  # byte for byte untouched
    assert not [p for p in folder.rglob("*") if ".efface-tmp-" in p.name]
    rows = {Path(row.path).name: row for row in _files(sqlite_url)}
    for name, error_class in expected_errors.items():
        assert rows[name].outcome is Outcome.ERROR and rows[name].error_class == error_class
    assert rows["astronaut.jpg"].outcome is Outcome.ANONYMIZED and rows["astronaut.jpg"].faces_anonymized == 1
    assert rows["blank.png"].outcome is Outcome.NO_FACES
    assert rows["astronaut.jpg"].faces[0]["score"] > 0.8
    out = np.asarray(Image.open(folder / "astronaut.jpg"))
    face = (slice(90, 150), slice(200, 250))
    assert np.abs(out[face].astype(int) - astronaut[face]).mean() > 10


@pytest.mark.slow
def test_output_mode_and_dry_run_leave_sources_untouched(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "a.png")
    before = _snapshot(folder)
    result = runner.invoke(app, ["anonymize", str(folder), "--dry-run", "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    assert _snapshot(folder) == before
    assert [row.outcome for row in _files(sqlite_url)] == [Outcome.DRY_RUN]

    out = tmp_path / "out"
    result = runner.invoke(app, ["anonymize", str(folder), "--output", str(out), "--db", sqlite_url, "--json"])
    assert result.exit_code == 0, result.output
    assert _snapshot(folder) == before
    assert (out / "src" / "a.png").is_file()
    assert json_files(result.stdout)[0]["outcome"] == "anonymized"
    (row,) = _files(sqlite_url)
    assert row.mode == "output_dir" and Path(row.output_path) == out / "src" / "a.png"


@pytest.mark.parametrize(
    "options",
    [
        ["--blur-kernel", "0.05"],
        ["--method", "pixelate", "--pixelate-blocks", "12"],
    ],
)
def test_below_floor_strength_is_refused_before_any_file(tmp_path: Path, options: list[str], sqlite_url: str) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (10, 10)).save(image)
    before = image.read_bytes()
    result = runner.invoke(app, ["anonymize", str(image), "--db", sqlite_url, *options])
    assert result.exit_code == 2
    assert "floor" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert image.read_bytes() == before


def test_below_floor_strength_in_env_and_config_file_is_refused(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (10, 10)).save(image)
    monkeypatch.setenv("EFFACE_BLUR_KERNEL_FRACTION", "0.02")
    result = runner.invoke(app, ["anonymize", str(image), "--db", sqlite_url])
    assert result.exit_code == 2 and "floor" in result.stderr
    monkeypatch.delenv("EFFACE_BLUR_KERNEL_FRACTION")
    config = tmp_path / "efface.toml"
    config.write_text('method = "pixelate"\npixelate_blocks = 40\n')
    result = runner.invoke(app, ["anonymize", str(image), "--db", sqlite_url, "--config", str(config)])
    assert result.exit_code == 2 and "finer than the floor" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "smudge"], "smudge"),
        (["--threshold", "1.5"], "threshold"),
        (["--config", "/no/such/file.toml"], "config file not found"),
        (["--db", "nosuchdb://x"], "audit database"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (10, 10)).save(image)
    result = runner.invoke(app, ["anonymize", str(image), *args])
    assert result.exit_code == 2
    assert message in result.output + result.stderr


def test_missing_path_and_empty_folder_fail_with_audit_rows(tmp_path: Path, sqlite_url: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["anonymize", str(tmp_path / "missing.jpg"), str(empty), "--db", sqlite_url])
    assert result.exit_code == 1
    assert {row.error_class for row in _files(sqlite_url)} == {"InputNotFoundError"}


@pytest.mark.slow
def test_unreadable_file_is_reported_and_untouched(
    tmp_path: Path, astronaut: np.ndarray, unprivileged: Callable[[list[str]], list[str]]
) -> None:
    """A real permission denial: as root, the child runs without the capability to override file modes."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "ok.jpg")
    locked = folder / "locked.jpg"
    Image.fromarray(astronaut).save(locked)
    locked.chmod(0)
    before = locked.read_bytes() if os.geteuid() == 0 else None
    command = [sys.executable, "-m", "efface", "anonymize", str(folder), "--db", f"sqlite:///{tmp_path / 'a.db'}"]
    command = unprivileged(command)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    locked.chmod(0o644)
    assert proc.returncode == 1, proc.stderr
    assert "locked.jpg" in proc.stderr and "UnreadableFileError" in proc.stderr
    if before is not None:
        assert locked.read_bytes() == before
    rows = {Path(row.path).name: row for row in _files(f"sqlite:///{tmp_path / 'a.db'}")}
    assert rows["locked.jpg"].error_class == "UnreadableFileError"
    assert rows["ok.jpg"].outcome is Outcome.ANONYMIZED


@pytest.mark.slow
def test_a_folder_that_cannot_be_listed_fails_the_run_and_its_neighbours_still_run(
    tmp_path: Path, astronaut: np.ndarray, unprivileged: Callable[[list[str]], list[str]]
) -> None:
    """A real permission denial on a subfolder: its pictures would stay identifiable, so it is an error."""
    folder = tmp_path / "photos"
    (folder / "locked").mkdir(parents=True)
    Image.fromarray(astronaut).save(folder / "ok.jpg")
    Image.fromarray(astronaut).save(folder / "locked" / "inside.jpg")
    before = (folder / "locked" / "inside.jpg").read_bytes()
    (folder / "locked").chmod(0)
    command = [sys.executable, "-m", "efface", "anonymize", str(folder), "--db", f"sqlite:///{tmp_path / 'a.db'}"]
    command = unprivileged(command)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    finally:
        (folder / "locked").chmod(0o755)
    assert proc.returncode == 1, proc.stderr
    assert "cannot list folder: Permission denied" in proc.stderr
    assert (folder / "locked" / "inside.jpg").read_bytes() == before
    rows = {Path(row.path).name: row for row in _files(f"sqlite:///{tmp_path / 'a.db'}")}
    assert rows["locked"].error_class == "UnreadableFileError"
    assert rows["ok.jpg"].outcome is Outcome.ANONYMIZED


@pytest.mark.slow
@pytest.mark.postgres
def test_anonymize_audits_into_postgresql(tmp_path: Path, astronaut: np.ndarray, pg_url: str) -> None:
    Image.fromarray(astronaut).save(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"")
    result = runner.invoke(app, ["anonymize", str(tmp_path), "--db", pg_url])
    assert result.exit_code == 1
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT outcome, faces_detected FROM files ORDER BY path, id")).all()
            (status,) = connection.execute(sa.text("SELECT status FROM runs")).one()
    finally:
        engine.dispose()
    # a.jpg: the pending row written before its replace, then its own.
    assert [tuple(r) for r in rows] == [("pending", 1), ("anonymized", 1), ("error", 0)]
    assert status == "failed"
    result = runner.invoke(app, ["audit", "show", "latest", "--db", pg_url, "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["run"]["faces_detected"] == 1


def test_audit_list_and_show(tmp_path: Path, sqlite_url: str) -> None:
    Image.new("RGB", (40, 40), (10, 200, 10)).save(tmp_path / "plain.png")
    assert runner.invoke(app, ["anonymize", str(tmp_path / "plain.png"), "--db", sqlite_url]).exit_code == 0
    listing = runner.invoke(app, ["audit", "list", "--db", sqlite_url])
    assert listing.exit_code == 0 and "completed" in listing.stdout
    shown = runner.invoke(app, ["audit", "show", "latest", "--db", sqlite_url])
    assert shown.exit_code == 0 and "plain.png" in shown.stdout and "no_faces" in shown.stdout
    missing = runner.invoke(app, ["audit", "show", "ffffffff", "--db", sqlite_url])
    assert missing.exit_code == 2 and "no run" in missing.stderr


YUNET = Path(__file__).resolve().parents[2] / "shared" / "models" / "yunet_n_dynamic.onnx"


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["fast", "balanced", "thorough"])
def test_every_preset_anonymizes_the_face_and_is_audited(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str, preset: str
) -> None:
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    result = runner.invoke(
        app, ["anonymize", str(tmp_path / "a.png"), "--preset", preset, "--db", sqlite_url, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json_files(result.stdout)[0]["faces_anonymized"] == 1
    with AuditStore(sqlite_url) as store:
        (run,) = store.list_runs(limit=1)
    assert run.settings["preset"] == preset and run.settings["detection"]["scales"]


@pytest.mark.slow
def test_a_user_supplied_yunet_is_fused_in(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str) -> None:
    if not YUNET.is_file():
        pytest.skip(f"YuNet model not present: {YUNET}")
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    args = ["anonymize", str(tmp_path / "a.png"), "--detector", f"yunet:{YUNET}", "--db", sqlite_url, "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json_files(result.stdout)[0]["faces_anonymized"] == 1
    with AuditStore(sqlite_url) as store:
        (run,) = store.list_runs(limit=1)
    assert run.model_name == "centerface+yunet"


@pytest.mark.parametrize("spec", ["yunet:", "retinaface:/x.onnx", "yunet:/no/such/model.onnx"])
def test_bad_extra_detector_is_a_usage_error(tmp_path: Path, sqlite_url: str, spec: str) -> None:
    Image.new("RGB", (10, 10)).save(tmp_path / "a.png")
    result = runner.invoke(app, ["anonymize", str(tmp_path / "a.png"), "--detector", spec, "--db", sqlite_url])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_cuda_without_a_gpu_is_a_clear_usage_error(tmp_path: Path, sqlite_url: str) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    result = runner.invoke(app, ["anonymize", str(tmp_path), "--device", "cuda", "--db", sqlite_url])
    assert result.exit_code == 2
    assert "CUDAExecutionProvider" in result.stderr and "onnxruntime-gpu" in result.stderr


@pytest.mark.slow
# onnxruntime writes its telemetry store unless ORT_DISABLE_TELEMETRY is exactly "1" when it is imported; an
# inherited "0" or "false" must not let it write either.
@pytest.mark.parametrize("ort_disable_telemetry", [None, "0", "false"])
def test_anonymize_writes_nothing_but_the_output_the_audit_log_and_the_model_cache(
    tmp_path: Path, astronaut: np.ndarray, ort_disable_telemetry: str | None
) -> None:
    home, photos = tmp_path / "home", tmp_path / "photos"
    home.mkdir()
    photos.mkdir()
    Image.fromarray(astronaut).save(photos / "a.jpg")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EFFACE_", "ORT_", "XDG_"))}
    env["HOME"] = str(home)  # onnxruntime's telemetry would land in ~/.cache/Microsoft
    if ort_disable_telemetry is not None:
        env["ORT_DISABLE_TELEMETRY"] = ort_disable_telemetry
    db = tmp_path / "audit.sqlite3"
    subprocess.run(
        [sys.executable, "-m", "efface", "anonymize", str(photos), "--db", f"sqlite:///{db}"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    # Only efface's model cache: the published weights' graph with symbolic dims (its model, record and lock).
    written = sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())
    assert [Path(p).parent.as_posix() for p in written] == [".cache/efface/models"] * 3, written
    assert all(Path(p).name.startswith("centerface-fp32-") for p in written), written
    assert [p.name for p in photos.iterdir()] == ["a.jpg"]


def test_a_device_beside_configured_providers_is_a_usage_error(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EFFACE_PROVIDERS", '["CPUExecutionProvider"]')
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    result = runner.invoke(app, ["anonymize", str(tmp_path), "--device", "cuda", "--db", sqlite_url])
    assert result.exit_code == 2
    assert "device or providers, not both" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_anonymize_with_precision_int8_audits_the_int8_model(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str, int8_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from efface.detection.centerface import centerface_model_path
    from efface.detection.weights import cached_int8_path

    monkeypatch.setenv("EFFACE_CACHE_DIR", str(int8_cache))
    int8_sha256 = hashlib.sha256(cached_int8_path(centerface_model_path()).read_bytes()).hexdigest()
    Image.fromarray(astronaut).save(tmp_path / "a.jpg")
    result = runner.invoke(app, ["anonymize", str(tmp_path / "a.jpg"), "--precision", "int8", "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    with AuditStore(sqlite_url) as store:
        (run,) = store.list_runs(limit=1)
        (file,) = store.list_files(run.run_id)
    assert run.settings["precision"] == "int8"
    assert run.model_name == "centerface-int8" and run.model_sha256 == int8_sha256
    assert file.faces_anonymized == 1


@pytest.mark.slow
def test_a_default_fp32_run_caches_only_its_graph(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from efface.detection.centerface import centerface_model_path
    from efface.detection.weights import cached_fp32_path

    monkeypatch.setenv("EFFACE_CACHE_DIR", str(tmp_path / "cache"))
    Image.fromarray(astronaut).save(tmp_path / "a.jpg")
    result = runner.invoke(app, ["anonymize", str(tmp_path / "a.jpg"), "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    with AuditStore(sqlite_url) as store:
        (run,) = store.list_runs(limit=1)
    # The audit names the published weights; the cache holds the rewritten graph, its record and its lock only.
    assert run.settings["precision"] == "fp32" and run.model_name == "centerface"
    assert run.model_sha256 == hashlib.sha256(centerface_model_path().read_bytes()).hexdigest()
    graph = cached_fp32_path(centerface_model_path())
    expected = {graph.name, graph.with_suffix(".json").name, graph.with_suffix(".lock").name}
    assert {p.name for p in (tmp_path / "cache").iterdir()} == expected


@pytest.mark.slow
def test_models_prepare_precision_int8_prints_the_cached_model(
    int8_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from efface.detection.centerface import centerface_model_path
    from efface.detection.weights import cached_int8_path

    monkeypatch.setenv("EFFACE_CACHE_DIR", str(int8_cache))
    result = runner.invoke(app, ["models", "prepare", "--precision", "int8"])
    assert result.exit_code == 0, result.output
    assert str(cached_int8_path(centerface_model_path())) in result.stdout


def test_models_prepare_precision_fp32_caches_the_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from efface.detection.centerface import centerface_model_path
    from efface.detection.weights import cached_fp32_path

    monkeypatch.setenv("EFFACE_CACHE_DIR", str(tmp_path / "cache"))
    result = runner.invoke(app, ["models", "prepare", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert str(cached_fp32_path(centerface_model_path())) in result.stdout
    assert cached_fp32_path(centerface_model_path()).is_file()


def test_models_prepare_precision_int8_fails_when_the_cache_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from efface.detection import weights

    monkeypatch.setattr(weights, "quantize_centerface", lambda fp32_path: b"model")  # the cache is what is tested
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("EFFACE_CACHE_DIR", str(tmp_path / "a-file" / "models"))
    result = runner.invoke(app, ["models", "prepare"])
    assert result.exit_code == 1
    assert "cannot be written" in result.stderr


# anonymize's options and the settings whose defaults their help shows.
_DEFAULT_OF = {
    "--method": "method",
    "--preset": "preset",
    "--mask": "mask_shape",
    "--box-scale": "box_scale",
    "--blur-kernel": "blur_kernel_fraction",
    "--pixelate-blocks": "pixelate_blocks",
    "--jpeg-quality": "jpeg_quality",
    "--video-crf": "video_crf",
    "--detect-every": "detect_every",
    "--light-passes": "light_passes",
    "--device": "device",
    "--precision": "precision",
}


def _help_rows(*command: str) -> dict[str, str]:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return {m[1]: line for line in result.stdout.splitlines() if (m := re.match(r"│[ *]+(--[a-z-]+)", line))}


def test_anonymize_help_shows_every_default_as_settings_declares_it() -> None:
    rows = _help_rows("anonymize")
    for option, name in _DEFAULT_OF.items():
        default = Settings.model_fields[name].default
        assert f"[default: {getattr(default, 'value', default)}]" in rows[option], rows[option]
    for preset in Preset:
        assert f"{preset.value} {preset_spec(preset).score_threshold:g}" in rows["--threshold"], rows["--threshold"]
    # Defaults the help words rather than prints: the settings hold no value for them.
    assert "[default: cores]" in rows["--jobs"] and Settings.model_fields["jobs"].default_factory is not None
    assert "[default: H.264 where it fits]" in rows["--video-codec"]
    assert Settings.model_fields["video_codec"].default is None
    assert "[env: EFFACE_DB_URL] [default: sqlite:///" in rows["--db"]


@pytest.mark.parametrize(
    ("command", "option", "shown"),
    [
        (("serve",), "--workers", "cores"),
        (("serve",), "--max-pixels", "50 million"),
        (("serve",), "--device", "cpu"),
        (("verify", "coverage"), "--format", "from the file"),
        (("verify", "coverage"), "--box-scale", "1.6"),
        (("verify", "strength"), "--recognizer", "dlib, facenet"),
        (("audit", "export"), "--out", "standard output"),
        (("keys", "create"), "--rate-limit", "the server's --rate-limit"),
    ],
)
def test_every_command_shows_the_defaults_its_help_words(command: tuple[str, ...], option: str, shown: str) -> None:
    """Rich renders the help as markup: an unescaped ``[default: x]`` would vanish from it."""
    assert f"[default: {shown}]" in _help_rows(*command)[option]


def test_paths_and_messages_with_brackets_are_printed_as_they_are(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rich would read ``[red]x[blink]`` in a file name as markup and print a bare ``x``."""
    monkeypatch.setattr(_render.stdout, "width", 400)  # room for the whole path in its table cell
    (tmp_path / "[red]x[blink].jpg").write_text("not a JPEG\n")
    result = runner.invoke(app, ["anonymize", str(tmp_path), "--db", sqlite_url], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert f"error: {tmp_path}/[red]x[blink].jpg: " in result.stderr and "(CorruptImageError)" in result.stderr
    shown = runner.invoke(app, ["audit", "show", "latest", "--db", sqlite_url])
    assert "[red]x[blink].jpg" in shown.stdout

    config = tmp_path / "[bold]efface[/bold].toml"  # a path that holds a closing tag: no such file
    result = runner.invoke(app, ["anonymize", str(tmp_path), "--config", str(config), "--db", sqlite_url])
    assert result.exit_code == 2
    assert f"config file not found: {config}" in result.stderr


@pytest.mark.slow
def test_face_less_files_that_carry_more_than_their_image_are_rewritten_without_it(
    tmp_path: Path, carriers: Carriers, sqlite_url: str
) -> None:
    # An ICC profile holding the original picture, a second JPEG after EOI, a private PNG chunk, a CMYK
    # profile on what comes out RGB, an EXIF thumbnail, XMP: none may survive "no faces, left as it was".
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, content in carriers.files.items():
        (folder / name).write_bytes(content)

    copied = tmp_path / "out"
    result = runner.invoke(app, ["anonymize", str(folder), "--output", str(copied), "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    for name, content in carriers.files.items():  # an output folder gets no byte-for-byte copy either
        assert carriers.secrets[name] not in (copied / "photos" / name).read_bytes(), name
        assert (folder / name).read_bytes() == content

    result = runner.invoke(app, ["anonymize", str(folder), "--db", sqlite_url])

    assert result.exit_code == 0, result.output
    rows = {Path(row.path).name: row for row in _files(sqlite_url)}
    for name, content in carriers.files.items():
        written = (folder / name).read_bytes()
        assert written != content, f"{name} was left as it was"
        assert carriers.secrets[name] not in written, name
        assert rows[name].outcome is Outcome.NO_FACES and rows[name].details["rewritten"] is True
        with Image.open(folder / name) as image:
            image.load()
            assert image.mode == "RGB" and image.size == (96, 64)
            assert {"exif", "xmp"}.isdisjoint(image.info), name
    with Image.open(folder / "cmyk-with-profile.jpg") as image:
        assert "icc_profile" not in image.info  # RGB pixels, converted with it: the CMYK profile is gone
    assert "CMYK" in rows["cmyk-with-profile.jpg"].details["icc_profile"]
    assert "'prVt'" in rows["icc-holds-original.jpg"].details["icc_profile"]
    assert "after" in rows["appended-after-eoi.jpg"].details["extra_content"]
    assert "prVt" in rows["private-chunk.png"].details["extra_content"]


@pytest.mark.slow
def test_a_hard_linked_photo_is_refused_unless_every_name_is_given(
    tmp_path: Path, astronaut: np.ndarray, sqlite_url: str
) -> None:
    first, second = tmp_path / "h" / "p" / "f.jpg", tmp_path / "h" / "b" / "f.jpg"
    first.parent.mkdir(parents=True)
    second.parent.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x013B] = "Jane Doe"
    Image.fromarray(astronaut).save(first, quality=90, exif=exif.tobytes())
    os.link(first, second)
    original = first.read_bytes()

    refused = runner.invoke(app, ["anonymize", str(tmp_path / "h" / "p"), "--db", sqlite_url])

    assert refused.exit_code == 1, refused.output
    lines = [line for line in refused.stderr.splitlines() if "HardLinkError" in line]
    assert len(lines) == 1 and "f.jpg" in lines[0], refused.stderr
    assert "Traceback" not in refused.output
    assert first.read_bytes() == original and second.read_bytes() == original

    done = runner.invoke(app, ["anonymize", str(tmp_path / "h"), "--db", sqlite_url, "--json"])

    assert done.exit_code == 0, done.output
    (summary,) = json_files(done.stdout)
    assert summary["faces_anonymized"] == 1
    assert first.read_bytes() == second.read_bytes() != original
    assert b"Jane Doe" not in first.read_bytes()


@pytest.mark.slow
def test_anonymize_a_folder_of_shards(tmp_path: Path, astronaut: np.ndarray, sqlite_url: str) -> None:
    """Shards met in a walk, two processes, the real model: the good shard anonymized and readable by webdataset,
    the one with a corrupt member refused aloud (its own line, an error row, exit 1) and left byte for byte."""
    from .pipeline.test_shards import write_shard

    folder = tmp_path / "shards"
    folder.mkdir()
    good, bad = folder / "shard-000000.tar", folder / "shard-000001.tar"
    write_shard(good, astronaut)
    write_shard(bad, astronaut, jpg=b"\xff\xd8\xff\xe0 this JPEG stops here")
    original = bad.read_bytes()
    result = runner.invoke(app, ["anonymize", str(folder), "--jobs", "2", "--db", sqlite_url], env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "shard-000001.tar: member sample0000.jpg:" in result.output
    assert bad.read_bytes() == original
    rows = _files(sqlite_url)
    by_path = {row.path: row for row in rows}
    assert (by_path[bad].outcome, by_path[bad].error_class) == (Outcome.ERROR, "CorruptImageError")
    assert not [row for row in rows if str(row.path).startswith(f"{bad}#")]
    members = [row for row in rows if str(row.path).startswith(f"{good}#")]
    assert [row.path.name.split("#")[1] for row in members] == [
        "sample0000.cls", "sample0000.jpg", "sample0000.json", "sample0000.txt", "sample0001.npy", "sample0001.png"
    ]  # fmt: skip
    pictures = [row for row in members if row.image_format is not None]
    assert [row.faces_anonymized >= 1 for row in pictures] == [True, True]
    assert by_path[good].output_sha256 == hashlib.sha256(good.read_bytes()).hexdigest()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
