"""Ground-truth face annotations for measuring detection coverage: WIDER text, COCO JSON, PASCAL VOC XML and
dlib imglab XML, read into one record.

Every reader resolves image paths against an ``images_root`` and checks that each image exists, so a
mistyped root fails at once instead of scoring an empty run. Faces the official protocol of a format does
not count (WIDER ``invalid``, faces outside a WIDER difficulty subset, COCO ``iscrowd``, VOC ``difficult``,
dlib ``ignore``, and zero-width or zero-height boxes) are kept with ``is_ignored=True``: a detection on
them is neither a hit nor a false positive.

Every malformed input raises an ``InputError`` whose message names the file and, for text formats, the line.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from efface.errors import InputError, InputNotFoundError, UnreadableFileError
from efface.records import BBox

__all__ = [
    "AnnotatedFace",
    "AnnotatedImage",
    "AnnotationFormat",
    "WiderSubset",
    "read_annotations",
]


class AnnotationFormat(StrEnum):
    """The annotation file formats ``read_annotations`` understands."""

    WIDER = "wider"
    COCO = "coco"
    VOC = "voc"
    DLIB = "dlib"


class WiderSubset(StrEnum):
    """The official WIDER FACE evaluation subsets; each counts a subset of an image's faces."""

    EASY = "easy"
    MEDIUM = "medium"
    HARD = "hard"


@dataclass(frozen=True, slots=True)
class AnnotatedFace:
    """One annotated face.

    Attributes:
        box: the annotated box in pixels of the image.
        is_ignored: the evaluation protocol does not count this face: a detection on it is neither a hit
            nor a false positive, and missing it is not a miss.
    """

    box: BBox
    is_ignored: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.box, BBox):
            raise ValueError(f"AnnotatedFace.box must be a BBox, got {type(self.box).__name__}")


@dataclass(frozen=True, slots=True)
class AnnotatedImage:
    """One image and its annotated faces (possibly none).

    Attributes:
        path: the image file.
        faces: every annotated face, ignored ones included, in the annotation's order.
    """

    path: Path
    faces: tuple[AnnotatedFace, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.faces, tuple):
            raise ValueError(f"AnnotatedImage.faces must be a tuple, got {type(self.faces).__name__}")
        for face in self.faces:
            if not isinstance(face, AnnotatedFace):
                raise ValueError(f"AnnotatedImage.faces must hold AnnotatedFace, got {type(face).__name__}")

    @property
    def counted_faces(self) -> tuple[AnnotatedFace, ...]:
        """The faces the protocol counts (not ignored)."""
        return tuple(face for face in self.faces if not face.is_ignored)


def read_annotations(
    path: Path,
    *,
    images_root: Path,
    annotation_format: AnnotationFormat | None = None,
    category: str | int = "face",
    subset: str | None = None,
    difficulty_file: Path | None = None,
) -> list[AnnotatedImage]:
    """Reads face annotations in any supported format.

    Args:
        path: the annotation file, or for VOC a folder of per-image ``.xml`` files.
        images_root: the folder the annotation's image paths are relative to.
        annotation_format: the format; None detects it: ``.json`` is COCO, an ``.xml`` file or a folder is VOC
            unless the XML root tag is ``dataset`` (dlib imglab), anything else is WIDER text.
        category: the face class: a COCO category name (case-insensitive) or id, a VOC object name, or a dlib
            box label (unlabelled dlib boxes always count). WIDER has one class and ignores it.
        subset: WIDER only: ``easy``, ``medium`` or ``hard``; faces outside it are ignored.
        difficulty_file: WIDER only, required with ``subset``: JSON ``{image path: {"easy": [0-based face
            indices], "medium": [...], "hard": [...]}}``.

    Returns:
        One record per annotated image, in the annotation's order (VOC folders: sorted by file name).

    Raises:
        InputNotFoundError: the annotation, the images root, the difficulty file or an annotated image does not
            exist, or a VOC folder holds no ``.xml`` file.
        UnreadableFileError: the operating system refused to read a file.
        InputError: the annotation is malformed (bad JSON/XML, a bad line, a negative or non-numeric size, an
            unknown category, a subset without a difficulty file, ...).
    """
    path = Path(path)
    images_root = Path(images_root)
    if not path.exists():
        raise InputNotFoundError("annotation file not found", path=path)
    if not images_root.is_dir():
        raise InputNotFoundError("images root folder not found", path=images_root)
    fmt = AnnotationFormat(annotation_format) if annotation_format is not None else _detect_format(path)
    if fmt is not AnnotationFormat.WIDER and (subset is not None or difficulty_file is not None):
        raise InputError(f"subset and difficulty_file apply to WIDER annotations only, not {fmt.value}", path=path)
    if fmt is not AnnotationFormat.COCO and not isinstance(category, str):
        raise InputError(f"a numeric category ({category}) applies to COCO only, not {fmt.value}", path=path)
    match fmt:
        case AnnotationFormat.WIDER:
            return _read_wider(path, images_root, subset=subset, difficulty_file=difficulty_file)
        case AnnotationFormat.COCO:
            return _read_coco(path, images_root, category=category)
        case AnnotationFormat.VOC:
            return _read_voc(path, images_root, category=str(category))
        case AnnotationFormat.DLIB:
            return _read_dlib(path, images_root, category=str(category))


