from __future__ import annotations

import json
from pathlib import Path

import pytest

from efface.errors import InputError, InputNotFoundError
from efface.records import BBox
from efface.verify import AnnotatedFace, AnnotatedImage, AnnotationFormat, read_annotations

IMAGE_NAMES = ("a.jpg", "b.jpg", "c.jpg", "sub/d.jpg")


@pytest.fixture
def images_root(tmp_path: Path) -> Path:
    """A folder holding the (empty) image files the annotations name: readers only check that they exist."""
    root = tmp_path / "images"
    for name in IMAGE_NAMES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _boxes(image: AnnotatedImage) -> list[tuple[tuple[float, float, float, float], bool]]:
    return [(face.box.xyxy, face.is_ignored) for face in image.faces]


# --- records ---------------------------------------------------------------------------------------------------


def test_records_are_frozen_and_validate() -> None:
    face = AnnotatedFace(BBox(0, 0, 10, 10))
    assert not face.is_ignored
    with pytest.raises(AttributeError):
        face.is_ignored = True  # type: ignore[misc]
    with pytest.raises(ValueError, match="must be a BBox"):
        AnnotatedFace((0, 0, 10, 10))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a tuple"):
        AnnotatedImage(Path("x.jpg"), [face])  # type: ignore[arg-type]
    image = AnnotatedImage(Path("x.jpg"), (face, AnnotatedFace(BBox(0, 0, 1, 1), is_ignored=True)))
    assert image.counted_faces == (face,)


# --- WIDER text ------------------------------------------------------------------------------------------------

WIDER_TEXT = """a.jpg
3
10 20 30 40 2 0 0 0 0 0
50 60 5 6 0 0 0 1 0 0
70 80 0 9 0 0 0 0 0 0
b.jpg
0
0 0 0 0 0 0 0 0 0 0
sub/d.jpg
1
1.5 2.5 10 20
c.jpg
0
"""


def test_wider_text_with_invalid_zero_size_and_empty_images(tmp_path: Path, images_root: Path) -> None:
    images = read_annotations(_write(tmp_path, "gt.txt", WIDER_TEXT), images_root=images_root)

    assert [image.path for image in images] == [images_root / n for n in ("a.jpg", "b.jpg", "sub/d.jpg", "c.jpg")]
    assert _boxes(images[0]) == [
        ((10, 20, 40, 60), False),
        ((50, 60, 55, 66), True),  # invalid=1
        ((70, 80, 70, 89), True),  # zero width: kept, ignored
    ]
    assert images[1].faces == ()  # the official zero-count placeholder row is skipped
    assert _boxes(images[2]) == [((1.5, 2.5, 11.5, 22.5), False)]  # four columns are enough
    assert images[3].faces == ()  # a zero count without placeholder, at the end of the file


def test_wider_zero_count_without_placeholder_in_the_middle(tmp_path: Path, images_root: Path) -> None:
    text = "a.jpg\n0\nb.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n"
    images = read_annotations(_write(tmp_path, "gt.txt", text), images_root=images_root)
    assert [len(image.faces) for image in images] == [0, 1]


@pytest.fixture
def difficulty_file(tmp_path: Path) -> Path:
    data = {
        "a.jpg": {"easy": [], "medium": [0], "hard": [0, 1, 2]},
        "b.jpg": {"easy": [], "medium": [], "hard": []},
        "sub/d.jpg": {"easy": [0], "medium": [0], "hard": [0]},
        "c.jpg": {"easy": [], "medium": [], "hard": []},
    }
    return _write(tmp_path, "difficulty.json", json.dumps(data))


