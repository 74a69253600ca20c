// Renders a Sentinel workbook (Notebook/1.0) with its panels' rows, as epf's dashboard and
// reports show it: text items, the parameters chosen, and each query item as a chart (Chart.js)
// and a table, or its "no data" message. Every value from the workspace is set as text, never
// as markup: device names, tags and alert texts come from Defender and may carry markup.
"use strict";

// window.EPF.renderWorkbook(answer, root, {deviceLinks}) for the dashboard; a report file
// carries its answer in #epf-answer and is rendered at once.
(function () {
  const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function show(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  // The workbook's markdown is ours (headings and paragraphs): rendered as text all the same.
  function markdown(text) {
    const box = el("div", { class: "text" });
    for (const line of text.split("\n")) {
      const heading = /^(#{1,4})\s+(.*)$/.exec(line);
      if (heading) box.append(el("h" + heading[1].length, {}, heading[2]));
      else if (line.trim()) box.append(el("p", {}, line.replace(/`/g, "")));
    }
    return box;
  }

  function kinds(result) {
    return result.columns.map((_, i) => {
      const sample = result.rows.map((r) => r[i]).find((v) => v !== null && v !== undefined);
      if (typeof sample === "number") return "number";
      if (typeof sample === "string" && ISO.test(sample)) return "time";
      return typeof sample === "string" ? "string" : "other";
    });
  }

  let deviceLinks = false;

  function cell(result, row, i) {
    const id = result.columns.indexOf("DeviceId");
    if (deviceLinks && result.columns[i] === "DeviceName" && id >= 0 && row[id]) {
      const link = el("a", { href: "#device=" + encodeURIComponent(row[id]) }, show(row[i]));
      return el("td", {}, link);
    }
    return el("td", {}, show(row[i]));
  }

  function table(result) {
    const head = el("tr", {}, ...result.columns.map((c) => el("th", { scope: "col" }, c)));
    const body = el("tbody");
    for (const row of result.rows) body.append(el("tr", {}, ...row.map((_, i) => cell(result, row, i))));
    return el("div", { class: "grid" }, el("table", {}, el("thead", {}, head), body));
  }

  // What a chart plots, Azure Workbooks' way: labels from the first text (or time) column,
  // one series per numeric column, or per value of a text column beside a time column.
  function series(result, visualization) {
    const kind = kinds(result);
    const numbers = kind.flatMap((k, i) => (k === "number" ? [i] : []));
    const texts = kind.flatMap((k, i) => (k === "string" ? [i] : []));
    const time = kind.indexOf("time");
    if (!numbers.length) return null;
    if (visualization === "timechart" && time >= 0) {
      const xs = [...new Set(result.rows.map((r) => r[time]))].sort();
      const by = texts.length ? texts[0] : -1;
      const groups = by >= 0 ? [...new Set(result.rows.map((r) => show(r[by])))] : null;
      const sets = (groups || result.columns.filter((_, i) => numbers.includes(i))).map((name, n) => {
        const values = new Map();
        for (const r of result.rows) {
          if (groups && show(r[by]) !== name) continue;
          values.set(r[time], (values.get(r[time]) || 0) + (r[groups ? numbers[0] : numbers[n]] || 0));
        }
        return { label: name, data: xs.map((x) => values.get(x) ?? 0) };
      });
      // Whole days read as dates; other times to the minute.
      const days = xs.every((x) => /T00:00:00(\.0+)?Z$/.test(x));
      const label = (x) => (days ? x.slice(0, 10) : x.replace("T", " ").replace(/:00(\.0+)?Z$/, "Z"));
      return { labels: xs.map(label), sets };
    }
    const labelAt = texts.length ? texts[0] : time;
    const name = (v) => show(v) || "(none)";
    const labels = result.rows.map((r) =>
      texts.length > 1 ? texts.map((i) => name(r[i])).join(" / ") : name(labelAt >= 0 ? r[labelAt] : "")
    );
    const used = visualization === "piechart" ? numbers.slice(0, 1) : numbers;
    return { labels, sets: used.map((i) => ({ label: result.columns[i], data: result.rows.map((r) => r[i]) })) };
  }

  function chart(result, visualization) {
    const kind = { barchart: "bar", piechart: "pie", timechart: "line" }[visualization];
    const data = kind && typeof Chart !== "undefined" ? series(result, visualization) : null;
    if (!data) return null;
    const canvas = el("canvas", { role: "img", "aria-label": "chart" });
    const box = el("div", { class: "chart" }, canvas);
    // Drawn once the box is in the page, so the chart takes its size.
    queueMicrotask(() => {
      new Chart(canvas, {
        type: kind,
        data: { labels: data.labels, datasets: data.sets },
        options: {
          animation: false,
          responsive: true,
          maintainAspectRatio: false,
          plugins: { legend: { display: kind === "pie" || data.sets.length > 1 } },
        },
      });
    });
    return box;
  }

  function panel(item, results) {
    const content = item.content;
    const result = results[item.name];
    const box = el("section", { class: "panel", "data-panel": item.name });
    box.style.flexBasis = `calc(${parseInt(item.customWidth || "100", 10)}% - 1rem)`;
    box.append(el("h4", {}, content.title || item.name));
    if (!result) {
      box.dataset.state = "missing";
      box.append(el("p", { class: "empty" }, "This panel was not answered."));
    } else if (result.error) {
      box.dataset.state = "error";
      box.append(el("p", { class: "error" }, result.error));
    } else if (!result.rows.length) {
      box.dataset.state = "empty";
      box.append(el("p", { class: "empty" }, content.noDataMessage || "No rows."));
    } else {
      box.dataset.state = "rows";
      box.dataset.rows = String(result.rows.length);
      const drawn = content.visualization === "table" ? null : chart(result, content.visualization);
      if (drawn) box.append(drawn, el("details", {}, el("summary", {}, "Rows"), table(result)));
      else box.append(table(result));
      if (result.truncated) box.append(el("p", { class: "note" }, `The first ${result.rows.length} rows.`));
    }
    return box;
  }

  function parameters(item, answer) {
    const list = el("dl", { class: "parameters" });
    for (const p of item.content.parameters) {
      const asOf = answer.provenance && answer.provenance.as_of;
      const value = p.name !== "TimeRange" ? answer.parameters[p.name]
        : asOf ? `the workspace as it stood at ${asOf} (panels answer as of the newest collection by then)`
        : "all the workspace's history (panels answer as of its newest collection)";
      list.append(el("dt", {}, p.label || p.name), el("dd", {}, value === "*" ? "all" : show(value)));
    }
    return list;
  }

  function provenance(p) {
    const rows = [
      ["Workspace", p.workspace],
      ["Written", p.written_at],
      ["As of", p.as_of || "the newest collection"],
      ["Defender tenants", (p.tenants || []).join(", ") || "none"],
      ...(p.feeds || []).map((f) => [f.table, `${f.version || "?"} from ${f.source || "?"}, read ${f.read_at}`]),
      ["SHA-256 of the rows shown", p.rows_sha256],
    ];
    const facts = el("table", { class: "facts" });
    for (const [k, v] of rows) facts.append(el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, show(v))));
    const snapshots = {
      columns: ["Table", "Rows", "Newest snapshot"],
      rows: (p.tables || []).map((t) => [t.table, t.rows, t.newest_snapshot]),
    };
    return el("section", { class: "provenance" }, el("h2", {}, "Provenance"), facts,
      el("details", {}, el("summary", {}, "Tables"), table(snapshots)));
  }

  function render(answer, root, withProvenance) {
    let row = null;
    const flush = () => { if (row) root.append(row); row = null; };
    for (const item of answer.workbook.items) {
      if (item.type === 3) {
        row = row || el("div", { class: "panels" });
        row.append(panel(item, answer.results));
        continue;
      }
      flush();
      if (item.type === 1) root.append(markdown(item.content.json));
      else if (item.type === 9) root.append(parameters(item, answer));
    }
    flush();
    if (withProvenance) root.append(provenance(answer.provenance));
    // After the charts, which are drawn in the microtasks queued before this one.
    queueMicrotask(() => { document.body.dataset.rendered = "true"; });
  }

  window.EPF = {
    el,
    show,
    table,
    renderWorkbook(answer, root, options) {
      deviceLinks = Boolean(options && options.deviceLinks);
      render(answer, root, Boolean(options && options.provenance));
    },
  };
  const embedded = document.getElementById("epf-answer");
  if (embedded) render(JSON.parse(embedded.textContent), document.getElementById("epf-root"), true);
})();
