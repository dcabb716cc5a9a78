"""md5 / sha256 `hexdigest` give DuckDB's bytes on every engine (issue #3)."""

from __future__ import annotations

import functools

import ibis
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench import backends
from workbench.errors import UnsupportedOperationError


@functools.cache
def connection(name: str):
    return backends.connect(name)


def digests(name: str, values: list, how: str) -> list:
    t = ibis.memtable(pa.table({"id": range(len(values)), "s": pa.array(values, pa.string())}))
    result = connection(name).to_pyarrow(t.mutate(h=t.s.hexdigest(how)))
    return result.sort_by("id")["h"].to_pylist()


@pytest.mark.parametrize("how", ["md5", "sha256"])
def test_known_digests(backend, how):
    # RFC 1321 and FIPS 180-2 test vectors; "é" is the two UTF-8 bytes c3 a9.
    expected = {
        "md5": ["d41d8cd98f00b204e9800998ecf8427e", "900150983cd24fb0d6963f7d28e17f72",
                "66ddcd97cfdeabb2f6fb8a999b4bc76f", None],
        "sha256": ["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                   "4a99557e4033c3539de2eb65472017cad5f9557f7a0625a09f1c3f6e2ba69c4c", None],
    }  # fmt: skip
    assert digests(backend, ["", "abc", "é", None], how) == expected[how]


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=30))
def test_random_strings_hash_as_on_duckdb(backend, values):
    for how in ("md5", "sha256"):
        assert digests(backend, values, how) == digests("duckdb", values, how)


def test_a_surrogate_key_over_several_columns(backend):
    t = ibis.memtable({"id": [1, 2], "name": ["Zoë", None]})
    key = (t.id.cast("string") + "|" + t.name.fill_null("")).hexdigest("sha256")
    got = connection(backend).to_pyarrow(t.mutate(key=key)).sort_by("id")["key"].to_pylist()
    # The key is the digest of "1|Zoë" and "2|", as DuckDB hashes those strings.
    assert got == digests("duckdb", ["1|Zoë", "2|"], "sha256")


@pytest.mark.parametrize("name", ["polars", "datafusion"])
def test_other_algorithms_are_refused(name):
    t = ibis.memtable({"s": ["a"]})
    with pytest.raises(UnsupportedOperationError, match="sha512"):
        connection(name).to_pyarrow(t.mutate(h=t.s.hexdigest("sha512")))
