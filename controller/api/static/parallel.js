/* Parallel coordinates drawn as SVG line traces, not as plotly's WebGL "parcoords": that
   trace compiles its shaders with eval (which the pages' Content-Security-Policy forbids)
   and needs WebGL (which remote desktops on lab PCs often lack). Each axis is a vertical
   line with its range written at its ends; each experiment a line across the axes,
   coloured by the first objective (one trace per colour band, so thousands of
   experiments stay a dozen traces). The axis names are the x axis' tick labels above the
   plot, so plotly's automargin keeps them inside the chart; the colour bar stands in the
   right margin, clear of the last axis. */
"use strict";
const sdlabParallel = (() => {
  const VIRIDIS = ["#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39",
    "#fde725"];

  function fmt(v) {
    return typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(3)) : String(v);
  }

  /* a long axis name on two or three lines, broken after "_", "-" or a space */
  function wrap(label) {
    if (label.length <= 10) return label;
    return label.replace(/([_\- ])/g, "$1\u0001").split("\u0001").reduce((lines, part) => {
      const last = lines[lines.length - 1];
      if (last && (last + part).length <= 12) lines[lines.length - 1] = last + part;
      else lines.push(part);
      return lines;
    }, []).join("<br>");
  }

  /* one axis: its name, how to place a value on it (0..1), and the labels along it */
  function axis(label, values) {
    const nums = values.filter((v) => typeof v === "number" && isFinite(v));
    if (nums.length === values.filter((v) => v !== null && v !== undefined).length) {
      const lo = Math.min(...nums), hi = Math.max(...nums);
      const at = (v) => (typeof v !== "number" ? null : hi > lo ? (v - lo) / (hi - lo) : 0.5);
      return { label, at, marks: hi > lo ? [[0, fmt(lo)], [1, fmt(hi)]] : [[0.5, fmt(lo)]] };
    }
    const cats = [...new Set(values.map(String))].sort();
    const at = (v) => (cats.length > 1 ? cats.indexOf(String(v)) / (cats.length - 1) : 0.5);
    return { label, at, marks: cats.map((c) => [at(c), c]) };
  }

  /**
   * @param {Array} done completed experiments ({id, parameters, objectives})
   * @param {string[]} names parameter names
   * @param {string|undefined} obj the objective that colours the lines (last axis too)
   * @returns {{traces: Array, layout: Object}} for Plotly.react
   */
  function build(done, names, obj) {
    const axes = names.map((n) => axis(n, done.map((p) => p.parameters[n])));
    const colour = done.map((p) => (obj ? p.objectives[obj] : null));
    if (obj) axes.push(axis(obj, colour));
    const D = axes.length;
    const cs = colour.filter((v) => typeof v === "number");
    const cmin = cs.length ? Math.min(...cs) : 0, cmax = cs.length ? Math.max(...cs) : 1;
    const band = (v) => (typeof v !== "number" || cmax <= cmin ? 0
      : Math.min(VIRIDIS.length - 1, Math.floor(((v - cmin) / (cmax - cmin)) * VIRIDIS.length)));
    const bands = VIRIDIS.map(() => ({ x: [], y: [], text: [] }));
    done.forEach((p, i) => {
      const b = bands[band(colour[i])];
      axes.forEach((a, k) => {
        const v = k < names.length ? p.parameters[names[k]] : colour[i];
        b.x.push(k); b.y.push(a.at(v)); b.text.push("experiment " + p.id + ": " + a.label + " = " + fmt(v));
      });
      b.x.push(null); b.y.push(null); b.text.push("");
    });
    const traces = bands.map((b, i) => ({ type: "scatter", mode: "lines", x: b.x, y: b.y,
      text: b.text, hoverinfo: "text", showlegend: false, connectgaps: false,
      line: { color: VIRIDIS[i], width: 1.5 }, opacity: 0.8 })).filter((t) => t.x.length);
    if (obj && cs.length) {  // carries the colour bar only
      traces.push({ type: "scatter", mode: "markers", x: [0, 0], y: [0, 0], hoverinfo: "skip",
        showlegend: false, marker: { opacity: 0, color: [cmin, cmax], cmin, cmax,
          colorscale: VIRIDIS.map((c, i) => [i / (VIRIDIS.length - 1), c]), showscale: true,
          colorbar: { x: 1.02, xanchor: "left", thickness: 12,
            title: { text: obj, side: "right" } } } });
    }
    const shapes = axes.map((_, k) => ({ type: "line", x0: k, x1: k, y0: 0, y1: 1,
      line: { color: "#444", width: 1 }, layer: "above" }));
    const annotations = [];
    axes.forEach((a, k) => {
      for (const [y, text] of a.marks) {
        const last = k === D - 1;
        annotations.push({ x: k, y, text, showarrow: false, xanchor: last ? "right" : "left",
          xshift: last ? -4 : 4, font: { size: 10, color: "#444" }, bgcolor: "rgba(255,255,255,.7)" });
      }
    });
    const layout = {
      margin: { t: 10, r: 20, b: 20, l: 20 }, height: 320, autosize: true, showlegend: false,
      xaxis: { tickvals: axes.map((_, k) => k), ticktext: axes.map((a) => wrap(a.label)), side: "top",
        tickangle: 0, tickfont: { size: D > 4 ? 10 : 11 }, ticklabeloverflow: "allow",
        range: [-0.4, D - 0.6], showgrid: false, zeroline: false, fixedrange: true,
        automargin: true, ticks: "" },
      yaxis: { range: [-0.06, 1.06], visible: false, fixedrange: true },
      shapes, annotations, hovermode: "closest",
    };
    return { traces, layout };
  }

  return { build };
})();
