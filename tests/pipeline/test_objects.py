"""Objects in an S3 bucket, anonymized in place through the one orchestration path, against a real S3 API server
on loopback (moto's, IAM authentication on; ``s3_server`` in conftest): versioned and unversioned buckets, an
object changed between read and write, keys with spaces and unicode, empty and non-image objects, refused
credentials and a user who may not delete versions, uploads in parts, mirrored outputs, shards and resume."""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from efface.audit import AuditStore, StoredFile
from efface.detection import StaticModels
from efface.errors import SourceChangedError
from efface.pipeline import Policy
from efface.pipeline.objects import WorkFolder, plan_objects
from efface.pipeline.pool import InProcess, ProcessPool
from efface.pipeline.run import AuditedRun, run_plan
from efface.records import BBox, Face, Location, ObjectURL, Outcome, RunStatus
from efface.storage import S3Store

FACE_BOX = BBox(170, 40, 250, 130)
FACE = Face(FACE_BOX, 0.9)
# moto's S3 stores objects in memory: the tests keep them small.
KEY = "photos/a portrait é 😀.jpg"


def _static_models() -> StaticModels:
    return StaticModels(faces=(FACE,))


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _face_changed(before: bytes, after: bytes) -> float:
    """Mean absolute change inside the face box."""
    x1, y1, x2, y2 = (int(v) for v in (FACE_BOX.x1, FACE_BOX.y1, FACE_BOX.x2, FACE_BOX.y2))
    old = np.asarray(Image.open(io.BytesIO(before)).convert("RGB"), dtype=np.int16)[y1:y2, x1:x2]
    new = np.asarray(Image.open(io.BytesIO(after)).convert("RGB"), dtype=np.int16)[y1:y2, x1:x2]
    return float(np.abs(old - new).mean())


def _versions(client: Any, bucket: str, key: str) -> list[str]:
    listing = client.list_object_versions(Bucket=bucket, Prefix=key)
    return [v["VersionId"] for v in listing.get("Versions", []) if v["Key"] == key]


def _body(client: Any, bucket: str, key: str, version: str | None = None) -> bytes:
    extra = {"VersionId": version} if version else {}
    return bytes(client.get_object(Bucket=bucket, Key=key, **extra)["Body"].read())


def _run(
    urls: list[str],
    sqlite_url: str,
    *,
    store: S3Store | None = None,
    processes: int = 1,
    output: Location | None = None,
    dry_run: bool = False,
    models: StaticModels | None = None,
) -> tuple[list[StoredFile], AuditedRun]:
    policy = Policy()
    models = models or _static_models()
    with WorkFolder() as work, AuditStore(sqlite_url) as audit:
        plan = plan_objects(
            [ObjectURL.parse(url) for url in urls],
            store=store or S3Store(),
            work_folder=work.path,
            output=output,
            dry_run=dry_run,
        )
        if processes == 1:
            executor: InProcess | ProcessPool = InProcess(models, policy)
        else:
            executor = ProcessPool(_static_models, policy, processes=processes)
        with (
            contextlib.closing(executor),
            AuditedRun.begin(audit, command="anonymize", mode=plan.mode, models=models, settings={}) as run,
        ):
            run_plan(plan.items(), executor=executor, run=run)
        leftovers = [path for path in work.path.iterdir() if path.name != ".lock"]
        assert leftovers == []  # no local copy of any original outlives its object
        return audit.list_files(run.run_id), run


