"""A plotly figure the user can click, for the app: ``gr.Plot`` fires no click events, so this
draws the figure in a ``gr.HTML`` with plotly.js (served from the installed ``plotly``
package: nothing is fetched from a CDN) and sends a click on a point to Python as the
component's ``click`` event, carrying the point's ``customdata`` as ``evt.point``."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import plotly

PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"

DRAW = """
const draw = () => {
  const div = element.querySelector('.clickable-plot');
  if (!div || !props.value || !window.Plotly) return;
  const figure = JSON.parse(props.value);
  window.Plotly.newPlot(div, figure.data, figure.layout, {displaylogo: false, responsive: true}).then(() => {
    div.removeAllListeners && div.removeAllListeners('plotly_click');
    div.on('plotly_click', (event) => trigger('click', {point: event.points[0].customdata}));
  });
};
const whenReady = () => (window.Plotly ? draw() : setTimeout(whenReady, 50));
whenReady();
watch('value', draw);
"""


def clickable_plot(figure_json: str | None, label: str, elem_id: str) -> gr.HTML:
    """A ``gr.HTML`` showing a plotly figure given as JSON (``fig.to_json()``); its value is that JSON."""
    gr.set_static_paths([PLOTLY_JS.parent])
    return gr.HTML(figure_json, label=label, show_label=True, elem_id=elem_id,
                   html_template="<div class='clickable-plot'></div>", js_on_load=DRAW,
                   head=f"<script src='/gradio_api/file={PLOTLY_JS}'></script>")


def clicked_point(evt: gr.EventData) -> int:
    """The ``customdata`` of the clicked point (an integer id)."""
    return int(evt.point)
