// The console's core: the token, requests, error reporting, DOM and number helpers, the
// history of polled figures (for rates and charts), and the router that mounts a page and
// refreshes it from one poll every POLL_MS.
//
// A page is registered as R.pages[name] = {title, mount(main, arg), refresh(snapshot, arg)}:
// `mount` builds its static parts once per visit, `refresh` (async) updates them from each
// poll's snapshot {topics, groups, jobs, at}. The route is the hash: #name or #name/arg.
// After a page's first refresh completes, body[data-ready] is its name (tests wait for it).
"use strict";

const R = { pages: {} };

(() => {
  const POLL_MS = 2000;
  // Charts show this much history; rates are taken over RATE_MS.
  const WINDOW_MS = 5 * 60 * 1000;
  const RATE_MS = 10 * 1000;

  // Problems go into #errors, visible on every page. Keyed ones (a failing poll) are replaced
  // by the next report under the key and cleared when it succeeds again.
  const errors = () => document.getElementById("errors");
  R.fail = (key, message) => {
    const list = errors();
    const old = key && list.querySelector(`[data-key="${CSS.escape(key)}"]`);
    // Built by hand: this must work before anything else in this file has run.
    const line = document.createElement("div");
    if (key) line.dataset.key = key;
    line.textContent = message;
    if (old) old.replaceWith(line); else list.append(line);
  };
  R.clear = (key) => errors().querySelector(`[data-key="${CSS.escape(key)}"]`)?.remove();
  window.onerror = (message, source, line, column) => {
    R.fail(null, `${message} (${source}:${line}:${column})`);
  };
  window.addEventListener("unhandledrejection", (e) => {
    R.fail(null, `unhandled: ${e.reason?.message ?? e.reason}`);
  });

  // The token comes once in the page's URL (?token=...) and is kept for the tab's life only,
  // out of the address bar, history and any link copied from it.
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem("runnel-token", params.get("token"));
    params.delete("token");
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? "?" + query : "") + location.hash);
  }
  const token = sessionStorage.getItem("runnel-token");

  // JSON (or text) of a request to this server; a non-2xx answer throws with its message.
  R.api = async (path, options = {}) => {
    const headers = { Accept: "application/json, text/plain" };
    if (token) headers.Authorization = "Bearer " + token;
    const res = await fetch(path, { ...options, headers });
    const text = await res.text();
    if (!res.ok) {
      let message = text;
      try { message = JSON.parse(text).message ?? text; } catch { /* not JSON: as it is */ }
      const hint = res.status === 401 ? " (open the console as /console/?token=TOKEN)" : "";
      throw new Error(`${options.method ?? "GET"} ${path}: ${res.status} ${message}${hint}`);
    }
    const json = res.headers.get("content-type")?.startsWith("application/json");
    return json && text ? JSON.parse(text) : text;
  };

  // h("td", {class: "num", "data-x": 1, onclick: f}, child, ...): children are nodes, text,
  // numbers, arrays of those, or null (skipped).
  R.h = (tag, attrs = {}, ...children) => {
    const svg = ["svg", "g", "rect", "line", "polyline", "path", "text", "title", "marker",
      "defs", "circle"].includes(tag);
    const e = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
      : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    e.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined)
      .map((c) => (c instanceof Node ? c : String(c))));
    return e;
  };

  const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  R.num = (n) => (n === null || n === undefined ? "—" : integer.format(n));
  R.rateText = (r) => (r === null ? "—" : `${decimal.format(r)}/s`);
  R.bytes = (n) => {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${i ? decimal.format(n) : n} ${units[i]}`;
  };
  // Times are shown, and typed for seeks, in UTC.
  R.time = (ms) => (ms === null || ms === undefined ? "—"
    : new Date(ms).toISOString().replace("T", " ").replace("Z", ""));
  R.ago = (ms) => {
    const s = Math.max(0, (Date.now() - ms) / 1000);
    return s < 120 ? `${decimal.format(s)} s` : s < 7200 ? `${decimal.format(s / 60)} min`
      : `${decimal.format(s / 3600)} h`;
  };
  R.status = (state) => R.h("span", { class: `status ${String(state).toLowerCase()}` }, state);
  R.table = (headings, rows, attrs = {}) => R.h("table", attrs,
    R.h("thead", {}, R.h("tr", {}, headings.map((x) => R.h("th", {}, x)))),
    R.h("tbody", {}, rows.length ? rows
      : R.h("tr", {}, R.h("td", { colspan: headings.length, class: "muted" }, "none"))));

  // Figures polled over time: key → [[ms, value]], the last WINDOW_MS of them.
  const figures = new Map();
  R.record = (key, value, at) => {
    const s = figures.get(key) ?? [];
    s.push([at, value]);
    while (s.length && s[0][0] < at - WINDOW_MS) s.shift();
    figures.set(key, s);
  };
  R.series = (key) => figures.get(key) ?? [];
  // Per second from sample a to sample b of a counter; one that went down (a restarted job)
  // counts from its new value.
  const perSecond = ([t0, v0], [t1, v1]) =>
    ((v1 >= v0 ? v1 - v0 : v1) * 1000) / Math.max(1, t1 - t0);
  // A counter's rate over its last RATE_MS of samples; null before two samples.
  R.rate = (key) => {
    const s = R.series(key);
    if (s.length < 2) return null;
    const last = s.length - 1;
    const first = s.findIndex(([t]) => t >= s[last][0] - RATE_MS);
    return perSecond(s[Math.min(first, last - 1)], s[last]);
  };
  // A counter's samples as per-second rates between successive samples, for charts.
  R.rates = (key) => {
    const s = R.series(key);
    return s.slice(1).map((b, i) => [b[0], perSecond(s[i], b)]);
  };
  R.windowMs = WINDOW_MS;

  let route = null;
  let timer = null;
  let running = false;
  let again = false;

  async function poll() {
    const [topics, groups, jobs] = await Promise.all(
      [R.api("/api/topics"), R.api("/api/groups"), R.api("/jobs")]);
    const at = Date.now();
    for (const t of topics) {
      R.record(`topic:${t.name}`, t.end_offset_total, at);
      for (const p of t.partitions) R.record(`partition:${t.name}:${p.partition}`, p.end_offset, at);
    }
    for (const g of groups) R.record(`lag:${g.group}`, g.lag, at);
    for (const j of jobs) {
      R.record(`in:${j.name}`, j.records_in, at);
      R.record(`out:${j.name}`, j.records_out, at);
    }
    return { topics, groups, jobs, at };
  }

  // One poll and refresh of the current page, then the next in POLL_MS; a call while one runs
  // makes the next run at once instead (a route change or a button wants fresh figures now).
  R.tick = async () => {
    if (running) { again = true; return; }
    running = true;
    clearTimeout(timer);
    const shown = route;
    try {
      const snapshot = await poll();
      if (shown === route) {
        await shown.page.refresh(snapshot, shown.arg);
        if (shown === route) document.body.dataset.ready = shown.name;
      }
      document.getElementById("updated").textContent = `updated ${R.time(snapshot.at)} UTC`;
      R.clear("poll");
    } catch (e) {
      R.fail("poll", e.message);
    } finally {
      running = false;
      timer = setTimeout(R.tick, again ? 0 : POLL_MS);
      again = false;
    }
  };

  function navigate() {
    const [name, ...rest] = (location.hash.slice(1) || "overview").split("/");
    const page = R.pages[name];
    if (!page) { location.hash = "#overview"; return; }
    route = { name, arg: rest.length ? decodeURIComponent(rest.join("/")) : null, page };
    delete document.body.dataset.ready;
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("active", a.getAttribute("href") === `#${name}`);
    }
    const main = document.getElementById("page");
    main.replaceChildren();
    page.mount(main, route.arg);
    document.title = `${page.title} · Runnel`;
    R.tick();
  }
  window.addEventListener("hashchange", navigate);
  document.addEventListener("DOMContentLoaded", navigate);
})();
