// The jobs page (#jobs) and one job's page (#jobs/NAME): status, records in and out with rates
// from successive polls, watermark, late and dead-letter counts, a chart of throughput, the
// topology drawn, and per-operator figures where GET /jobs/{name} gives `operators`.
"use strict";

(() => {
  const h = (...a) => R.h(...a);
  const watermark = (w) => (w === null || w === undefined ? "—"
    : h("span", { title: `${R.ago(w)} behind now` }, R.time(w)));
  const throughput = (names) => R.chart(names.flatMap((n) => [
    { name: `${n} in`, points: R.rates(`in:${n}`) },
    { name: `${n} out`, points: R.rates(`out:${n}`) },
  ]), { unit: "/s" });

  let chart, jobTable;
  R.pages.jobs = {
    title: "Jobs",
    mount(main, name) {
      if (name !== null) return jobPage.mount(main, name);
      chart = h("div");
      jobTable = h("div");
      main.append(h("h1", {}, "Jobs"), jobTable, h("h2", {}, "Throughput, records per second"),
        chart);
    },
    async refresh(snapshot, name) {
      if (name !== null) return jobPage.refresh(snapshot, name);
      const { jobs } = snapshot;
      jobTable.replaceChildren(R.table(["Job", "Status", "Tasks", "Records in", "In rate",
        "Records out", "Out rate", "Late", "Dead letters", "Watermark"], jobs.map((j) =>
        h("tr", { "data-job": j.name, "data-records-in": j.records_in },
          h("td", {}, h("a", { href: `#jobs/${encodeURIComponent(j.name)}` }, j.name),
            h("div", { class: "muted" }, `${j.inputs.join(", ")} → ${j.outputs.join(", ")}`)),
          h("td", {}, R.status(j.status.state)),
          h("td", { class: "num" }, j.tasks),
          h("td", { class: "num records-in" }, R.num(j.records_in)),
          h("td", { class: "num rate" }, R.rateText(R.rate(`in:${j.name}`))),
          h("td", { class: "num" }, R.num(j.records_out)),
          h("td", { class: "num rate" }, R.rateText(R.rate(`out:${j.name}`))),
          h("td", { class: "num" }, R.num(j.late_records)),
          h("td", { class: "num" }, R.num(j.dead_letters)),
          h("td", { class: "nowrap" }, watermark(j.watermark))))));
      chart.replaceChildren(throughput(jobs.map((j) => j.name)));
    },
  };

  // The <details> are built once per visit, so that a refresh leaves them as the user set them.
  let figures, topology, topologyText, operators, tasks, jobChart, jobText;
  const jobPage = {
    mount(main, name) {
      [figures, topology, topologyText, operators, tasks, jobChart, jobText] =
        [h("div", { class: "cards" }), h("div"), h("pre"), h("div"), h("div"), h("div"), h("pre")];
      main.append(h("h1", {}, h("a", { href: "#jobs" }, "Jobs"), " / ", name), figures,
        h("h2", {}, "Throughput, records per second"), jobChart,
        h("h2", {}, "Topology"), topology, h("details", {}, h("summary", {}, "As text"), topologyText),
        operators, h("h2", {}, "Tasks"), tasks,
        h("details", {}, h("summary", {}, "Job file"), jobText));
    },
    async refresh({ at }, name) {
      const j = await R.api(`/jobs/${encodeURIComponent(name)}`);
      const card = (label, value, key) => h("div", { class: "card", "data-figure": key },
        h("div", { class: "label" }, label), h("div", { class: "value" }, value));
      figures.replaceChildren(
        card("Status", R.status(j.status.state), "status"),
        card("Records in", R.num(j.records_in), "records-in"),
        card("In rate", R.rateText(R.rate(`in:${name}`)), "rate"),
        card("Records out", R.num(j.records_out), "records-out"),
        card("Late records", R.num(j.late_records), "late"),
        card("Dead letters", R.num(j.dead_letters), "dead"),
        card("Watermark (UTC)", watermark(j.watermark), "watermark"),
        card("Commits", R.num(j.commits), "commits"));
      if (j.status.error) figures.append(h("pre", { class: "failure" }, j.status.error));
      jobChart.replaceChildren(throughput([name]));
      // Per-operator figures and rates, when the server gives them.
      const ops = new Map((j.operators ?? []).map((o) => {
        R.record(`op:${name}:${o.name}`, o.records_in, at);
        return [o.name, { ...o, rate: R.rate(`op:${name}:${o.name}`) }];
      }));
      topology.replaceChildren(R.topology(j.topology, ops));
      topologyText.textContent = j.topology;
      operators.replaceChildren(...(ops.size ? [h("h2", {}, "Operators"),
        R.table(["Operator", "Records in", "In rate", "Records out"], [...ops.values()].map((o) =>
          h("tr", { "data-operator": o.name },
            h("td", {}, o.name), h("td", { class: "num" }, R.num(o.records_in)),
            h("td", { class: "num rate" }, R.rateText(o.rate)),
            h("td", { class: "num" }, R.num(o.records_out)))))] : []));
      tasks.replaceChildren(R.table(["Task", "Records in", "Records out", "Late", "Dead letters",
        "Watermark (UTC)", "State entries"], Object.entries(j.task_stats).map(([task, t]) =>
        h("tr", { "data-task": task },
          h("td", {}, task), h("td", { class: "num" }, R.num(t.records_in)),
          h("td", { class: "num" }, R.num(t.records_out)),
          h("td", { class: "num" }, R.num(t.late_records)),
          h("td", { class: "num" }, R.num(t.dead_letters)),
          h("td", { class: "nowrap" }, watermark(t.watermark)),
          h("td", { class: "num" }, R.num(t.state_entries))))));
      jobText.textContent = j.text;
    },
  };
})();