def _detect_format(path: Path) -> AnnotationFormat:
    if path.is_dir():
        return AnnotationFormat.VOC
    suffix = path.suffix.lower()
    if suffix == ".json":
        return AnnotationFormat.COCO
    if suffix == ".xml":
        root = _parse_xml(path)
        return AnnotationFormat.DLIB if root.tag == "dataset" else AnnotationFormat.VOC
    return AnnotationFormat.WIDER


# --- shared helpers --------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputNotFoundError("annotation file not found", path=path) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"annotation file is not UTF-8 text: {exc.reason} at byte {exc.start}", path=path) from exc
    except OSError as exc:
        raise UnreadableFileError(f"cannot read annotation file: {exc.strerror or exc}", path=path) from exc


def _parse_xml(path: Path) -> ET.Element:
    # The bundled expat (>= 2.4.1) refuses entity-expansion bombs, so untrusted XML is safe to parse here.
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, column = exc.position
        raise InputError(f"malformed XML at line {line}, column {column}: {exc}", path=path) from exc
    except FileNotFoundError as exc:
        raise InputNotFoundError("annotation file not found", path=path) from exc
    except OSError as exc:
        raise UnreadableFileError(f"cannot read annotation file: {exc.strerror or exc}", path=path) from exc


def _number(text: object, *, what: str, where: str, path: Path) -> float:
    """A finite number from annotation text, or an InputError naming the value and where it was."""
    if not isinstance(text, str | int | float):  # JSON null, a list, a missing XML attribute...
        raise InputError(f"{where}: {what} must be a number, got {text!r}", path=path)
    try:
        value = float(text)
    except ValueError as exc:
        raise InputError(f"{where}: {what} must be a number, got {text!r}", path=path) from exc
    if not math.isfinite(value):
        raise InputError(f"{where}: {what} must be finite, got {text!r}", path=path)
    return value


def _face_xywh(x: float, y: float, w: float, h: float, *, is_ignored: bool, where: str, path: Path) -> AnnotatedFace:
    if w < 0 or h < 0:
        raise InputError(f"{where}: face size must not be negative, got width={w:g} height={h:g}", path=path)
    # Zero-size boxes stay in the list (the official WIDER protocol keeps them) but cannot be scored as faces.
    return AnnotatedFace(BBox(x, y, x + w, y + h), is_ignored=is_ignored or w == 0 or h == 0)


def _image_path(images_root: Path, name: str, *, where: str, path: Path) -> Path:
    name = name.strip()
    if not name:
        raise InputError(f"{where}: empty image path", path=path)
    image_path = images_root / name
    if not image_path.is_file():
        shown = name if len(name) <= 80 else f"{name[:77]}..."
        raise InputNotFoundError(f"{where}: annotated image {shown!r} not found under {images_root}", path=path)
    return image_path


# --- WIDER text ------------------------------------------------------------------------------------------------

# Column of the `invalid` flag in `x y w h blur expression illumination invalid occlusion pose`.
_WIDER_INVALID_COLUMN = 7


def _is_number_row(text: str) -> bool:
    tokens = text.split()
    if not tokens:
        return False
    try:
        for token in tokens:
            float(token)
    except ValueError:
        return False
    return True


def _numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.strip()


