// FinOps dashboard: fetches the /finops/*/ JSON endpoints every few seconds and draws SVG charts.
// Plain JS, no dependencies, no network access beyond this server. Text from the data is always
// set with textContent (service and unit names come from events), never parsed as HTML.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#db2777", "#ca8a04", "#475569"];
  const body = document.body;
  const REFRESH_MS = Math.max(1000, parseInt(body.dataset.refreshMs, 10) || 5000);
  const params = new URLSearchParams(window.location.search);
  const HOURS = params.get("hours") || "24";
  const colours = new Map();

  function colour(unit) {
    if (!colours.has(unit)) colours.set(unit, PALETTE[colours.size % PALETTE.length]);
    return colours.get(unit);
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function title(node, text) {
    node.appendChild(svgEl("title", {}, text));
    return node;
  }

  const money = (v) => (v === null || v === undefined || v === "" ? "–" : "$" + Number(v).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
  const pct = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits === undefined ? 1 : digits) + " %");
  const t = (iso) => (iso ? iso.slice(0, 16).replace("T", " ") : "–");
  const ms = (iso) => Date.parse(iso);

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 1) return Math.round(value * 1000) + " ms";
    if (value < 120) return value.toFixed(1) + " s";
    if (value < 7200) return Math.round(value / 60) + " min";
    return (value / 3600).toFixed(1) + " h";
  }

  function niceStep(range, target) {
    const raw = range / Math.max(1, target);
    const mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
    const norm = raw / mag;
    return (norm >= 5 ? 10 : norm >= 2 ? 5 : norm >= 1 ? 2 : 1) * mag;
  }

  function clear(id) {
    const node = document.getElementById(id);
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  // ---- KPIs ---------------------------------------------------------------------------------
  function renderKpis(k, dead) {
    const root = clear("kpis");
    const lat = k.detection_latency_ms || {};
    const attr = k.cost_attribution || {};
    const fe = k.forecast_error;
    const items = [
      ["Detection latency p50", lat.p50 === null ? "–" : seconds(lat.p50 / 1000), "p95 " + (lat.p95 === null ? "–" : seconds(lat.p95 / 1000)) + " · " + (lat.samples || 0) + " alerts"],
      ["Cost attributed", attr.allocated_share === null || attr.allocated_share === undefined ? "–" : pct(attr.allocated_share * 100), money(attr.unallocated_cost) + " unallocated (24 h)"],
      ["ROI freshness", seconds(k.roi_freshness_seconds), "newest window " + t(k.roi_newest_window_end)],
      ["Forecast error", fe ? pct(fe.mape_percent) : "n/a", fe ? "MAPE, " + fe.holdout_days + " of " + fe.days + " days held out" : "needs 8+ whole days"],
      ["Open anomalies", k.open_anomalies, "", k.open_anomalies > 0 ? "bad" : "ok"],
      ["Savings / month", money(k.monthly_saving_total), "from recommendations"],
      ["Dead letters", dead, "rejected input records", dead > 0 ? "bad" : "ok"],
    ];
    for (const [label, value, sub, cls] of items) {
      const box = el("div", { class: "kpi " + (cls || "") });
      box.appendChild(el("div", { class: "label" }, label));
      box.appendChild(el("div", { class: "value" }, value));
      box.appendChild(el("div", { class: "sub" }, sub));
      root.appendChild(box);
    }
  }

  // ---- cost per unit over time, anomalies marked -------------------------------------------------
  function anomalyUnit(a) {
    if (a.business_unit && a.business_unit !== "*") return a.business_unit;
    const d = (a.drivers || []).find((x) => x.dimension === "business_unit");
    return d ? d.value : null;
  }

  function renderCost(w, anomalies) {
    const root = clear("cost-chart");
    const legend = clear("cost-legend");
    document.getElementById("cost-range").textContent = w.as_of ? "last " + w.hours + " h to " + t(w.as_of) + " UTC" : "";
    if (!w.windows.length) return;
    const series = new Map();
    for (const row of w.windows) {
      if (!series.has(row.business_unit)) series.set(row.business_unit, []);
      series.get(row.business_unit).push([ms(row.window_start), Number(row.total_cost)]);
    }
    const W = 1200, H = 340, L = 64, R = 16, T = 12, B = 30;
    const xs = w.windows.map((r) => ms(r.window_start));
    const x0 = Math.min(...xs), x1 = Math.max(Math.max(...xs), x0 + 1);
    const yMax = Math.max(...w.windows.map((r) => Number(r.total_cost)), 0.01) * 1.1;
    const X = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
    const Y = (v) => T + (1 - v / yMax) * (H - T - B);
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "cost per business unit over time" });
    const step = niceStep(yMax, 5);
    for (let v = 0; v <= yMax; v += step) {
      svg.appendChild(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: Y(v), y2: Y(v) }));
      svg.appendChild(svgEl("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end" }, money(v)));
    }
    const span = x1 - x0;
    const tStep = [300e3, 900e3, 1800e3, 3600e3, 7200e3, 10800e3, 21600e3, 43200e3, 86400e3].find((s) => span / s <= 10) || 86400e3;
    for (let v = Math.ceil(x0 / tStep) * tStep; v <= x1; v += tStep) {
      const d = new Date(v).toISOString();
      svg.appendChild(svgEl("line", { class: "axis", x1: X(v), x2: X(v), y1: H - B, y2: H - B + 4 }));
      svg.appendChild(svgEl("text", { x: X(v), y: H - B + 16, "text-anchor": "middle" }, span > 86400e3 ? d.slice(5, 16).replace("T", " ") : d.slice(11, 16)));
    }
    svg.appendChild(svgEl("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    for (const [unit, points] of series) {
      points.sort((a, b) => a[0] - b[0]);
      const d = points.map((p, i) => (i ? "L" : "M") + X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join("");
      svg.appendChild(title(svgEl("path", { d, fill: "none", stroke: colour(unit), "stroke-width": 2, class: "series", "data-unit": unit }), unit));
      const item = el("span");
      item.appendChild(el("span", { class: "swatch", style: "background:" + colour(unit) }));
      item.appendChild(document.createTextNode(unit));
      legend.appendChild(item);
    }
    // anomalies: one marker per (unit, window), on that unit's line
    const marks = new Map();
    for (const a of anomalies) {
      const unit = anomalyUnit(a);
      const at = ms(a.first_seen || a.window_start);
      if (!unit || !series.has(unit) || at < x0 || at > x1) continue;
      const key = unit + "|" + at;
      if (!marks.has(key)) marks.set(key, { unit, at, text: [] });
      marks.get(key).text.push(`${a.severity} ${a.service} (${a.series}) ${a.status}: ${money(a.current_cost)} vs ${money(a.historical_average)} expected`);
    }
    for (const m of marks.values()) {
      const pts = series.get(m.unit);
      let best = pts[0];
      for (const p of pts) if (p[0] <= m.at) best = p; // the window holding the anomaly (points sorted)
      svg.appendChild(svgEl("line", { class: "anomaly-line", x1: X(best[0]), x2: X(best[0]), y1: T, y2: H - B }));
      const dot = svgEl("circle", { class: "anomaly", cx: X(best[0]), cy: Y(best[1]), r: 6, "data-unit": m.unit });
      svg.appendChild(title(dot, m.unit + " " + t(new Date(m.at).toISOString()) + "\n" + m.text.join("\n")));
    }
    if (marks.size) {
      const item = el("span");
      item.appendChild(el("span", { class: "swatch", style: "background:#dc2626;border-radius:50%" }));
      item.appendChild(document.createTextNode("anomaly"));
      legend.appendChild(item);
    }
    root.appendChild(svg);
  }

  // ---- horizontal bar charts -------------------------------------------------------------------
  function barFrame(rows, rowH) {
    const W = 560, H = 24 + rows * rowH;
    return { W, H, svg: svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" }) };
  }

  function compact(v) {
    const n = Number(v);
    if (!isFinite(n)) return "–";
    const abs = Math.abs(n);
    const text = abs >= 1e6 ? (n / 1e6).toFixed(1) + "M" : abs >= 1e4 ? (n / 1e3).toFixed(1) + "k" : n.toFixed(abs >= 100 ? 0 : 2);
    return "$" + text;
  }

  function renderRoi(r) {
    const root = clear("roi-chart");
    document.getElementById("roi-range").textContent = r.as_of ? "last " + r.hours + " h" : "";
    const units = r.units.filter((u) => u.roi !== null);
    if (!units.length) return;
    const rowH = 40, L = 170, Rm = 70;
    const { W, H, svg } = barFrame(units.length, rowH);
    svg.setAttribute("aria-label", "ROI per business unit");
    const lo = Math.min(0, ...units.map((u) => u.roi)), hi = Math.max(0, ...units.map((u) => u.roi));
    const X = (v) => L + ((v - lo) / ((hi - lo) || 1)) * (W - L - Rm);
    units.forEach((u, i) => {
      const y = 12 + i * rowH;
      svg.appendChild(svgEl("text", { x: L - 10, y: y + 14, "text-anchor": "end", class: "label-strong" }, u.business_unit));
      svg.appendChild(svgEl("text", { x: L - 10, y: y + 28, "text-anchor": "end" }, `${compact(u.revenue)} rev / ${compact(u.cost)} cost`));
      const a = X(Math.min(0, u.roi)), b = X(Math.max(0, u.roi));
      const bar = svgEl("rect", { x: a, y: y + 4, width: Math.max(1, b - a), height: rowH - 14, rx: 3, fill: u.roi >= 0 ? "#16a34a" : "#dc2626", class: "bar" });
      svg.appendChild(title(bar, `${u.business_unit}: ROI ${(u.roi * 100).toFixed(1)} %, revenue ${money(u.revenue)}, cost ${money(u.cost)}`));
      svg.appendChild(svgEl("text", { x: Math.max(a, b) + 6, y: y + 21, class: "label-strong" }, `${(u.roi * 100).toFixed(0)} %`));
    });
    svg.appendChild(svgEl("line", { class: "axis", x1: X(0), x2: X(0), y1: 6, y2: H - 10 }));
    root.appendChild(svg);
  }

  function renderBudgets(b) {
    const root = clear("budget-chart");
    document.getElementById("budget-month").textContent = b.month ? b.month + ", as of " + t(b.as_of) + " UTC" : "";
    const units = b.units.filter((u) => u.spent !== null || u.budget !== null);
    if (!units.length) return;
    const rowH = 48, L = 110, Rm = 16;
    const { W, H, svg } = barFrame(units.length, rowH);
    svg.setAttribute("aria-label", "budget burn and forecast per business unit");
    const top = Math.max(...units.map((u) => Math.max(Number(u.budget || 0), Number(u.forecast || 0), Number(u.spent || 0))), 0.01) * 1.05;
    const X = (v) => L + (Number(v) / top) * (W - L - Rm);
    units.forEach((u, i) => {
      const y = 8 + i * rowH;
      svg.appendChild(svgEl("text", { x: L - 10, y: y + 17, "text-anchor": "end", class: "label-strong" }, u.business_unit));
      if (u.forecast !== null) {
        svg.appendChild(title(svgEl("rect", { x: L, y: y + 2, width: Math.max(1, X(u.forecast) - L), height: 22, rx: 3, fill: colour(u.business_unit), opacity: 0.25 }), "forecast " + money(u.forecast)));
      }
      const over = u.budget !== null && Number(u.spent) > Number(u.budget);
      svg.appendChild(title(svgEl("rect", { x: L, y: y + 6, width: Math.max(1, X(u.spent || 0) - L), height: 14, rx: 2, fill: over ? "#dc2626" : colour(u.business_unit), class: "bar" }), "spent " + money(u.spent)));
      if (u.budget !== null) {
        svg.appendChild(title(svgEl("line", { class: "budget-line", x1: X(u.budget), x2: X(u.budget), y1: y - 2, y2: y + 28 }), "budget " + money(u.budget)));
      }
      const parts = ["spent " + money(u.spent) + (u.burn_percent !== null ? ` (${pct(u.burn_percent, 0)})` : "")];
      if (u.forecast !== null) parts.push("forecast " + money(u.forecast) + (u.forecast_percent !== null ? ` (${pct(u.forecast_percent, 0)})` : ""));
      parts.push(u.budget === null ? "no budget set" : "budget " + money(u.budget));
      if (u.alerts && u.alerts.length) parts.push(u.alerts.length + " alert" + (u.alerts.length > 1 ? "s" : ""));
      svg.appendChild(svgEl("text", { x: L, y: y + 38 }, parts.join(" · ")));
    });
    root.appendChild(svg);
  }

  // ---- tables -----------------------------------------------------------------------------------
  function fillTable(id, rows, empty, cells) {
    const tbody = document.querySelector("#" + id + " tbody");
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    if (!rows.length) {
      const tr = el("tr");
      tr.appendChild(el("td", { class: "empty", colspan: document.querySelectorAll("#" + id + " th").length }, empty));
      tbody.appendChild(tr);
      return;
    }
    for (const row of rows) {
      const tr = el("tr");
      for (const cell of cells(row)) tr.appendChild(cell);
      tbody.appendChild(tr);
    }
  }

  function renderAnomalies(list) {
    const open = list.filter((a) => a.status !== "closed");
    document.getElementById("anomaly-count").textContent = open.length + " open";
    fillTable("anomalies", open.slice(0, 25), "No open anomalies.", (a) => {
      const sev = el("td");
      sev.appendChild(el("span", { class: "sev " + a.severity }, a.severity));
      const drivers = el("td");
      for (const d of (a.drivers || []).filter((x) => x.excess > 0).slice(0, 4)) {
        drivers.appendChild(el("span", { class: "driver", title: `observed ${d.observed}, expected ${d.expected}` }, `${d.dimension}=${d.value} +${money(d.excess)}`));
      }
      return [sev, el("td", {}, a.service), el("td", {}, anomalyUnit(a) || "–"), el("td", {}, a.series),
        el("td", { class: "time" }, t(a.window_start)), el("td", { class: "num" }, money(a.current_cost)),
        el("td", { class: "num" }, money(a.historical_average)),
        el("td", { class: "num" }, a.deviation_percent === null ? "new" : pct(a.deviation_percent, 0)), drivers];
    });
  }

  function renderRecommendations(r) {
    document.getElementById("saving-total").textContent = money(r.monthly_saving_total) + " / month in " + r.count;
    fillTable("recommendations", r.recommendations.slice(0, 12), "No recommendations yet.", (x) => [
      el("td", {}, x.resource_id), el("td", {}, x.kind), el("td", {}, x.business_unit),
      el("td", {}, x.current + " → " + x.proposed), el("td", { class: "num" }, money(x.monthly_saving))]);
  }

  function renderDeadletters(d) {
    document.getElementById("deadletter-total").textContent = d.total + " in total";
    fillTable("deadletters", d.recent.slice(0, 8), "No dead letters.", (x) => [
      el("td", { class: "time" }, t(x.timestamp)), el("td", {}, x.source_topic), el("td", {}, x.stage), el("td", {}, x.error)]);
  }

  // ---- refresh loop -------------------------------------------------------------------------------
  async function getJson(path) {
    const resp = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    const data = await resp.json();
    if (!resp.ok) throw new Error(path + ": " + (data.error || resp.status));
    return data;
  }

  function setHealth(h) {
    const pill = document.getElementById("health");
    pill.textContent = h ? (h.status === "ok" ? "healthy" : "degraded") : "unreachable";
    pill.className = "pill " + (h && h.status === "ok" ? "ok" : "bad");
  }

  async function refresh() {
    const paths = {
      health: "/finops/health/", kpis: "/finops/kpis/", windows: "/finops/windows/?hours=" + encodeURIComponent(HOURS),
      roi: "/finops/roi/?hours=" + encodeURIComponent(HOURS), anomalies: "/finops/anomalies/?status=all&limit=500",
      budgets: "/finops/budgets/", recommendations: "/finops/recommendations/", deadletters: "/finops/deadletters/",
    };
    const names = Object.keys(paths);
    const settled = await Promise.allSettled(names.map((n) => (n === "health" ? fetch(paths[n], { cache: "no-store" }).then((r) => r.json()) : getJson(paths[n]))));
    const got = {};
    const problems = [];
    settled.forEach((s, i) => (s.status === "fulfilled" ? (got[names[i]] = s.value) : problems.push(String(s.reason && s.reason.message))));
    setHealth(got.health);
    const renders = [
      ["windows", () => renderCost(got.windows, got.anomalies ? got.anomalies.anomalies : [])],
      ["roi", () => renderRoi(got.roi)], ["budgets", () => renderBudgets(got.budgets)],
      ["anomalies", () => renderAnomalies(got.anomalies.anomalies)],
      ["recommendations", () => renderRecommendations(got.recommendations)],
      ["deadletters", () => renderDeadletters(got.deadletters)],
      ["kpis", () => renderKpis(got.kpis, got.deadletters ? got.deadletters.total : got.kpis.deadletters)],
    ];
    for (const [name, render] of renders) if (got[name]) render();
    if (got.windows) document.getElementById("asof").textContent = got.windows.as_of ? "event time " + t(got.windows.as_of) + " UTC" : "no windows yet";
    const updated = document.getElementById("updated");
    updated.textContent = problems.length ? "waiting: " + problems[0] : "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    updated.className = problems.length ? "right error" : "muted right";
    body.dataset.loaded = String(Number(body.dataset.loaded || 0) + 1);
  }

  async function loop() {
    try {
      await refresh();
    } catch (err) {
      document.getElementById("updated").textContent = "refresh failed: " + err.message;
    }
    window.setTimeout(loop, REFRESH_MS);
  }

  document.getElementById("mode").textContent = body.dataset.readOnly === "true" ? "read-only" : "operator";
  loop();
})();
