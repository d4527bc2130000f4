"""Shared fixtures: a real face picture, audit stores, paths to ../shared data."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image, ImageCms
from skimage import data

SHARED = Path(__file__).resolve().parents[2] / "shared"
PG_BASE_URL = os.environ.get("EFFACE_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Street:
    """A picture for the review pages: the astronaut (a face the detector is sure of), a 20 px face it finds at about
    0.7 (a faint candidate under --threshold 0.9) and a 12 px face it does not report at all.

    Attributes:
        pixels: RGB uint8, ``size_wh``.
        faint_at / missed_at: x, y and side of the small faces.
    """

    pixels: np.ndarray
    size_wh: tuple[int, int] = (900, 600)
    faint_at: tuple[int, int, int] = (650, 250, 20)
    missed_at: tuple[int, int, int] = (800, 250, 12)


def turn_on_and_draw(page: Any, street: Street) -> None:
    """On a page with the box editor (``#boxes`` over ``street``): turns the faint candidate on from the keyboard
    (focus, Space) and drags a box with the mouse over the face the detector missed, in the picture's pixels."""
    faint = page.locator('rect[data-origin="faint"]')
    faint.focus()
    page.keyboard.press("Space")
    page.wait_for_selector('rect[data-origin="faint"][data-applied="true"]')
    frame = page.locator("#boxes").bounding_box()
    assert frame is not None
    scale = frame["width"] / street.size_wh[0]
    x, y, side = street.missed_at
    page.mouse.move(frame["x"] + (x - 4) * scale, frame["y"] + (y - 4) * scale)
    page.mouse.down()
    page.mouse.move(frame["x"] + (x + side + 4) * scale, frame["y"] + (y + side + 4) * scale, steps=8)
    page.mouse.up()
    page.wait_for_selector('rect[data-origin="manual"][data-applied="true"]')


@pytest.fixture(scope="session")
def street(astronaut: np.ndarray) -> Street:
    import cv2

    canvas = np.full((600, 900, 3), 180, np.uint8)
    canvas[40:552, 20:532] = astronaut
    face = astronaut[40:240, 130:330]
    for x, y, side in (Street.faint_at, Street.missed_at):
        canvas[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    return Street(canvas)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """Debian's Chromium (never a downloaded browser); under CI a missing one fails the test rather than skip it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "Chromium is not installed (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """A folder for what a test keeps for people to look at (screenshots): ``test-artifacts/<its test folder>`` in
    the repository, or under ``$EFFACE_TEST_ARTIFACTS``."""
    root = Path(os.environ.get("EFFACE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
    folder = root / request.node.path.parent.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real face: scikit-image's public-domain portrait of Eileen Collins, RGB uint8 512x512."""
    return data.astronaut()


@pytest.fixture
def unprivileged() -> Callable[[list[str]], list[str]]:
    """Wraps a command so that file permissions bind it even when the tests run as root (CI does): setpriv
    drops the capabilities that let root read and list anything, for a real permission denial."""

    def wrap(command: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return command
        if shutil.which("setpriv") is None:
            pytest.fail("running as root needs util-linux setpriv to drop CAP_DAC_OVERRIDE for this test")
        return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]

    return wrap


@pytest.fixture
def count_av_opens(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[tuple[str, str]]]:
    """Call to record, from then on, each ``av.open`` as (file name, mode): how often a video is opened."""

    def start() -> list[tuple[str, str]]:
        import av

        opened: list[tuple[str, str]] = []
        real_open = av.open

        def counting_open(file: object, mode: str | None = None, *args: object, **kwargs: object) -> object:
            opened.append((Path(str(file)).name, mode or "r"))
            return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(av, "open", counting_open)
        return opened

    return start


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit' / 'audit.sqlite3'}"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    """An engine on the real PostgreSQL server; unreachable fails under CI and skips elsewhere."""
    engine = sa.create_engine(PG_BASE_URL)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = f"PostgreSQL at {PG_BASE_URL} is not reachable: {exc.orig}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: sa.Engine) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL schema, dropped afterwards."""
    schema = f"efface_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_BASE_URL}?options=-csearch_path%3D{schema}"
    finally:
        with pg_admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's own config file and EFFACE_* variables out of the tests."""
    for name in list(os.environ):
        if name.startswith("EFFACE_") and name != "EFFACE_TEST_PG_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("EFFACE_CONFIG", str(tmp_path_factory.getbasetemp() / "no-such-config.toml"))
    # An int8 model built by a test lands here, never in the developer's own cache (``int8_cache`` has one built).
    monkeypatch.setenv("EFFACE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "model-cache"))


@pytest.fixture(scope="session")
def int8_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache holding the int8 CenterFace model, built once for the session (tens of seconds): point
    ``EFFACE_CACHE_DIR`` at it. Tests must not alter it."""
    from efface.detection.centerface import centerface_model_path
    from efface.detection.weights import int8_weights

    folder = tmp_path_factory.mktemp("int8-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EFFACE_CACHE_DIR", str(folder))
        assert int8_weights(centerface_model_path()).path is not None
    return folder


# --- image files that carry more than their image ---------------------------------------------------------------


def _jpeg_bytes(pixels: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", **{"quality": 90, **options})
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def icc_with_private_tag(payload: bytes) -> bytes:
    """LittleCMS's sRGB profile with one more tag, ``prVt``, holding ``payload``: a valid profile LittleCMS reads."""
    base = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    (count,) = struct.unpack_from(">I", base, 128)
    entries = [struct.unpack_from(">4sII", base, 132 + 12 * index) for index in range(count)]
    data = base[132 + 12 * count :]
    private = b"prVt\x00\x00\x00\x00" + payload
    table = [(sig, offset + 12, size) for sig, offset, size in entries]
    table.append((b"prVt", 132 + 12 * (count + 1) + len(data), len(private)))
    body = struct.pack(">I", count + 1) + b"".join(struct.pack(">4sII", *entry) for entry in table) + data + private
    return struct.pack(">I", 128 + len(body)) + base[4:128] + body


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def cmyk_profile() -> bytes:
    """A minimal ICC v2 output profile for CMYK: one lut8 ``A2B0`` (CMYK -> Lab on a 2-point grid), a white
    point and a description, which LittleCMS reads and converts with (it cannot create a CMYK profile itself)."""
    ramps = bytes(range(256))
    grid = bytearray()
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    lightness = 255 * (1 - k) * (1 - 0.25 * (c + m + y))
                    grid += bytes([round(lightness), 128 + 40 * m - 20 * c, 128 + 60 * y - 30 * c])
    lut = (
        b"mft1\x00\x00\x00\x00"
        + bytes([4, 3, 2, 0])
        + b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
        + ramps * 4
        + bytes(grid)
        + ramps * 3
    )
    white = b"XYZ \x00\x00\x00\x00" + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    text = b"Test CMYK\x00"
    desc = b"desc\x00\x00\x00\x00" + struct.pack(">I", len(text)) + text + b"\x00" * 8 + b"\x00\x00\x00" + b"\x00" * 67
    tags = [(b"desc", desc), (b"wtpt", white), (b"A2B0", lut)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, content in tags:
        table += struct.pack(">4sII", signature, offset + len(body), len(content))
        body += content + b"\x00" * (-len(content) % 4)
    header = (
        b"\x00\x00\x00\x00" * 2  # size (set below), preferred CMM
        + bytes([2, 0x10, 0, 0])
        + b"prtrCMYKLab "
        + b"\x00" * 12  # date
        + b"acsp"
        + b"\x00" * 24  # platform, flags, manufacturer, model, attributes
        + b"\x00\x00\x00\x00"  # rendering intent
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + b"\x00" * 48
    )
    profile = header + struct.pack(">I", len(tags)) + table + body
    return struct.pack(">I", len(profile)) + profile[4:]


def _exif_thumbnail_segment(thumbnail: bytes) -> bytes:
    """An EXIF payload with an empty IFD0 and an IFD1 that holds ``thumbnail`` (a JPEG)."""
    ifd1_at = 8 + 2 + 4
    ifd1 = struct.pack("<H", 2)
    data_at = ifd1_at + 2 + 2 * 12 + 4
    ifd1 += struct.pack("<HHII", 0x0201, 4, 1, data_at) + struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail))
    ifd1 += struct.pack("<I", 0)
    return b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + struct.pack("<HI", 0, ifd1_at) + ifd1 + thumbnail


@dataclass(frozen=True)
class Carriers:
    """Face-less image files that carry more than their image, each with the bytes it must not hand on.

    Attributes:
        files: file name -> content.
        secrets: file name -> bytes that no output may contain (the original picture, a private chunk).
        original: the face picture hidden in them (a JPEG of scikit-image's astronaut).
    """

    files: dict[str, bytes]
    secrets: dict[str, bytes]
    original: bytes


@pytest.fixture(scope="session")
def carriers(astronaut: np.ndarray) -> Carriers:
    original = _jpeg_bytes(astronaut[::4, ::4])
    blank = np.full((64, 96, 3), 128, np.uint8)
    blank[16:48, 24:72] = (40, 160, 90)  # a face-less picture, not one flat colour
    icc_carrier = _jpeg_bytes(blank, icc_profile=icc_with_private_tag(original))
    appended = _jpeg_bytes(blank) + original
    png = io.BytesIO()
    Image.fromarray(blank).save(png, "PNG")
    iend = png.getvalue().rindex(b"IEND") - 4
    private = b"prVt-payload:" + original
    private_chunk = png.getvalue()[:iend] + _png_chunk(b"prVt", private) + png.getvalue()[iend:]
    cmyk = io.BytesIO()
    Image.fromarray(blank).convert("CMYK").save(cmyk, "JPEG", quality=90, icc_profile=cmyk_profile())
    thumbnail = _jpeg_bytes(blank, exif=_exif_thumbnail_segment(original))
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">Jane Quincy Example</x:xmpmeta>'
    files = {
        "icc-holds-original.jpg": icc_carrier,
        "appended-after-eoi.jpg": appended,
        "private-chunk.png": private_chunk,
        "cmyk-with-profile.jpg": cmyk.getvalue(),
        "exif-thumbnail.jpg": thumbnail,
        "xmp.jpg": _jpeg_bytes(blank, xmp=xmp),
    }
    secrets = {name: original for name in files} | {"cmyk-with-profile.jpg": b"CMYK", "xmp.jpg": xmp}
    for name, content in files.items():
        assert secrets[name] in content, f"test setup: {name} does not hold its secret"
    return Carriers(files=files, secrets=secrets, original=original)


# --- a real S3 API server on loopback -----------------------------------------------------------------------
# moto's standalone server (``moto[server]``), started in its own process on a free port, with IAM authentication
# on, so that wrong credentials and missing permissions are refused as AWS refuses them. efface talks to it only
# over HTTP, through s3fs, exactly as to AWS. Two users are made before authentication starts: ``admin`` (every
# action) and ``no_version_delete`` (every action but ``s3:DeleteObjectVersion``).

# The requests that create the users below, made before moto starts to check credentials.
_SETUP_REQUESTS = 6
_ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
_NO_VERSION_DELETE = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": ["s3:DeleteObjectVersion"], "Resource": "*"},
    ],
}


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str


