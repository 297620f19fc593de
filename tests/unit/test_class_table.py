"""The one attribute-table reader: custom classes.csv, --add-classes tables and pasted rows give
the same messages for the same defects."""

from __future__ import annotations

import numpy as np
import pytest

from mgmrn.data import DataError
from mgmrn.data.readers.class_table import parse_class_table, read_class_table
from mgmrn.data.readers.custom import read_classes_csv
from mgmrn.inference.classes import read_class_table as read_new_classes
from mgmrn.inference.predictor import load
from mgmrn.serve.app import ApiError, Explorer

from ..helpers import ATTRIBUTE_NAMES, write_checkpoint

GOOD = [1, 0, 1, 0, 0]


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    explorer = Explorer(load(write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")))
    yield explorer
    explorer.close()


def through_every_entry(tmp_path, explorer, header: list[str], values: list[str]) -> list[str]:
    """The message of one bad class row read as classes.csv, as an added-class table and pasted.

    Each source's own name is replaced by ``SOURCE``.
    """
    custom = tmp_path / "classes.csv"
    custom.write_text("\n".join([",".join(["class", "split", *header]),
                                 ",".join(["x", "unseen", *values]), "y,seen," +
                                 ",".join(map(str, GOOD))]) + "\n")
    added = tmp_path / "new.csv"
    added.write_text("\n".join([",".join(["class", *header]), ",".join(["x", *values])]) + "\n")
    messages = []
    for read, path in ((read_classes_csv, custom), (lambda p: read_new_classes(p, ATTRIBUTE_NAMES),
                                                    added)):
        with pytest.raises(DataError) as err:
            read(path)
        messages.append(str(err.value).replace(str(path), "SOURCE"))
    with pytest.raises(ApiError) as err:
        explorer.add_class({"name": "x", "row": ",".join(header) + "\n" + ",".join(values)})
    assert err.value.status == 400
    messages.append(err.value.message.replace("pasted row", "SOURCE"))
    return messages


@pytest.mark.parametrize("values, message", [
    (["1", "0", "lots", "0", "0"], "SOURCE line 2, field 'color_red': expected a number, got 'lots'"),
    (["1", "0", "inf", "0", "0"], "SOURCE line 2, field 'color_red': expected a number, got 'inf'"),
    (["1", "0", "nan", "0", "0"], "SOURCE line 2, field 'color_red': expected a number, got 'nan'"),
    (["0", "0", "0", "0", "0"], "SOURCE line 2: class 'x' has every attribute 0; the cosine "
                                "classifier needs at least one non-zero attribute"),
])
def test_a_bad_value_gets_the_same_message_from_every_entry(tmp_path, explorer, values, message):
    assert through_every_entry(tmp_path, explorer, ATTRIBUTE_NAMES, values) == [message] * 3


def test_a_repeated_column_gets_the_same_message_from_every_entry(tmp_path, explorer):
    header = [*ATTRIBUTE_NAMES, "color_red"]
    messages = through_every_entry(tmp_path, explorer, header, ["1", "0", "1", "0", "0", "1"])
    assert messages == ["SOURCE line 1: column(s) given twice: color_red"] * 3


def test_a_repeated_class_is_named_with_both_lines(tmp_path):
    rows = [["class", "split", "a", "b"], ["x", "seen", "1", "0"], [" ", ""],
            ["y", "unseen", "0", "1"], ["x", "unseen", "1", "1"]]
    with pytest.raises(DataError, match=r"^t.csv line 5, field 'class': class 'x' already given "
                                        r"on line 2$"):
        parse_class_table(rows, "t.csv", text_columns=("split",))
    (tmp_path / "new.csv").write_text("class,a,b\nx,1,0\nx,0,1\n")
    with pytest.raises(DataError, match=r"new.csv line 3, field 'class': class 'x' already given "
                                        r"on line 2$"):
        read_new_classes(tmp_path / "new.csv", ["a", "b"])


def test_an_added_class_table_accepts_a_byte_order_mark_and_names_bad_bytes(tmp_path):
    path = tmp_path / "new.csv"
    path.write_bytes(b"\xef\xbb\xbfclass,b,a\r\nx,2,1\r\n")  # as spreadsheet programs save
    names, rows = read_new_classes(path, ["a", "b"])
    assert names == ["x"]
    np.testing.assert_array_equal(rows, [[1, 2]])
    path.write_bytes("class,a,b\nx,1,0\nd\xe9j\xe0,0,1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"new.csv line 3: byte 0xe9 is not UTF-8 text"):
        read_new_classes(path, ["a", "b"])
    with pytest.raises(DataError, match=r"absent.csv not found"):
        read_new_classes(tmp_path / "absent.csv", ["a", "b"])


def test_the_table_keeps_lines_text_columns_and_attribute_order(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("class,split,b,a\n\nx,seen,2,1\ny , unseen ,0,3\n")
    table = read_class_table(path, text_columns=("split",))
    assert table.names == ["x", "y"] and table.lines == [3, 4]
    assert table.text == {"split": ["seen", "unseen"]} and table.attribute_names == ["b", "a"]
    np.testing.assert_array_equal(table.values, [[2, 1], [0, 3]])
    by_name = read_class_table(path, ["a", "b"], text_columns=("split",))
    np.testing.assert_array_equal(by_name.values, [[1, 2], [3, 0]])
    assert by_name.values.dtype == np.float32


def test_a_pasted_row_of_values_reads_in_training_order(explorer):
    assert explorer._parse_row("1, 0\t2 0 0.5", "x") == [1, 0, 2, 0, 0.5]
    with pytest.raises(ApiError, match=r"^pasted row line 1, field 'color_red': expected a number, "
                                       r"got 'red'$"):
        explorer._parse_row("1 0 red 0 0", "x")
    with pytest.raises(ApiError, match=r"has 3 values; expected 5"):
        explorer._parse_row("1 0 1", "x")


def test_header_problems_name_the_line_and_columns():
    with pytest.raises(DataError, match=r"^p line 1: no 'class' column"):
        parse_class_table([["a", "b"], ["1", "2"]], "p", ["a", "b"])
    with pytest.raises(DataError, match=r"missing attribute column\(s\) 'b'; unknown column\(s\) "
                                        r"'c'"):
        parse_class_table([["class", "a", "c"], ["x", "1", "2"]], "p", ["a", "b"])
    with pytest.raises(DataError, match=r"^p line 1: header must be class,split,<attr 1>"):
        parse_class_table([["class", "split"], ["x", "seen"]], "p", text_columns=("split",))
    with pytest.raises(DataError, match=r"^p: no class rows below the header$"):
        parse_class_table([["class", "a"], ["", ""]], "p")
    with pytest.raises(DataError, match=r"^p is empty"):
        parse_class_table([], "p")
