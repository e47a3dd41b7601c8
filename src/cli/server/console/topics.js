// The topics page (#topics) and one topic's page (#topics/NAME): partitions, sizes, rates from
// successive polls, and the record browser over GET /api/topics/{name}/records.
"use strict";

(() => {
  const h = (...a) => R.h(...a);
  const link = (name) => h("a", { href: `#topics/${encodeURIComponent(name)}` }, name);

  let topicTable;
  R.pages.topics = {
    title: "Topics",
    mount(main, name) {
      if (name !== null) return browserPage.mount(main, name);
      topicTable = h("div");
      main.append(h("h1", {}, "Topics"), topicTable);
    },
    async refresh(snapshot, name) {
      if (name !== null) return browserPage.refresh(snapshot, name);
      // Users' topics first, the log's own after them.
      const topics = [...snapshot.topics].sort((a, b) => a.internal - b.internal);
      topicTable.replaceChildren(R.table(
        ["Topic", "Partitions", "Size", "Segments", "End offsets", "Appended"],
        topics.map((t) => h("tr", { "data-topic": t.name, class: t.internal ? "internal" : null },
          h("td", {}, link(t.name), t.internal ? h("span", { class: "badge" }, "internal") : null),
          h("td", { class: "num" }, t.partitions.length),
          h("td", { class: "num" }, R.bytes(t.size_bytes)),
          h("td", { class: "num" }, R.num(t.partitions.reduce((n, p) => n + p.segments, 0))),
          h("td", { class: "num" }, R.num(t.end_offset_total)),
          h("td", { class: "num rate" }, R.rateText(R.rate(`topic:${t.name}`)))))));
    },
  };

  // One topic: its partitions, refreshed by the poll, and the record browser, which reads only
  // when asked (so what the user is looking at stays put).
  let partitionTable, form, results, shownTopic, firstPage, nextOffset;
  const browserPage = {
    mount(main, name) {
      shownTopic = name;
      partitionTable = h("div");
      results = h("div", { id: "records" });
      form = h("form", { class: "browser", onsubmit: (e) => { e.preventDefault(); load(); } },
        h("label", {}, "Partition ", h("select", { name: "partition" })),
        h("label", {}, "Seek by ", h("select", { name: "by", onchange: switchSeek },
          h("option", { value: "offset" }, "offset"),
          h("option", { value: "timestamp" }, "time (UTC)"))),
        h("input", { name: "offset", type: "number", min: 0, placeholder: "log start" }),
        h("input", { name: "time", type: "datetime-local", step: "0.001", hidden: true }),
        h("label", {}, "Records ", h("select", { name: "limit" },
          [20, 50, 100, 500].map((n) => h("option", { value: n, selected: n === 50 }, n)))),
        h("button", { type: "submit" }, "Read"),
        h("button", { type: "button", name: "next", onclick: () => load(nextOffset), disabled: true },
          "Next page ›"));
      main.append(h("h1", {}, h("a", { href: "#topics" }, "Topics"), " / ", name),
        partitionTable, h("h2", {}, "Records"), form, results);
      firstPage = null;
    },
    async refresh({ topics }, name) {
      const t = topics.find((x) => x.name === name);
      if (!t) throw new Error(`topic ${name} does not exist (any more)`);
      partitionTable.replaceChildren(R.table(
        ["Partition", "Log start", "End offset", "Records", "Size", "Segments", "Appended"],
        t.partitions.map((p) => h("tr", { "data-partition": p.partition },
          h("td", { class: "num" }, p.partition),
          h("td", { class: "num" }, R.num(p.start_offset)),
          h("td", { class: "num" }, R.num(p.end_offset)),
          h("td", { class: "num" }, R.num(p.end_offset - p.start_offset)),
          h("td", { class: "num" }, R.bytes(p.size_bytes)),
          h("td", { class: "num" }, R.num(p.segments)),
          h("td", { class: "num rate" }, R.rateText(R.rate(`partition:${name}:${p.partition}`)))))));
      const select = form.elements.partition;
      if (select.options.length !== t.partitions.length) {
        select.replaceChildren(...t.partitions.map((p) => h("option", { value: p.partition },
          p.partition)));
      }
      // The first visit shows the first page of partition 0 with the partitions.
      firstPage ??= load();
      await firstPage;
    },
  };

  function switchSeek() {
    const byTime = form.elements.by.value === "timestamp";
    form.elements.offset.hidden = byTime;
    form.elements.time.hidden = !byTime;
  }

  // Reads a page at `offset`, or where the form says.
  async function load(offset) {
    const f = form.elements;
    const query = new URLSearchParams({ partition: f.partition.value || 0, limit: f.limit.value });
    if (offset !== undefined) query.set("offset", offset);
    else if (f.by.value === "timestamp" && f.time.value) {
      query.set("timestamp", Date.parse(f.time.value + "Z"));
    } else if (f.by.value === "offset" && f.offset.value !== "") query.set("offset", f.offset.value);
    const topic = shownTopic;
    let page;
    try {
      page = await R.api(`/api/topics/${encodeURIComponent(topic)}/records?${query}`);
      R.clear("records");
    } catch (e) {
      R.fail("records", e.message);
      return;
    }
    if (topic !== shownTopic) return;
    nextOffset = page.next_offset;
    f.next.disabled = page.next_offset >= page.end_offset;
    const rs = page.records;
    const span = rs.length ? `offsets ${R.num(rs[0].offset)} to ${R.num(rs[rs.length - 1].offset)}`
      : "no records from there";
    results.replaceChildren(
      h("p", { class: "muted", "data-next-offset": page.next_offset },
        `Partition ${page.partition}: ${span}; the partition holds offsets ${R.num(page.start_offset)} to ${R.num(page.end_offset)} (end, exclusive).`),
      R.table(["Offset", "Timestamp (UTC)", "Key", "Value", "Headers"], rs.map((r) =>
        h("tr", { "data-offset": r.offset },
          h("td", { class: "num" }, r.offset),
          h("td", { class: "nowrap" }, R.time(r.timestamp)),
          h("td", {}, bytes(r.key, r.key_encoding)),
          h("td", { class: "value" }, bytes(r.value, r.value_encoding)),
          h("td", {}, r.headers.map((x) => h("div", {}, `${x.key}: `,
            bytes(x.value, x.value_encoding))))))));
  }

  const bytes = (text, encoding) => (text === null ? h("span", { class: "muted" }, "null")
    : [encoding === "base64" ? h("span", { class: "badge" }, "base64") : null,
      h("code", {}, text)]);
})();