def _read_wider(
    path: Path, images_root: Path, *, subset: str | None, difficulty_file: Path | None
) -> list[AnnotatedImage]:
    kept = _read_difficulty(path, subset, difficulty_file)
    lines = list(_numbered_lines(_read_text(path)))
    images: list[AnnotatedImage] = []
    index = 0
    while index < len(lines):
        path_line_no, name = lines[index]
        where = f"line {path_line_no}"
        if _is_number_row(name):
            raise InputError(f"{where}: expected an image path, got numbers {name!r}", path=path)
        image_path = _image_path(images_root, name, where=where, path=path)
        if index + 1 >= len(lines):
            raise InputError(f"{where}: image {name!r} has no face count line", path=path)
        count_line_no, count_text = lines[index + 1]
        try:
            count = int(count_text)
        except ValueError as exc:
            message = f"line {count_line_no}: face count must be an integer, got {count_text!r}"
            raise InputError(message, path=path) from exc
        if count < 0:
            raise InputError(f"line {count_line_no}: face count must not be negative, got {count}", path=path)
        index += 2
        if count == 0:
            # The official format follows a zero count with one placeholder row of zeros; others omit it.
            if index < len(lines) and _is_number_row(lines[index][1]):
                index += 1
            rows: list[tuple[int, str]] = []
        else:
            rows = lines[index : index + count]
            # A lone non-numeric token is the next image's path: the count promised more faces than follow.
            ends = [i for i, (_, row) in enumerate(rows) if len(row.split()) == 1 and not _is_number_row(row)]
            if len(rows) < count or ends:
                got = ends[0] if ends else len(rows)
                raise InputError(
                    f"line {count_line_no}: image {name!r} announces {count} faces, found {got} face lines", path=path
                )
            index += count
        faces = tuple(_wider_face(row, where=f"line {line_no}", path=path) for line_no, row in rows)
        if kept is not None:
            faces = _apply_subset(faces, kept, name, subset=str(subset), path=path, difficulty_file=difficulty_file)
        images.append(AnnotatedImage(image_path, faces))
    return images


def _wider_face(row: str, *, where: str, path: Path) -> AnnotatedFace:
    tokens = row.split()
    if len(tokens) < 4:
        raise InputError(f"{where}: a face line needs at least x y w h, got {row!r}", path=path)
    x, y, w, h = (_number(t, what=n, where=where, path=path) for t, n in zip(tokens[:4], "xywh", strict=True))
    is_invalid = len(tokens) > _WIDER_INVALID_COLUMN and tokens[_WIDER_INVALID_COLUMN] not in ("0", "0.0")
    return _face_xywh(x, y, w, h, is_ignored=is_invalid, where=where, path=path)


def _read_difficulty(path: Path, subset: str | None, difficulty_file: Path | None) -> dict[str, object] | None:
    if subset is None:
        if difficulty_file is not None:
            raise InputError("difficulty_file given without a subset (easy, medium or hard)", path=path)
        return None
    try:
        WiderSubset(subset)
    except ValueError as exc:
        names = ", ".join(s.value for s in WiderSubset)
        raise InputError(f"unknown WIDER subset {subset!r}; expected one of {names}", path=path) from exc
    if difficulty_file is None:
        raise InputError(f"subset {subset!r} needs a difficulty_file listing the faces of each subset", path=path)
    difficulty_file = Path(difficulty_file)
    if not difficulty_file.is_file():
        raise InputNotFoundError("difficulty file not found", path=difficulty_file)
    try:
        data = json.loads(_read_text(difficulty_file))
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON at line {exc.lineno}: {exc.msg}", path=difficulty_file) from exc
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object keyed by image path, got {type(data).__name__}", path=difficulty_file)
    return data


def _apply_subset(
    faces: tuple[AnnotatedFace, ...],
    kept: dict[str, object],
    name: str,
    *,
    subset: str,
    path: Path,
    difficulty_file: Path | None,
) -> tuple[AnnotatedFace, ...]:
    entry = kept.get(name)
    if not isinstance(entry, dict) or subset not in entry:
        raise InputError(f"no {subset!r} face list for image {name!r}", path=difficulty_file)
    indices = entry[subset]
    if not isinstance(indices, list) or not all(isinstance(i, int) and 0 <= i < len(faces) for i in indices):
        raise InputError(
            f"{subset!r} face list of image {name!r} must hold indices in [0, {len(faces)}), got {indices!r}",
            path=difficulty_file,
        )
    counted = set(indices)
    return tuple(
        face if index in counted else AnnotatedFace(face.box, is_ignored=True) for index, face in enumerate(faces)
    )


# --- COCO JSON -------------------------------------------------------------------------------------------------