@pytest.mark.parametrize(
    ("subset", "expected_ignored"),
    [
        # Face 1 is invalid and face 2 has zero width: both stay ignored even when the subset lists them.
        ("hard", [False, True, True]),
        ("medium", [False, True, True]),
        ("easy", [True, True, True]),
    ],
)
def test_wider_subset_ignores_faces_outside_it(
    tmp_path: Path, images_root: Path, difficulty_file: Path, subset: str, expected_ignored: list[bool]
) -> None:
    images = read_annotations(
        _write(tmp_path, "gt.txt", WIDER_TEXT),
        images_root=images_root,
        subset=subset,
        difficulty_file=difficulty_file,
    )
    assert [face.is_ignored for face in images[0].faces] == expected_ignored
    assert [face.is_ignored for face in images[2].faces] == [False]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subset": "hard"}, "needs a difficulty_file"),
        ({"subset": "extreme", "difficulty_file": Path("x.json")}, "unknown WIDER subset 'extreme'"),
        ({"difficulty_file": Path("x.json")}, "without a subset"),
    ],
)
def test_wider_subset_arguments_are_checked(
    tmp_path: Path, images_root: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        read_annotations(_write(tmp_path, "gt.txt", WIDER_TEXT), images_root=images_root, **kwargs)


@pytest.mark.parametrize(
    ("difficulty", "message"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"a.jpg": {"hard": [0]}}), "no 'hard' face list for image 'b.jpg'"),
        (json.dumps({"a.jpg": {"hard": [3]}}), r"indices in \[0, 3\)"),
        (json.dumps({"a.jpg": {"hard": [-1]}}), "indices"),
        (json.dumps({"a.jpg": {"hard": "0"}}), "indices"),
    ],
)
def test_wider_malformed_difficulty_file(tmp_path: Path, images_root: Path, difficulty: str, message: str) -> None:
    difficulty_file = _write(tmp_path, "difficulty.json", difficulty)
    with pytest.raises(InputError, match=message) as info:
        read_annotations(
            _write(tmp_path, "gt.txt", WIDER_TEXT),
            images_root=images_root,
            subset="hard",
            difficulty_file=difficulty_file,
        )
    assert info.value.path == difficulty_file


def test_wider_missing_difficulty_file(tmp_path: Path, images_root: Path) -> None:
    with pytest.raises(InputNotFoundError, match="difficulty file not found"):
        read_annotations(
            _write(tmp_path, "gt.txt", WIDER_TEXT),
            images_root=images_root,
            subset="hard",
            difficulty_file=tmp_path / "absent.json",
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.jpg\n1\n10 20 abc 40 0 0 0 0 0 0\n", "line 3: w must be a number, got 'abc'"),
        ("a.jpg\n1\n10 20 -3 40 0 0 0 0 0 0\n", "line 3: face size must not be negative"),
        ("a.jpg\n1\n10 20 3 -1\n", "line 3: face size must not be negative"),
        ("a.jpg\n1\n10 20 inf 4\n", "line 3: w must be finite"),
        ("a.jpg\n1\n10 20 30\n", "line 3: a face line needs at least x y w h"),
        ("a.jpg\ntwo\n", "line 2: face count must be an integer, got 'two'"),
        ("a.jpg\n-1\n", "line 2: face count must not be negative"),
        ("a.jpg\n", "line 1: image 'a.jpg' has no face count line"),
        ("a.jpg\n2\n1 2 3 4\n", "line 2: image 'a.jpg' announces 2 faces, found 1 face lines"),
        ("a.jpg\n2\n1 2 3 4\nb.jpg\n0\n", "announces 2 faces, found 1"),
        ("1 2 3 4\n", "line 1: expected an image path"),
    ],
)
def test_wider_malformed_lines(tmp_path: Path, images_root: Path, text: str, message: str) -> None:
    path = _write(tmp_path, "gt.txt", text)
    with pytest.raises(InputError, match=message) as info:
        read_annotations(path, images_root=images_root)
    assert info.value.path == path
    assert str(path) in str(info.value)


def test_wider_missing_image_file(tmp_path: Path, images_root: Path) -> None:
    with pytest.raises(InputNotFoundError, match=r"line 1: annotated image 'missing\.jpg' not found"):
        read_annotations(_write(tmp_path, "gt.txt", "missing.jpg\n0\n"), images_root=images_root)


