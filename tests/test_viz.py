"""Charts render offline: a Vega-Lite spec JupyterLab draws, a static SVG for HTML, no network."""

import json

import altair as alt
import ibis
import pandas as pd
import pytest

from workbench import viz
from workbench.errors import WorkbenchError


def chart():
    data = pd.DataFrame({"x": [1, 2, 3], "y": [3, 1, 2]})
    return alt.Chart(data).mark_line().encode(x="x:Q", y="y:Q").properties(title="t")


def test_renderer_gives_spec_svg_and_text_without_network():
    viz.enable()
    bundle = chart()._repr_mimebundle_()
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    assert set(bundle) == {viz.VEGALITE_MIME, "image/svg+xml", "text/plain"}
    assert bundle["image/svg+xml"].lstrip().startswith("<svg")
    assert "$schema" not in bundle[viz.VEGALITE_MIME]
    assert "https://" not in json.dumps(bundle[viz.VEGALITE_MIME])
    assert bundle[viz.VEGALITE_MIME]["mark"]["type"] == "line"


def test_theme_is_applied():
    viz.enable()
    config = viz.spec(chart())["config"]
    assert config["range"]["category"] == viz.PALETTE


def test_png_and_svg_files(tmp_path):
    viz.save(chart(), tmp_path / "c.svg")
    viz.save(chart(), tmp_path / "c.png")
    assert (tmp_path / "c.svg").read_text().startswith("<svg")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_too_many_rows_asks_to_aggregate():
    table = ibis.memtable({"x": list(range(viz.MAX_ROWS + 1))})
    with pytest.raises(WorkbenchError, match="aggregate first"):
        viz.frame(table)
    assert len(viz.frame(table.limit(10))) == 10
    sampled = viz.sample(table, n=100)
    assert 0 < len(sampled) <= 100


def test_show_in_replaces_what_an_output_widget_shows():
    import ipywidgets as widgets

    out = widgets.Output()
    viz.show_in(out, chart())
    viz.show_in(out, chart().properties(title="second"))
    (shown,) = out.outputs
    assert shown["output_type"] == "display_data"
    assert shown["data"]["image/svg+xml"].lstrip().startswith("<svg")
    assert shown["data"][viz.VEGALITE_MIME]["title"] == "second"
