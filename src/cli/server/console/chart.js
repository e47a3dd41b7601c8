// Line charts drawn as SVG: R.chart(series, {unit}) gives a <figure> with the last R.windowMs
// of each series [{name, points: [[ms, value]]}] against a y axis from 0 to a round maximum,
// minutes ticked on the x axis, and a legend of the series' colours.
"use strict";

(() => {
  const W = 800, H = 200, LEFT = 60, RIGHT = 14, TOP = 10, BOTTOM = 24;
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777",
    "#4b5563"];
  const h = (...a) => R.h(...a);

  // The smallest of 1, 2, 5 × 10^k at or above v, so the axis reads in round figures.
  function roundUp(v) {
    if (v <= 0) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    return [1, 2, 5, 10].map((m) => m * p).find((c) => c >= v);
  }
  const axisText = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

  R.chart = (series, { unit = "" } = {}) => {
    const now = Date.now();
    const from = now - R.windowMs;
    const values = series.flatMap((s) => s.points.map((p) => p[1]));
    const max = roundUp(Math.max(0, ...values));
    const x = (t) => LEFT + ((t - from) / R.windowMs) * (W - LEFT - RIGHT);
    const y = (v) => TOP + (1 - v / max) * (H - TOP - BOTTOM);
    const grid = [0, 0.5, 1].map((f) => [
      h("line", { x1: LEFT, x2: W - RIGHT, y1: y(f * max), y2: y(f * max), class: "grid" }),
      h("text", { x: LEFT - 6, y: y(f * max) + 4, class: "axis", "text-anchor": "end" },
        `${axisText.format(f * max)}${unit}`),
    ]);
    const minutes = Math.round(R.windowMs / 60000);
    const ticks = Array.from({ length: minutes + 1 }, (_, i) => {
      const t = from + i * 60000;
      const text = i === minutes ? "now" : `−${minutes - i} min`;
      return h("text", { x: x(t), y: H - 6, class: "axis", "text-anchor": "middle" }, text);
    });
    const lines = series.map((s, i) => {
      const color = COLORS[i % COLORS.length];
      const points = s.points.filter(([t]) => t >= from);
      const last = points[points.length - 1];
      return h("g", { "data-series": s.name },
        h("polyline", {
          points: points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
          fill: "none", stroke: color, "stroke-width": 2,
        }),
        last ? h("circle", { cx: x(last[0]), cy: y(last[1]), r: 3, fill: color }) : null);
    });
    const empty = values.length ? null
      : h("text", { x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle" },
        "waiting for the first figures");
    return h("figure", { class: "chart" },
      h("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" }, grid, ticks, lines, empty),
      h("figcaption", {}, series.map((s, i) => h("span", { class: "legend" },
        h("svg", { viewBox: "0 0 10 10", class: "swatch" },
          h("rect", { width: 10, height: 10, fill: COLORS[i % COLORS.length] })), s.name))));
  };
})();