def test_missing_annotation_or_images_root(tmp_path: Path, images_root: Path) -> None:
    with pytest.raises(InputNotFoundError, match="annotation file not found"):
        read_annotations(tmp_path / "absent.txt", images_root=images_root)
    with pytest.raises(InputNotFoundError, match="images root folder not found"):
        read_annotations(_write(tmp_path, "gt.txt", WIDER_TEXT), images_root=tmp_path / "absent")


def test_non_utf8_text_is_an_input_error(tmp_path: Path, images_root: Path) -> None:
    path = tmp_path / "gt.txt"
    path.write_bytes(b"a.jpg\n1\n\xff\xfe 2 3 4\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_annotations(path, images_root=images_root)


# --- COCO ------------------------------------------------------------------------------------------------------


def _coco(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 100, "height": 100},
            {"id": 2, "file_name": "b.jpg", "width": 100, "height": 100},
            {"id": 3, "file_name": "sub/d.jpg", "width": 100, "height": 100},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [50, 50, 20, 10], "iscrowd": 1},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "iscrowd": 0},
            {"id": 4, "image_id": 3, "category_id": 7, "bbox": [1.5, 2.5, 0, 4]},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 7, "name": "Face"}],
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize("category", ["face", "FACE", 7])
def test_coco_by_category_name_or_id(tmp_path: Path, images_root: Path, category: str | int) -> None:
    path = _write(tmp_path, "faces.json", json.dumps(_coco()))
    images = read_annotations(path, images_root=images_root, category=category)

    assert [image.path.name for image in images] == ["a.jpg", "b.jpg", "d.jpg"]
    assert _boxes(images[0]) == [((10, 20, 40, 60), False), ((50, 50, 70, 60), True)]  # iscrowd -> ignored
    assert images[1].faces == ()  # an image without annotation is kept with no face
    assert _boxes(images[2]) == [((1.5, 2.5, 1.5, 6.5), True)]  # zero width -> ignored


def test_coco_other_category(tmp_path: Path, images_root: Path) -> None:
    path = _write(tmp_path, "faces.json", json.dumps(_coco()))
    images = read_annotations(path, images_root=images_root, category="person")
    assert [len(image.faces) for image in images] == [1, 0, 0]


@pytest.mark.parametrize(
    ("content", "category", "message"),
    [
        ("{broken", "face", "malformed JSON at line 1"),
        ("[]", "face", "expected a COCO JSON object"),
        (json.dumps(_coco(annotations=None)), "face", "needs a 'annotations' list"),
        (json.dumps(_coco()), "cat", r"unknown category 'cat'; the file has 1='person', 7='Face'"),
        (json.dumps(_coco()), 99, "unknown category 99"),
        (json.dumps(_coco(categories=[{"name": "face"}])), "face", "needs an 'id'"),
        (json.dumps(_coco(images=[{"id": 1}])), "face", r"images\[0\]: a COCO image needs 'id' and 'file_name'"),
        (
            json.dumps(_coco(images=[{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}])),
            "face",
            "duplicate image id 1",
        ),
        (
            json.dumps(_coco(annotations=[{"image_id": 9, "category_id": 7, "bbox": [0, 0, 1, 1]}])),
            "face",
            r"annotations\[0\]: image_id 9 is not in 'images'",
        ),
        (
            json.dumps(_coco(annotations=[{"image_id": 1, "category_id": 7, "bbox": [0, 0, -1, 1]}])),
            "face",
            "must not be negative",
        ),
        (
            json.dumps(_coco(annotations=[{"image_id": 1, "category_id": 7, "bbox": [0, 0, 1]}])),
            "face",
            r"bbox must be \[x, y, width, height\]",
        ),
        (
            json.dumps(_coco(annotations=[{"image_id": 1, "category_id": 7, "bbox": [0, "a", 1, 1]}])),
            "face",
            "y must be a number",
        ),
        (json.dumps(_coco(annotations=["x"])), "face", "expected an object"),
    ],
)
def test_coco_malformed(tmp_path: Path, images_root: Path, content: str, category: str | int, message: str) -> None:
    path = _write(tmp_path, "faces.json", content)
    with pytest.raises(InputError, match=message) as info:
        read_annotations(path, images_root=images_root, category=category)
    assert info.value.path == path