@pytest.mark.parametrize("processes", [1, 2])
def test_an_object_in_a_versioned_bucket_keeps_no_version_with_the_original(
    s3_env: Any, astronaut: np.ndarray, sqlite_url: str, processes: int
) -> None:
    client = s3_env.client()
    bucket = s3_env.bucket(versioned=True)
    original = _jpeg(astronaut)
    older_version = client.put_object(Bucket=bucket, Key=KEY, Body=b"an earlier upload of the same key")["VersionId"]
    read_version = client.put_object(Bucket=bucket, Key=KEY, Body=original)["VersionId"]
    assert len(_versions(client, bucket, KEY)) == 2

    rows, run = _run([f"s3://{bucket}/photos/"], sqlite_url, processes=processes)

    versions = _versions(client, bucket, KEY)
    assert len(versions) == 1 and read_version not in versions  # the read one and the older one: both gone
    anonymized = _body(client, bucket, KEY)
    assert _face_changed(original, anonymized) > 20
    (row,) = rows
    assert str(row.path) == f"s3://{bucket}/{KEY}" and row.path == ObjectURL(bucket=bucket, scheme="s3", key=KEY)
    assert row.outcome is Outcome.ANONYMIZED and row.faces_anonymized == 1
    assert row.output_sha256 == hashlib.sha256(anonymized).hexdigest()
    assert row.details["version_read"] == read_version
    assert row.details["deleted_versions"] == [read_version, older_version]  # newest first
    assert row.details["version_written"] == versions[0]
    assert run.summary is not None and run.summary.status is RunStatus.COMPLETED


def test_an_object_in_an_unversioned_bucket_is_replaced(s3_env: Any, astronaut: np.ndarray, sqlite_url: str) -> None:
    client = s3_env.client()
    bucket = s3_env.bucket(versioned=False)
    original = _jpeg(astronaut)
    client.put_object(Bucket=bucket, Key="face.jpg", Body=original)

    (row,), _ = _run([f"s3://{bucket}/face.jpg"], sqlite_url)

    assert row.outcome is Outcome.ANONYMIZED and row.details["deleted_versions"] == []
    assert _versions(client, bucket, "face.jpg") == ["null"]
    assert _face_changed(original, _body(client, bucket, "face.jpg")) > 20


