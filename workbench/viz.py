"""Altair charts that render offline: in JupyterLab, in exported HTML, and as files.

Altair 6's default renderer loads Vega from a CDN, and JupyterLab 4 renders Vega-Lite only up
to v5. Our renderer returns a mime bundle with the Vega-Lite spec (without its `$schema` URL,
drawn by JupyterLab's bundled Vega) and a static SVG drawn by vl-convert (embedded as-is in
HTML exports, which open untrusted and run no scripts). Nothing refers to a network address.
"""

from __future__ import annotations

import altair as alt
import ibis
import pandas as pd
import vl_convert as vlc

MAX_ROWS = 5_000
"""Altair refuses to embed more rows than this: aggregate first, or `sample` for a picture."""
VEGALITE_MIME = "application/vnd.vegalite.v5+json"
PALETTE = ["#1f6f8b", "#e07a5f", "#3d405b", "#81b29a", "#f2cc8f", "#99a8b2", "#c1666b"]


def theme() -> dict:
    """The workbench's chart theme: quiet axes, one palette, readable sizes."""
    return {
        "config": {
            "view": {"continuousWidth": 560, "continuousHeight": 280, "stroke": None},
            "range": {"category": PALETTE},
            "axis": {"labelFontSize": 11, "titleFontSize": 12, "gridColor": "#eeeeee"},
            "legend": {"labelFontSize": 11, "titleFontSize": 12},
            "title": {"fontSize": 14, "anchor": "start", "color": "#3d405b"},
            "background": "white",
        }
    }


def spec(chart: alt.TopLevelMixin) -> dict:
    """The chart's Vega-Lite spec with its data inlined and no network reference."""
    with alt.data_transformers.disable_max_rows():
        data = chart.to_dict()
    data.pop("$schema", None)
    return data


def svg(chart: alt.TopLevelMixin) -> str:
    """The chart drawn as SVG, offline, by vl-convert."""
    return vlc.vegalite_to_svg(spec(chart), vl_version=_vl_version(), allowed_base_urls=[])


def png(chart: alt.TopLevelMixin, scale: float = 1.0) -> bytes:
    """The chart drawn as PNG, offline, by vl-convert."""
    return vlc.vegalite_to_png(
        spec(chart), vl_version=_vl_version(), scale=scale, allowed_base_urls=[]
    )


def save(chart: alt.TopLevelMixin, path) -> None:
    """Save the chart as .svg or .png, offline."""
    path = str(path)
    if path.endswith(".png"):
        with open(path, "wb") as f:
            f.write(png(chart, scale=2))
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(svg(chart))


def mimebundle(chart: alt.TopLevelMixin) -> dict:
    """What a notebook shows for a chart: the Vega-Lite spec, a static SVG, and plain text."""
    return {
        VEGALITE_MIME: spec(chart),
        "image/svg+xml": svg(chart),
        "text/plain": f"<{type(chart).__name__}: an altair chart, drawn offline>",
    }


def show_in(output, chart: alt.TopLevelMixin) -> None:
    """Show `chart` in an ipywidgets `Output`, replacing what it showed.

    It sets the widget's outputs instead of capturing a display with `with output:`: papermill's
    client (nbclient) was seen waiting for ever on a chart captured that way.
    """
    output.outputs = ({"output_type": "display_data", "data": mimebundle(chart), "metadata": {}},)


def _vl_version() -> str:
    major, minor = alt.SCHEMA_VERSION.lstrip("v").split(".")[:2]
    return f"{major}.{minor}"


def enable() -> None:
    """Use the workbench's offline renderer and theme for every altair chart in this kernel."""
    if "workbench" not in alt.renderers.names():
        alt.renderers.register("workbench", lambda spec, **kw: _mime(spec))
    alt.renderers.enable("workbench")
    alt.theme.register("workbench", enable=True)(theme)


def _mime(chart_dict: dict) -> dict:
    # The renderer gets the finished spec of any chart, layered, concatenated or faceted too:
    # draw it as it is (rebuilding a unit `alt.Chart` from it fails for compound charts).
    data = {k: v for k, v in chart_dict.items() if k != "$schema"}
    kinds = {"layer": "LayerChart", "hconcat": "HConcatChart", "vconcat": "VConcatChart",
             "concat": "ConcatChart", "facet": "FacetChart", "repeat": "RepeatChart"}  # fmt: skip
    kind = next((name for key, name in kinds.items() if key in data), "Chart")
    return {
        VEGALITE_MIME: data,
        "image/svg+xml": vlc.vegalite_to_svg(data, vl_version=_vl_version(), allowed_base_urls=[]),
        "text/plain": f"<{kind}: an altair chart, drawn offline>",
    }


def frame(data, max_rows: int = MAX_ROWS) -> pd.DataFrame:
    """Chart data as a DataFrame, refusing more than `max_rows` rows with a hint to aggregate."""
    if isinstance(data, ibis.Table):
        count = int(data.count().execute())
        if count > max_rows:
            from workbench.errors import WorkbenchError

            raise WorkbenchError(
                f"A chart of {count:,} rows is too many to embed in a notebook.",
                f"Charts take at most {max_rows:,} rows.",
                "aggregate first (group_by(...).agg(...)), or use viz.sample(table, n).",
            )
        return data.execute()
    return pd.DataFrame(data)


def sample(data: ibis.Table, n: int = MAX_ROWS, seed: int = 0) -> pd.DataFrame:
    """A repeatable sample of at most `n` rows, for scatter plots of big tables."""
    count = int(data.count().execute())
    if count <= n:
        return data.execute()
    return data.sample(n / count, method="row", seed=seed).limit(n).execute()
