// A job's topology drawn as boxes: R.topology(text, operators) parses the text `GET
// /jobs/{name}` gives in `topology` (Kafka Streams' TopologyDescription layout, as `runnel
// explain` prints it) and draws each sub-topology top-down, sources first, a node one row
// below its deepest parent, with arrows along its edges. `operators` (name → {records_in,
// records_out, rate}) adds figures to the boxes of the nodes it names. Text it does not
// recognise is left out of the drawing; the caller shows the text as well.
"use strict";

(() => {
  const BOX_W = 290, BOX_H = 62, GAP_X = 24, GAP_Y = 34, PAD = 10;
  const h = (...a) => R.h(...a);

  // [{id, nodes: [{kind, name, detail, kids: [names]}]}] from the description's lines.
  function parse(text) {
    const subs = [];
    let node = null;
    for (const line of text.split("\n")) {
      let m;
      if ((m = line.match(/^\s*Sub-topology:\s*(\S+)/))) {
        subs.push({ id: m[1], nodes: [] });
        node = null;
      } else if ((m = line.match(/^\s*(Source|Processor|Sink):\s*(\S+)\s*(?:\((.*)\))?\s*$/))
        && subs.length) {
        node = { kind: m[1], name: m[2], detail: m[3] ?? "", kids: [] };
        subs[subs.length - 1].nodes.push(node);
      } else if ((m = line.match(/^\s*-->\s*(.+)$/)) && node) {
        node.kids = m[1].split(",").map((s) => s.trim()).filter((s) => s && s !== "none");
      } else if (/^\S/.test(line)) {
        node = null; // "Stores:" and the like end the nodes.
      }
    }
    return subs;
  }

  // Row of each node: 0 for nodes without parents, else one below the deepest parent.
  function rows(nodes) {
    const byName = new Map(nodes.map((n) => [n.name, n]));
    const row = new Map();
    const visit = (n, depth, path) => {
      if (path.has(n.name) || (row.get(n.name) ?? -1) >= depth) return;
      row.set(n.name, depth);
      path.add(n.name);
      for (const k of n.kids) if (byName.has(k)) visit(byName.get(k), depth + 1, path);
      path.delete(n.name);
    };
    const children = new Set(nodes.flatMap((n) => n.kids));
    for (const n of nodes) if (!children.has(n.name)) visit(n, 0, new Set());
    for (const n of nodes) if (!row.has(n.name)) visit(n, 0, new Set());
    return row;
  }

  const clip = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

  function drawSub(sub, operators) {
    const row = rows(sub.nodes);
    const lines = [];
    for (const n of sub.nodes) (lines[row.get(n.name)] ??= []).push(n);
    const width = Math.max(...lines.map((l) => l.length)) * (BOX_W + GAP_X) - GAP_X + 2 * PAD;
    const height = lines.length * (BOX_H + GAP_Y) - GAP_Y + 2 * PAD;
    const at = new Map();
    lines.forEach((l, r) => l.forEach((n, i) => {
      const rowWidth = l.length * (BOX_W + GAP_X) - GAP_X;
      at.set(n.name, { x: (width - rowWidth) / 2 + i * (BOX_W + GAP_X), y: PAD + r * (BOX_H + GAP_Y) });
    }));
    const edges = sub.nodes.flatMap((n) => n.kids.filter((k) => at.has(k)).map((k) => {
      const a = at.get(n.name), b = at.get(k);
      return h("line", {
        x1: a.x + BOX_W / 2, y1: a.y + BOX_H, x2: b.x + BOX_W / 2, y2: b.y - 2,
        class: "edge", "marker-end": `url(#arrow-${sub.id})`,
      });
    }));
    const boxes = sub.nodes.map((n) => {
      const { x, y } = at.get(n.name);
      const op = operators.get(n.name);
      const figures = op ? `in ${R.num(op.records_in)} · out ${R.num(op.records_out)} · ${R.rateText(op.rate)}`
        : n.detail;
      return h("g", { class: `node ${n.kind.toLowerCase()}`, "data-node": n.name },
        h("title", {}, `${n.kind}: ${n.name} (${n.detail})`),
        h("rect", { x, y, width: BOX_W, height: BOX_H, rx: 6 }),
        h("text", { x: x + 8, y: y + 15, class: "kind" }, n.kind),
        h("text", { x: x + 8, y: y + 33, class: "name" }, clip(n.name, 34)),
        h("text", { x: x + 8, y: y + 52, class: "detail" }, clip(figures, 42)));
    });
    return h("svg", { viewBox: `0 0 ${width} ${height}`, width, class: "topology", role: "img" },
      h("defs", {}, h("marker", {
        id: `arrow-${sub.id}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 8, markerHeight: 8,
        orient: "auto-start-reverse",
      }, h("path", { d: "M 0 0 L 10 5 L 0 10 z" }))),
      edges, boxes);
  }

  R.topology = (text, operators = new Map()) => {
    const subs = parse(text ?? "").filter((s) => s.nodes.length);
    return h("div", { class: "topology-drawing" }, subs.map((s) =>
      h("div", { class: "sub" }, h("div", { class: "muted" }, `Sub-topology ${s.id}`),
        drawSub(s, operators))));
  };
})();