def test_an_object_changed_between_read_and_write_is_not_overwritten(
    s3_env: Any, astronaut: np.ndarray, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_env.client()
    bucket = s3_env.bucket(versioned=True)
    client.put_object(Bucket=bucket, Key="face.jpg", Body=_jpeg(astronaut))
    newer = _jpeg(astronaut[::-1].copy())
    download = S3Store.download

    def read_then_someone_writes(self: S3Store, url: ObjectURL, destination: Path) -> Any:
        read = download(self, url, destination)
        client.put_object(Bucket=bucket, Key="face.jpg", Body=newer)  # another writer, after efface's read
        return read

    monkeypatch.setattr(S3Store, "download", read_then_someone_writes)
    (row,), run = _run([f"s3://{bucket}/face.jpg"], sqlite_url)

    assert row.outcome is Outcome.ERROR and row.error_class == SourceChangedError.__name__
    assert "changed since it was read" in (row.error_message or "")
    assert _body(client, bucket, "face.jpg") == newer  # the other writer's object, as it wrote it
    assert len(_versions(client, bucket, "face.jpg")) == 2  # nothing written, nothing deleted
    assert run.summary is not None and run.summary.status is RunStatus.FAILED


def test_empty_and_non_image_objects_are_audited_and_left_as_they_are(s3_env: Any, sqlite_url: str) -> None:
    client = s3_env.client()
    bucket = s3_env.bucket(versioned=True)
    client.put_object(Bucket=bucket, Key="data/empty", Body=b"")
    client.put_object(Bucket=bucket, Key="data/notes.txt", Body=b"not a picture\n")
    client.put_object(Bucket=bucket, Key="data/fake.jpg", Body=b"text named as a picture")
    before = {key: _versions(client, bucket, key) for key in ("data/empty", "data/notes.txt", "data/fake.jpg")}

    rows, _ = _run([f"s3://{bucket}/data"], sqlite_url)

    by_key = {row.path.key: row for row in rows if isinstance(row.path, ObjectURL)}
    assert by_key["data/empty"].outcome is Outcome.NOT_MEDIA
    assert by_key["data/notes.txt"].outcome is Outcome.NOT_MEDIA
    assert by_key["data/fake.jpg"].outcome is Outcome.ERROR  # named as a picture: refused aloud, not passed over
    assert {key: _versions(client, bucket, key) for key in before} == before
    assert _body(client, bucket, "data/notes.txt") == b"not a picture\n"


def test_refused_credentials_fail_the_url_aloud(s3_server: Any, sqlite_url: str, astronaut: np.ndarray) -> None:
    bucket = s3_server.bucket(versioned=False)
    s3_server.client().put_object(Bucket=bucket, Key="face.jpg", Body=_jpeg(astronaut))
    store = S3Store({"endpoint_url": s3_server.endpoint_url, "key": "AKIAWRONG", "secret": "wrong"})

    (row,), run = _run([f"s3://{bucket}/"], sqlite_url, store=store)

    assert row.outcome is Outcome.ERROR and "refused" in (row.error_message or "")
    assert "InvalidAccessKeyId" in (row.error_message or "")
    assert run.summary is not None and run.summary.status is RunStatus.FAILED


def test_without_permission_to_delete_versions_the_object_fails_naming_them(
    s3_server: Any, sqlite_url: str, astronaut: np.ndarray
) -> None:
    admin = s3_server.client()
    bucket = s3_server.bucket(versioned=True)
    original = _jpeg(astronaut)
    read_version = admin.put_object(Bucket=bucket, Key="face.jpg", Body=original)["VersionId"]
    keys = s3_server.no_version_delete
    store = S3Store(
        {"endpoint_url": s3_server.endpoint_url, "key": keys.access_key_id, "secret": keys.secret_access_key}
    )

    (row,), run = _run([f"s3://{bucket}/face.jpg"], sqlite_url, store=store)

    assert row.outcome is Outcome.ERROR and row.error_class == "VersionsLeftError"
    assert read_version in (row.error_message or "") and "still hold the original" in (row.error_message or "")
    assert _face_changed(original, _body(admin, bucket, "face.jpg")) > 20  # the current object is anonymized
    assert _body(admin, bucket, "face.jpg", read_version) == original  # and the run says this one is left
    assert run.summary is not None and run.summary.status is RunStatus.FAILED


def test_an_upload_in_parts_completes_only_if_the_object_is_unchanged_and_is_aborted_otherwise(
    s3_env: Any, tmp_path: Path
) -> None:
    client = s3_env.client()
    bucket = s3_env.bucket(versioned=False)
    etag = client.put_object(Bucket=bucket, Key="big.bin", Body=b"old")["ETag"]
    content = np.random.default_rng(0).bytes(11 << 20)
    local = tmp_path / "big.bin"
    local.write_bytes(content)
    store = S3Store(part_bytes=5 << 20)
    url = ObjectURL("s3", bucket, "big.bin")

    with pytest.raises(SourceChangedError):
        store.upload(url, local, if_match='"not-the-etag"')
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted
    assert _body(client, bucket, "big.bin") == b"old"

    written = store.upload(url, local, if_match=etag)
    assert written.parts == 3
    assert _body(client, bucket, "big.bin") == content


def test_a_mirrored_output_leaves_the_source_bucket_as_it_was(
    s3_env: Any, astronaut: np.ndarray, sqlite_url: str, tmp_path: Path
) -> None:
    client = s3_env.client()
    source = s3_env.bucket(versioned=True)
    target = s3_env.bucket(versioned=False)
    original = _jpeg(astronaut)
    client.put_object(Bucket=source, Key="set/a/face.jpg", Body=original)
    client.put_object(Bucket=source, Key="set/b/notes.txt", Body=b"kept")
    before = _versions(client, source, "set/a/face.jpg")

    rows, _ = _run([f"s3://{source}/set/"], sqlite_url, output=ObjectURL("s3", target, "out/"))

    assert _versions(client, source, "set/a/face.jpg") == before and _body(client, source, "set/a/face.jpg") == original
    assert _face_changed(original, _body(client, target, "out/set/a/face.jpg")) > 20
    face_row = next(row for row in rows if row.outcome is Outcome.ANONYMIZED)
    assert face_row.output_path == ObjectURL("s3", target, "out/set/a/face.jpg")

    local_rows, _ = _run([f"s3://{source}/set/"], sqlite_url, output=tmp_path / "mirror")
    assert _face_changed(original, (tmp_path / "mirror" / "set" / "a" / "face.jpg").read_bytes()) > 20
    assert sorted(row.outcome for row in local_rows) == sorted([Outcome.ANONYMIZED, Outcome.NOT_MEDIA])


def test_a_shard_object_is_anonymized_member_by_member(s3_env: Any, astronaut: np.ndarray, sqlite_url: str) -> None:
    client = s3_env.client()
    bucket = s3_env.bucket(versioned=True)
    shard = io.BytesIO()
    with tarfile.open(fileobj=shard, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("s0.jpg", _jpeg(astronaut)), ("s0.json", b'{"id": 0}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    client.put_object(Bucket=bucket, Key="shards/000.tar", Body=shard.getvalue())

    rows, _ = _run([f"s3://{bucket}/shards/"], sqlite_url)

    paths = [str(row.path) for row in rows]
    assert paths == [
        f"s3://{bucket}/shards/000.tar#s0.jpg",
        f"s3://{bucket}/shards/000.tar#s0.json",
        f"s3://{bucket}/shards/000.tar",
    ]
    assert [row.outcome for row in rows] == [Outcome.ANONYMIZED, Outcome.NOT_MEDIA, Outcome.ANONYMIZED]
    assert len(_versions(client, bucket, "shards/000.tar")) == 1
    with tarfile.open(fileobj=io.BytesIO(_body(client, bucket, "shards/000.tar"))) as tar:
        assert tar.getnames() == ["s0.jpg", "s0.json"]
        member = tar.extractfile("s0.jpg")
        assert member is not None and _face_changed(_jpeg(astronaut), member.read()) > 20


def test_a_second_run_skips_objects_already_done_and_a_dry_run_writes_nothing(
    s3_env: Any, astronaut: np.ndarray, sqlite_url: str
) -> None:
    client = s3_env.client()
    bucket = s3_env.bucket(versioned=True)
    client.put_object(Bucket=bucket, Key="face.jpg", Body=_jpeg(astronaut))
    dry, _ = _run([f"s3://{bucket}/"], sqlite_url, dry_run=True)
    assert [row.outcome for row in dry] == [Outcome.DRY_RUN] and len(_versions(client, bucket, "face.jpg")) == 1
    before = _versions(client, bucket, "face.jpg")

    _run([f"s3://{bucket}/"], sqlite_url)
    after_first = _versions(client, bucket, "face.jpg")
    assert after_first != before and len(after_first) == 1

    (row,), _ = _run([f"s3://{bucket}/"], sqlite_url)
    assert row.outcome is Outcome.SKIPPED
    assert _versions(client, bucket, "face.jpg") == after_first  # not written again


def test_a_missing_bucket_or_prefix_fails_aloud(s3_env: Any, sqlite_url: str) -> None:
    bucket = s3_env.bucket(versioned=False)
    rows, run = _run([f"s3://{bucket}/nothing-here/", "s3://no-such-bucket-efface/"], sqlite_url)
    assert [row.outcome for row in rows] == [Outcome.ERROR, Outcome.ERROR]
    assert run.summary is not None and run.summary.status is RunStatus.FAILED


class _SameSecondStore:
    """A store listing versions as moto may when they were written within the same second: oldest first."""

    def __init__(self) -> None:
        from datetime import UTC, datetime

        second = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
        from efface.storage.s3 import StoredVersion

        self.listed = [
            StoredVersion("v-older", False, second),
            StoredVersion("v-read", False, second),
            StoredVersion("v-written", True, second),
        ]
        self.deleted: list[str] = []

    def versions(self, url: ObjectURL) -> list[Any]:
        return [v for v in self.listed if v.version_id not in self.deleted]

    def delete_version(self, url: ObjectURL, version_id: str) -> None:
        self.deleted.append(version_id)


def test_the_versions_holding_the_original_are_found_whatever_the_listing_order() -> None:
    """Written within the same second, the version read and an older one may be listed before the one written:
    both are deleted (by the version read and its time), the one written never."""
    from efface.pipeline.objects import delete_earlier_versions

    store = _SameSecondStore()
    url = ObjectURL("s3", "b", "face.jpg")
    deleted = delete_earlier_versions(store, url, written="v-written", read="v-read")  # type: ignore[arg-type]
    assert sorted(deleted) == ["v-older", "v-read"] and store.deleted == deleted