def test_coco_missing_image_file(tmp_path: Path, images_root: Path) -> None:
    data = _coco(images=[{"id": 1, "file_name": "nope.jpg"}], annotations=[])
    with pytest.raises(InputNotFoundError, match=r"'nope\.jpg' not found"):
        read_annotations(_write(tmp_path, "faces.json", json.dumps(data)), images_root=images_root)


# --- PASCAL VOC ------------------------------------------------------------------------------------------------


def _voc(filename: str, objects: str) -> str:
    return f"""<annotation>
  <folder>VOC2012</folder>
  <filename>{filename}</filename>
  <size><width>100</width><height>80</height><depth>3</depth></size>
  {objects}
</annotation>
"""


def _voc_object(name: str, box: tuple[object, object, object, object], difficult: int | None = None) -> str:
    xmin, ymin, xmax, ymax = box
    flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    return (
        f"<object><name>{name}</name>{flag}<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def test_voc_single_file(tmp_path: Path, images_root: Path) -> None:
    objects = (
        _voc_object("face", (10, 20, 40, 60))
        + _voc_object("Face", (50, 50, 70, 60), difficult=1)
        + _voc_object("person", (0, 0, 100, 80))
        + _voc_object("face", (5.5, 6, 5.5, 10), difficult=0)
    )
    path = _write(tmp_path, "a.xml", _voc("a.jpg", objects))
    [image] = read_annotations(path, images_root=images_root)
    assert image.path == images_root / "a.jpg"
    assert _boxes(image) == [
        ((10, 20, 40, 60), False),
        ((50, 50, 70, 60), True),  # difficult -> ignored
        ((5.5, 6, 5.5, 10), True),  # zero width -> ignored
    ]


def test_voc_folder_sorted_by_file_name(tmp_path: Path, images_root: Path) -> None:
    folder = tmp_path / "voc"
    folder.mkdir()
    (folder / "2.xml").write_text(_voc("b.jpg", ""), encoding="utf-8")
    (folder / "1.xml").write_text(_voc("a.jpg", _voc_object("face", (1, 2, 3, 4))), encoding="utf-8")
    (folder / "notes.txt").write_text("not an annotation", encoding="utf-8")
    images = read_annotations(folder, images_root=images_root)
    assert [(image.path.name, len(image.faces)) for image in images] == [("a.jpg", 1), ("b.jpg", 0)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("<annotation><filename>a.jpg</filename>", "malformed XML at line 1"),
        ("<annotation><object><name>face</name></object></annotation>", "missing <filename>"),
        (_voc("a.jpg", "<object><name>face</name></object>"), "<object> 0: missing <bndbox>"),
        (_voc("a.jpg", "<object><bndbox/></object>"), "<object> 0: missing <name>"),
        (_voc("a.jpg", _voc_object("face", (1, 2, "x", 4))), "xmax must be a number, got 'x'"),
        (_voc("a.jpg", _voc_object("face", (10, 2, 5, 4))), "face size must not be negative"),
        ("<notvoc/>", "expected a VOC <annotation> root"),
    ],
)
def test_voc_malformed(tmp_path: Path, images_root: Path, content: str, message: str) -> None:
    path = _write(tmp_path, "a.xml", content)
    with pytest.raises(InputError, match=message) as info:
        read_annotations(path, images_root=images_root, annotation_format=AnnotationFormat.VOC)
    assert info.value.path == path


def test_voc_folder_without_xml(tmp_path: Path, images_root: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match=r"no VOC \.xml"):
        read_annotations(tmp_path / "empty", images_root=images_root)


# --- dlib imglab -----------------------------------------------------------------------------------------------

