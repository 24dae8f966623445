// Line charts over the node's /stats series, drawn with uPlot (installed from npm by `make ui`
// and served by the node; loaded as a classic script, so it is the global `uPlot`).

const COLOURS = ["#2456c9", "#c2410c", "#15803d", "#7c3aed"];

// A chart of `lines` ({label, values}) against block heights `xs`, into `box` (replaced).
export function lineChart(box, title, xs, lines, format) {
  box.replaceChildren();
  const head = document.createElement("h3");
  head.textContent = title;
  box.append(head);
  const width = Math.max(260, box.clientWidth - 12);
  const series = [{ label: "height" }, ...lines.map((line, i) => ({
    label: line.label, stroke: COLOURS[i % COLOURS.length], width: 2,
    value: (u, v) => (v == null ? "" : format(v)),
  }))];
  const opts = {
    width, height: 180, series, legend: { live: true },
    scales: { x: { time: false } },
    axes: [{ label: "block" }, { values: (u, vals) => vals.map(format), size: 90 }],
  };
  return new globalThis.uPlot(opts, [xs, ...lines.map((l) => l.values)], box);
}

// Per-period rates from a cumulative series: the change over each bucket, scaled from
// `bucket` blocks to one period of `period` blocks (a day on the main network).
export function perPeriod(points, index, bucket, period) {
  const out = [null];
  for (let i = 1; i < points.length; i++) {
    const blocks = points[i][0] - points[i - 1][0] || bucket;
    out.push(((points[i][index] - points[i - 1][index]) * period) / blocks);
  }
  return out;
}