@dataclass
class S3Server:
    """The running server: its endpoint and the two users' keys."""

    endpoint_url: str
    admin: Keys
    no_version_delete: Keys
    process: subprocess.Popen[bytes]

    def client(self, keys: Keys | None = None) -> Any:
        keys = keys or self.admin
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            region_name="us-east-1",
        )

    def env(self, keys: Keys | None = None) -> dict[str, str]:
        """The AWS environment a user of efface would set for this server."""
        keys = keys or self.admin
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": keys.access_key_id,
            "AWS_SECRET_ACCESS_KEY": keys.secret_access_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def bucket(self, *, versioned: bool) -> str:
        """A new bucket (names unique per test)."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        client = self.client()
        client.create_bucket(Bucket=name)
        if versioned:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server() -> Iterator[S3Server]:
    """Starts the server, makes the users, yields it; stops it afterwards."""
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_REQUESTS)}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # A bare connection: an HTTP request would count against the unauthenticated ones.
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.1)
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
            region_name="us-east-1",
        )
        users = {}
        for name, policy in (("admin", _ALLOW_ALL), ("no_version_delete", _NO_VERSION_DELETE)):
            iam.create_user(UserName=name)
            iam.put_user_policy(UserName=name, PolicyName="policy", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=name)["AccessKey"]
            users[name] = Keys(key["AccessKeyId"], key["SecretAccessKey"])
        yield S3Server(endpoint, users["admin"], users["no_version_delete"], process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 API server on loopback (moto's, IAM authentication on), for the session."""
    yield from start_server()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The AWS environment set for the admin user of ``s3_server`` (as a user of efface would set it)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


def json_files(output: str) -> list[dict[str, Any]]:
    """The file lines of ``anonymize --json`` (the last line is the run's summary)."""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("type") == "file"]
