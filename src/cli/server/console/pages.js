// The overview, consumer groups and connectors pages (topics.js and jobs.js hold the others).
"use strict";

(() => {
  const h = (...a) => R.h(...a);
  const card = (label, value, key, note) => h("div", { class: "card", "data-figure": key },
    h("div", { class: "label" }, label), h("div", { class: "value" }, value),
    note ? h("div", { class: "muted" }, note) : null);

  // Samples of /metrics' text for one metric name (without labels, which these lack).
  function metric(text, name) {
    const m = text.match(new RegExp(`^${name}(?:\\{\\})? (\\S+)$`, "m"));
    return m ? Number(m[1]) : null;
  }

  // Connectors with their status: Kafka Connect's `?expand=status` map where the server gives
  // it, else the names and one status request each.
  R.connectors = async () => {
    const listed = await R.api("/connectors?expand=status");
    if (!Array.isArray(listed)) return Object.values(listed).map((c) => c.status);
    return Promise.all(listed.map((n) => R.api(`/connectors/${encodeURIComponent(n)}/status`)));
  };

  let cards;
  R.pages.overview = {
    title: "Overview",
    mount(main) {
      cards = h("div", { class: "cards" });
      main.append(h("h1", {}, "Overview"), cards);
    },
    async refresh({ topics, groups, jobs, at }) {
      const [metrics, connectors] = await Promise.all([R.api("/metrics"), R.connectors()]);
      const cpu = metric(metrics, "runnel_process_cpu_seconds_total");
      if (cpu !== null) R.record("cpu", cpu, at);
      const rss = metric(metrics, "runnel_process_resident_memory_bytes");
      const connections = metric(metrics, "runnel_broker_connections");
      const user = topics.filter((t) => !t.internal);
      const partitions = user.reduce((n, t) => n + t.partitions.length, 0);
      const rate = user.reduce((r, t) => r + (R.rate(`topic:${t.name}`) ?? 0), 0);
      const running = jobs.filter((j) => j.status.state === "RUNNING").length;
      const up = connectors.filter((c) => c.connector.state === "RUNNING").length;
      const lag = groups.reduce((n, g) => n + g.lag, 0);
      const cpuRate = R.rate("cpu");
      cards.replaceChildren(
        card("Topics", R.num(user.length), "topics",
          `${R.num(partitions)} partitions, ${topics.length - user.length} internal topics`),
        card("Stored", R.bytes(user.reduce((n, t) => n + t.size_bytes, 0)), "bytes"),
        card("Appended", R.rateText(rate), "rate", "records per second, all topics"),
        card("Consumer groups", R.num(groups.length), "groups", `total lag ${R.num(lag)}`),
        card("Jobs", `${running} / ${jobs.length}`, "jobs", "running / all"),
        card("Connectors", `${up} / ${connectors.length}`, "connectors", "running / all"),
        card("Memory", rss === null ? "—" : R.bytes(rss), "rss", "resident"),
        card("CPU", cpuRate === null ? "—" : `${(cpuRate * 100).toFixed(1)} %`, "cpu",
          "of one core"),
        card("Kafka connections", R.num(connections), "connections"));
    },
  };

  let lagChart, groupList;
  R.pages.groups = {
    title: "Consumer groups",
    mount(main) {
      lagChart = h("div");
      groupList = h("div");
      main.append(h("h1", {}, "Consumer groups"), h("h2", {}, "Total lag per group"), lagChart,
        groupList);
    },
    async refresh({ groups }) {
      lagChart.replaceChildren(R.chart(groups.map((g) => ({
        name: g.group, points: R.series(`lag:${g.group}`),
      }))));
      groupList.replaceChildren(...groups.map((g) => h("section", {
        class: "group", "data-group": g.group, "data-lag": g.lag,
      },
      h("h2", {}, g.group, " ", R.status(g.state)),
      h("p", { class: "muted" }, `${g.members} members · total lag `,
        h("strong", { class: "lag-total" }, R.num(g.lag))),
      R.table(["Topic", "Partition", "Committed", "End offset", "Lag"], g.partitions.map((p) =>
        h("tr", { "data-partition": `${p.topic}:${p.partition}`, "data-lag": p.lag },
          h("td", {}, h("a", { href: `#topics/${encodeURIComponent(p.topic)}` }, p.topic)),
          h("td", { class: "num" }, p.partition),
          h("td", { class: "num" }, R.num(p.committed)),
          h("td", { class: "num" }, R.num(p.end_offset)),
          h("td", { class: "num lag" }, R.num(p.lag))))))));
      if (!groups.length) groupList.append(h("p", { class: "muted" }, "No consumer groups yet."));
    },
  };

  let connectorTable;
  // `query`: Kafka Connect's restart restarts the connector alone unless asked for its tasks.
  const action = (name, verb, method, query = "") => h("button", {
    type: "button",
    "data-action": verb,
    onclick: async (e) => {
      e.target.disabled = true;
      try {
        await R.api(`/connectors/${encodeURIComponent(name)}/${verb}${query}`, { method });
        R.clear(`action:${name}`);
      } catch (err) {
        R.fail(`action:${name}`, err.message);
      }
      R.tick();
    },
  }, verb[0].toUpperCase() + verb.slice(1));

  R.pages.connectors = {
    title: "Connectors",
    mount(main) {
      connectorTable = h("div");
      main.append(h("h1", {}, "Connectors"), connectorTable);
    },
    async refresh() {
      const connectors = await R.connectors();
      connectorTable.replaceChildren(R.table(["Connector", "Type", "State", "Tasks", ""],
        connectors.map((c) => h("tr", { "data-connector": c.name, "data-state": c.connector.state },
          h("td", {}, c.name),
          h("td", {}, c.type),
          h("td", {}, R.status(c.connector.state)),
          h("td", {}, c.tasks.map((t) => h("div", {}, `task ${t.id} `, R.status(t.state),
            t.trace ? h("details", {}, h("summary", {}, "error"), h("pre", {}, t.trace)) : null))),
          h("td", { class: "actions" }, action(c.name, "pause", "PUT"),
            action(c.name, "resume", "PUT"), action(c.name, "restart", "POST", "?includeTasks=true"))))));
    },
  };
})();