def _read_coco(path: Path, images_root: Path, *, category: str | int) -> list[AnnotatedImage]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON at line {exc.lineno}: {exc.msg}", path=path) from exc
    if not isinstance(data, dict):
        raise InputError(f"expected a COCO JSON object, got {type(data).__name__}", path=path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"COCO file needs a {key!r} list", path=path)
    category_id = _coco_category_id(data["categories"], category, path=path)

    image_paths: dict[object, Path] = {}
    for number, image in enumerate(data["images"]):
        where = f"images[{number}]"
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise InputError(f"{where}: a COCO image needs 'id' and 'file_name'", path=path)
        if image["id"] in image_paths:
            raise InputError(f"{where}: duplicate image id {image['id']!r}", path=path)
        image_paths[image["id"]] = _image_path(images_root, image["file_name"], where=where, path=path)

    faces: dict[object, list[AnnotatedFace]] = {image_id: [] for image_id in image_paths}
    for number, annotation in enumerate(data["annotations"]):
        where = f"annotations[{number}]"
        if not isinstance(annotation, dict):
            raise InputError(f"{where}: expected an object, got {type(annotation).__name__}", path=path)
        if annotation.get("category_id") != category_id:
            continue
        image_id = annotation.get("image_id")
        if image_id not in faces:
            raise InputError(f"{where}: image_id {image_id!r} is not in 'images'", path=path)
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise InputError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}", path=path)
        x, y, w, h = (_number(v, what=n, where=where, path=path) for v, n in zip(bbox, "xywh", strict=True))
        is_crowd = bool(annotation.get("iscrowd", 0))
        faces[image_id].append(_face_xywh(x, y, w, h, is_ignored=is_crowd, where=where, path=path))
    return [AnnotatedImage(image_path, tuple(faces[image_id])) for image_id, image_path in image_paths.items()]


def _coco_category_id(categories: list[object], category: str | int, *, path: Path) -> object:
    for entry in categories:
        if not isinstance(entry, dict) or "id" not in entry:
            raise InputError(f"a COCO category needs an 'id', got {entry!r}", path=path)
        if isinstance(category, str):
            if str(entry.get("name", "")).casefold() == category.casefold():
                return entry["id"]
        elif entry["id"] == category:
            return entry["id"]
    known = ", ".join(f"{e.get('id')}={e.get('name')!r}" for e in categories if isinstance(e, dict)) or "none"
    raise InputError(f"unknown category {category!r}; the file has {known}", path=path)


# --- PASCAL VOC XML --------------------------------------------------------------------------------------------


def _read_voc(path: Path, images_root: Path, *, category: str) -> list[AnnotatedImage]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".xml" and p.is_file())
        if not files:
            raise InputNotFoundError("folder holds no VOC .xml annotation file", path=path)
    else:
        files = [path]
    return [_read_voc_file(file, images_root, category=category) for file in files]


def _voc_text(element: ET.Element, tag: str, *, where: str, path: Path) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise InputError(f"{where}: missing <{tag}>", path=path)
    return child.text.strip()


def _read_voc_file(path: Path, images_root: Path, *, category: str) -> AnnotatedImage:
    root = _parse_xml(path)
    if root.tag != "annotation":
        raise InputError(f"expected a VOC <annotation> root, got <{root.tag}>", path=path)
    filename = _voc_text(root, "filename", where="<annotation>", path=path)
    image_path = _image_path(images_root, filename, where="<filename>", path=path)
    faces: list[AnnotatedFace] = []
    for number, obj in enumerate(root.iter("object")):
        where = f"<object> {number}"
        if _voc_text(obj, "name", where=where, path=path).casefold() != category.casefold():
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise InputError(f"{where}: missing <bndbox>", path=path)
        x1, y1, x2, y2 = (
            _number(_voc_text(bndbox, tag, where=where, path=path), what=tag, where=where, path=path)
            for tag in ("xmin", "ymin", "xmax", "ymax")
        )
        difficult = obj.findtext("difficult", default="0").strip()
        is_difficult = _number(difficult, what="difficult", where=where, path=path) != 0
        faces.append(_face_xywh(x1, y1, x2 - x1, y2 - y1, is_ignored=is_difficult, where=where, path=path))
    return AnnotatedImage(image_path, tuple(faces))


# --- dlib imglab XML -------------------------------------------------------------------------------------------


def _read_dlib(path: Path, images_root: Path, *, category: str) -> list[AnnotatedImage]:
    root = _parse_xml(path)
    if root.tag != "dataset":
        raise InputError(f"expected a dlib imglab <dataset> root, got <{root.tag}>", path=path)
    images_element = root.find("images")
    if images_element is None:
        raise InputError("dlib imglab file has no <images> element", path=path)
    images: list[AnnotatedImage] = []
    for image_number, image in enumerate(images_element.findall("image")):
        where = f"<image> {image_number}"
        image_path = _image_path(images_root, image.get("file", ""), where=where, path=path)
        faces: list[AnnotatedFace] = []
        for box_number, box in enumerate(image.findall("box")):
            box_where = f"{where} <box> {box_number}"
            label = box.findtext("label")
            if label is not None and label.strip().casefold() != category.casefold():
                continue
            top, left, width, height = (
                _number(box.get(name), what=name, where=box_where, path=path)
                for name in ("top", "left", "width", "height")
            )
            is_ignored = box.get("ignore", "0").strip() not in ("0", "")
            faces.append(_face_xywh(left, top, width, height, is_ignored=is_ignored, where=box_where, path=path))
        images.append(AnnotatedImage(image_path, tuple(faces)))
    return images
