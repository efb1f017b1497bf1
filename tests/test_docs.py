"""The normative protocol document says what the code does: its version
(title and preface table) is the one the code speaks.  A review once found
the document a minor version behind."""

from __future__ import annotations

import os
import re

import pytest

import fastrpc
from fastrpc.wire import constants as W

SOURCE = os.environ.get("FASTRPC_SOURCE") or os.path.dirname(os.path.dirname(os.path.abspath(fastrpc.__file__)))
PROTOCOL_MD = os.path.join(SOURCE, "docs", "protocol.md")


@pytest.fixture(scope="module")
def protocol_md() -> str:
    if not os.path.exists(PROTOCOL_MD):
        pytest.skip(f"no docs/protocol.md under {SOURCE} (an installed package; CI sets FASTRPC_SOURCE)")
    with open(PROTOCOL_MD, encoding="utf-8") as f:
        return f.read()


def test_title_names_the_version_spoken(protocol_md):
    title = protocol_md.splitlines()[0]
    assert title == f"# fastrpc wire protocol, version {W.PROTOCOL_MAJOR}.{W.PROTOCOL_MINOR}"


def test_preface_table_names_the_version_spoken(protocol_md):
    major = re.search(r"\| 4 \| 1 \| protocol major version \((\d+)\) \|", protocol_md)
    minor = re.search(r"\| 5 \| 1 \| protocol minor version \((\d+)\) \|", protocol_md)
    assert major and minor, "the preface table lost its version rows"
    assert (int(major.group(1)), int(minor.group(1))) == (W.PROTOCOL_MAJOR, W.PROTOCOL_MINOR)
    assert W.PREFACE[4:6] == bytes((W.PROTOCOL_MAJOR, W.PROTOCOL_MINOR))


def test_every_message_type_is_in_the_table(protocol_md):
    for t in W.MsgType:
        assert re.search(rf"^\| {t.name} \| {int(t)} \|", protocol_md, re.M), t.name
