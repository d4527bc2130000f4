"""What each command loads: a user who runs ``efface`` on one photo pays the import of everything the command
line pulls in, every time. So ``import efface.cli`` (what ``--help`` and every command pay) loads no pipeline,
no model runtime and no server; ``efface anonymize`` on a photo loads no video, server, cluster, export, report
or migration code, with a new audit database and with an existing one. Each runs in a fresh interpreter; what is
checked is which modules are loaded, not how long it takes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Runs the command line as the console script does and writes which modules were loaded, after the import of
# efface.cli and after the command.
PROBE = """
import json, sys
out, args = sys.argv[1], sys.argv[2:]
import efface.cli
after_import = sorted(sys.modules)
code = None
if args:
    sys.argv = ["efface", *args]
    try:
        efface.cli.main()
    except SystemExit as exc:
        code = exc.code
with open(out, "w") as file:
    json.dump({"import": after_import, "run": sorted(sys.modules), "code": code}, file)
"""

# Never loaded by anonymizing a photo: the HTTP service, Ray, PyAV, the Parquet export, the report's plots, Alembic.
NOT_FOR_PHOTOS = {"fastapi", "starlette", "uvicorn", "ray", "av", "pyarrow", "matplotlib", "alembic", "mako"}
EFFACE_NOT_FOR_PHOTOS = {
    "efface.service",
    "efface.pipeline.video",
    "efface.media.video._decode",
    "efface.media.video._source",
    "efface.audit.report",
    "efface.verify.coverage",
    "efface.verify.metrics",
    "efface.verify.strength",
    "efface.verify.validation",
}
# Loaded only when the int8 model is asked for: the quantization tooling and its calibration pictures.
INT8_ONLY = {"efface.detection.quantize", "onnxruntime.quantization", "skimage"}
# Not loaded by building the command line: the model runtimes, the image codecs, the pipeline.
NOT_FOR_IMPORT = NOT_FOR_PHOTOS | {"onnxruntime", "onnx", "PIL"}
EFFACE_NOT_FOR_IMPORT = EFFACE_NOT_FOR_PHOTOS | {"efface.pipeline", "efface.detection.centerface", "efface.media"}


def loaded(tmp_path: Path, *args: str) -> dict[str, object]:
    out = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.json"
    subprocess.run([sys.executable, "-c", PROBE, str(out), *args], check=True, capture_output=True, timeout=300)
    found: dict[str, object] = json.loads(out.read_text())
    return found


def offending(modules: object, packages: set[str], efface_modules: set[str]) -> list[str]:
    """The loaded modules that are, or lie inside, one of ``packages`` or ``efface_modules``."""
    assert isinstance(modules, list)
    return sorted(
        name
        for name in modules
        if name.split(".")[0] in packages or any(name == m or name.startswith(f"{m}.") for m in efface_modules)
    )


def test_the_probe_sees_what_a_command_loads(tmp_path: Path) -> None:
    # The command that needs the report's code loads it, and the check names it: the checks below can fail.
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    modules = loaded(tmp_path, "audit", "report", "--out", str(tmp_path / "report.html"), "--db", db)
    assert modules["code"] in (0, None)
    assert (tmp_path / "report.html").exists()
    assert "efface.audit.report" in offending(modules["run"], NOT_FOR_IMPORT, EFFACE_NOT_FOR_IMPORT)
    assert offending(modules["import"], NOT_FOR_IMPORT, EFFACE_NOT_FOR_IMPORT) == []


def test_building_the_command_line_loads_no_pipeline(tmp_path: Path) -> None:
    modules = loaded(tmp_path, "--help")
    assert modules["code"] == 0
    assert offending(modules["import"], NOT_FOR_IMPORT, EFFACE_NOT_FOR_IMPORT) == []
    assert offending(modules["run"], NOT_FOR_IMPORT, EFFACE_NOT_FOR_IMPORT) == []


def test_the_audit_commands_load_no_model_and_no_migrations(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    for args in (["audit", "list", "--db", db], ["audit", "verify", "--db", db]):
        modules = loaded(tmp_path, *args)  # the first creates the database, the second opens it
        assert modules["code"] in (0, None), args
        assert offending(modules["run"], NOT_FOR_IMPORT, EFFACE_NOT_FOR_IMPORT) == [], args


@pytest.mark.slow
def test_anonymizing_a_photo_loads_no_video_server_or_migration_code(tmp_path: Path, astronaut: np.ndarray) -> None:
    photo = tmp_path / "photo.jpg"
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    for attempt in ("new database", "existing database"):
        Image.fromarray(astronaut).save(photo, quality=90)
        modules = loaded(tmp_path, "anonymize", str(photo), "--db", db, "--force")
        assert modules["code"] == 0, attempt
        assert "onnxruntime" in modules["run"], attempt  # the photo was anonymized here, by the real model
        assert offending(modules["import"], NOT_FOR_IMPORT, EFFACE_NOT_FOR_IMPORT) == [], attempt
        assert offending(modules["run"], NOT_FOR_PHOTOS, EFFACE_NOT_FOR_PHOTOS) == [], attempt
        assert offending(modules["run"], set(), INT8_ONLY) == [], attempt  # fp32, the default
        if attempt == "existing database":  # the first run cached the rewritten graph: this one reads it
            assert offending(modules["run"], {"onnx"}, set()) == [], attempt
    assert Path(db.removeprefix("sqlite:///")).exists()
