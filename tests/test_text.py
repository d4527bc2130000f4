"""path_text and printable: one line, no surrogate, no control character, and the path given back byte for byte."""

from __future__ import annotations

import os
import random

import pytest

from efface.text import path_from_text, path_text, printable


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (b"plain.jpg", "plain.jpg"),
        ("café 東京.jpg".encode(), "café 東京.jpg"),
        (b"b\xff.jpg", "b\\xff.jpg"),
        (b"c\nd\x1b[31m.jpg", "c\\nd\\x1b[31m.jpg"),
        (b"tab\there\r", "tab\\there\\r"),
        (b"back\\slash\\xff", "back\\\\slash\\\\xff"),
        (b"del\x7f", "del\\x7f"),
        ("c1\x85 nel".encode(), "c1\\u0085 nel"),
        ("rtl\u202egpj.exe".encode(), "rtl\\u202egpj.exe"),
        ("line\u2028sep".encode(), "line\\u2028sep"),
        (b"\x80\xc3", "\\x80\\xc3"),
    ],
)
def test_path_text(name: bytes, shown: str) -> None:
    path = os.fsdecode(name)
    assert path_text(path) == shown
    assert printable(shown) == shown
    assert os.fsencode(path_from_text(shown)) == name
    shown.encode("utf-8")  # no lone surrogate is left


def test_every_byte_string_round_trips() -> None:
    generator = random.Random(15)
    for _ in range(2000):
        name = bytes(generator.choice([*range(1, 47), *range(48, 256)]) for _ in range(generator.randint(1, 12)))
        text = path_text(os.fsdecode(name))
        assert not any(char in text for char in "\n\r\x1b\x00") and text.encode("utf-8")
        assert os.fsencode(path_from_text(text)) == name


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("cannot decode image: broken", "cannot decode image: broken"),
        ("a\nb", "a\\nb"),
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),
        ("C:\\photos", "C:\\photos"),
        (os.fsdecode(b"no such file: 'b\xff'"), "no such file: 'b\\xff'"),
    ],
)
def test_printable(message: str, shown: str) -> None:
    assert printable(message) == shown


def test_the_module_examples_run() -> None:
    import doctest

    from efface import text

    assert doctest.testmod(text).attempted and not doctest.testmod(text).failed