DLIB_XML = """<?xml version='1.0' encoding='ISO-8859-1'?>
<?xml-stylesheet type='text/xsl' href='image_metadata_stylesheet.xsl'?>
<dataset>
<name>Testing faces</name>
<images>
  <image file='a.jpg' width='500' height='332'>
    <box top='181' left='274' width='52' height='53'/>
    <box top='10' left='-4' width='20' height='21' ignore='1'/>
    <box top='1' left='2' width='3' height='4'><label>face</label></box>
    <box top='1' left='2' width='3' height='4'><label>car</label></box>
  </image>
  <image file='b.jpg'/>
</images>
</dataset>
"""


def test_dlib_imglab(tmp_path: Path, images_root: Path) -> None:
    images = read_annotations(_write(tmp_path, "testing.xml", DLIB_XML), images_root=images_root)
    assert [image.path.name for image in images] == ["a.jpg", "b.jpg"]
    assert _boxes(images[0]) == [
        ((274, 181, 326, 234), False),
        ((-4, 10, 16, 31), True),  # ignore='1'
        ((2, 1, 5, 5), False),  # labelled with the category; the 'car' box is skipped
    ]
    assert images[1].faces == ()


def _dlib(image: str) -> str:
    return f"<dataset><images>{image}</images></dataset>"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            _dlib("<image file='a.jpg'><box top='1' left='2' width='-3' height='4'/></image>"),
            "<image> 0 <box> 0: face size must not be negative",
        ),
        (_dlib("<image file='a.jpg'><box top='1' left='2' height='4'/></image>"), "width must be a number, got None"),
        (_dlib("<image><box top='1' left='2' width='3' height='4'/></image>"), "<image> 0: empty image path"),
        ("<dataset><name>x</name></dataset>", "no <images> element"),
        (_dlib("<image file='a.jpg'>"), "malformed XML"),
    ],
)
def test_dlib_malformed(tmp_path: Path, images_root: Path, content: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_annotations(_write(tmp_path, "faces.xml", content), images_root=images_root)


def test_dlib_missing_image_file(tmp_path: Path, images_root: Path) -> None:
    content = "<dataset><images><image file='zz.jpg'/></images></dataset>"
    with pytest.raises(InputNotFoundError, match=r"'zz\.jpg' not found"):
        read_annotations(_write(tmp_path, "faces.xml", content), images_root=images_root)


# --- format detection and arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected_faces"),
    [
        ("gt.txt", WIDER_TEXT, [3, 0, 1, 0]),
        ("wider_face_gt", WIDER_TEXT, [3, 0, 1, 0]),
        ("faces.JSON", json.dumps(_coco()), [2, 0, 1]),
        ("a.xml", _voc("a.jpg", _voc_object("face", (1, 2, 3, 4))), [1]),
        ("faces.xml", DLIB_XML, [3, 0]),
    ],
)
def test_format_is_detected(
    tmp_path: Path, images_root: Path, name: str, content: str, expected_faces: list[int]
) -> None:
    images = read_annotations(_write(tmp_path, name, content), images_root=images_root)
    assert [len(image.faces) for image in images] == expected_faces


def test_explicit_format_overrides_detection(tmp_path: Path, images_root: Path) -> None:
    path = _write(tmp_path, "faces.dat", json.dumps(_coco()))
    images = read_annotations(path, images_root=images_root, annotation_format="coco")  # type: ignore[arg-type]
    assert len(images) == 3
    with pytest.raises(InputNotFoundError, match=r"line 1: annotated image '\{\"images\": .{60,}\.\.\.' not found"):
        read_annotations(path, images_root=images_root)  # detected as WIDER text: the JSON line is no image path


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "message"),
    [
        ("faces.json", json.dumps(_coco()), {"subset": "hard"}, "apply to WIDER annotations only, not coco"),
        ("faces.xml", DLIB_XML, {"category": 3}, "numeric category"),
    ],
)
def test_options_of_other_formats_are_refused(
    tmp_path: Path, images_root: Path, name: str, content: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        read_annotations(_write(tmp_path, name, content), images_root=images_root, **kwargs)
