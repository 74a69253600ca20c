// epf serve's page: one view per workbook section, a device's posture at a chosen time, and
// KQL on the workspace. Routes live in the address's fragment (#view=..., #device=...&at=...,
// #query=...), so a view can be bookmarked. Values from the workspace are set as text.
"use strict";

(function () {
  const { el, show, table } = window.EPF;
  const main = document.getElementById("epf-main");
  const nav = document.getElementById("epf-nav");

  function route() {
    const params = new URLSearchParams(location.hash.slice(1));
    if (params.has("device")) return { kind: "device", device: params.get("device"), at: params.get("at") };
    if (params.has("query")) return { kind: "query", q: params.get("query") };
    return { kind: "view", section: params.get("view"), at: params.get("at") };
  }

  async function getJson(path, params) {
    const response = await fetch(path + "?" + new URLSearchParams(params), { credentials: "same-origin" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  }

  function done() {
    // After the charts, which are drawn in the microtasks queued before this one.
    queueMicrotask(() => { document.body.dataset.rendered = "true"; });
  }

  function failed(error) {
    main.replaceChildren(el("p", { class: "error", role: "alert" }, error.message));
    done();
  }

  function link(text, hash, current) {
    const a = el("a", { href: "#" + hash }, text);
    if (current) a.setAttribute("aria-current", "page");
    return a;
  }

  let sections = [];

  function drawNav(current) {
    nav.replaceChildren(
      ...sections.map((s) => link(s, "view=" + encodeURIComponent(s), current.kind === "view" && current.section === s)),
      link("Device", "device=", current.kind === "device"),
      link("Query", "query=", current.kind === "query"),
    );
  }

  function isoOf(local) {
    return local ? new Date(local + "Z").toISOString().replace(".000Z", "Z") : "";
  }

  async function view(current) {
    // "As of" answers every panel from the workspace as it stood then: the fleet at time T.
    const form = el("form", { class: "bar" },
      el("label", {}, "As of (UTC, empty: the newest collection)", el("input", { name: "at", type: "datetime-local", step: "1" })),
      el("button", { type: "submit" }, "Show"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const at = isoOf(new FormData(form).get("at"));
      const hash = { view: current.section || "" };
      if (at) hash.at = at;
      location.hash = new URLSearchParams(hash).toString();
    });
    const params = {};
    if (current.section) params.section = current.section;
    if (current.at) params.at = current.at;
    const answer = await getJson("/api/workbook", params);
    if (current.at) form.elements.namedItem("at").value = current.at.replace("Z", "").slice(0, 19);
    main.replaceChildren(form);
    window.EPF.renderWorkbook(answer, main, { deviceLinks: true });
  }

  function facts(pairs) {
    const t = el("table", { class: "facts" });
    for (const [k, v] of pairs) t.append(el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, show(v))));
    return t;
  }

  function rowsOf(list) {
    const columns = list.length ? Object.keys(list[0]) : [];
    return table({ columns, rows: list.map((r) => columns.map((c) => r[c])) });
  }

  function section(title, key, body) {
    return el("section", { class: "panel", "data-answer": key }, el("h3", {}, title), body);
  }

  async function device(current) {
    const form = el("form", { class: "bar" },
      el("label", {}, "Device (id or name)", el("input", { name: "device", required: "", value: current.device || "" })),
      el("label", {}, "At (UTC)", el("input", { name: "at", type: "datetime-local", step: "1" })),
      el("button", { type: "submit" }, "Show posture"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const at = isoOf(data.get("at"));
      location.hash = new URLSearchParams({ device: data.get("device"), at }).toString();
    });
    main.replaceChildren(form);
    if (!current.device) return;
    const params = { device: current.device };
    if (current.at) params.at = current.at;
    const answer = await getJson("/api/device", params);
    form.elements.namedItem("at").value = answer.at.replace("Z", "").slice(0, 19);
    const d = answer.device;
    main.append(
      el("h2", {}, `${d.DeviceName || d.DeviceId} at ${answer.at}`),
      section("What was missing", "missing",
        answer.missing.length ? el("ul", { class: "missing" }, ...answer.missing.map((m) => el("li", {}, m))) : el("p", {}, "Nothing: it was healthy, protected, configured and patched as far as the workspace knows.")),
      section("Device", "device", facts(Object.entries(d))),
      section("Agent health", "agent_health", facts(Object.entries(answer.agent_health))),
      section("Antivirus", "antivirus", facts(Object.entries(answer.antivirus || {}))),
      section("Snapshots read", "snapshots", facts(Object.entries(answer.snapshots).map(([k, s]) => [k, s ? `${s.time} (${s.age_hours.toFixed(1)} h old)` : "none in look-back"]))),
      section("Changes in the window (timeline)", "changes", rowsOf(answer.changes)),
      section("Failing security settings", "secure_config_failing", rowsOf(answer.secure_config_failing)),
      section("Open vulnerabilities", "vulnerabilities_open", rowsOf(answer.vulnerabilities_open)),
      section("Triage items", "triage", rowsOf(answer.triage)),
    );
  }

  function query(current) {
    const box = el("textarea", { name: "q", "aria-label": "KQL" });
    box.value = current.q || "";
    const form = el("form", { class: "bar" }, box, el("button", { type: "submit" }, "Run"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      location.hash = new URLSearchParams({ query: box.value }).toString();
    });
    const out = el("div", { id: "epf-result" });
    main.replaceChildren(form, out);
    if (!current.q) return Promise.resolve();
    return getJson("/api/query", { q: current.q }).then((result) => {
      out.replaceChildren(table(result), el("p", { class: "note" }, `${result.rows.length} rows${result.truncated ? " (the first ones)" : ""}`));
    }, (error) => out.replaceChildren(el("p", { class: "error", role: "alert" }, error.message)));
  }

  async function show_() {
    delete document.body.dataset.rendered;
    const current = route();
    if (current.kind === "view" && !current.section) current.section = sections[0];
    drawNav(current);
    main.replaceChildren(el("p", { class: "loading" }, "Loading ..."));
    try {
      if (current.kind === "view") await view(current);
      else if (current.kind === "device") await device(current);
      else await query(current);
      done();
    } catch (error) {
      failed(error);
    }
  }

  getJson("/api/views", {}).then((answer) => {
    sections = answer.sections;
    document.title = `Endpoint Forensics: ${answer.workspace}`;
    window.addEventListener("hashchange", show_);
    show_();
  }, failed);
})();
