// linesentry collector console: a timeline of events by severity (from the rollups), the
// event list (a query, then live over the WebSocket stream) with one-line summaries, an
// event's detail with its chain verdict, the asset inventory with its history, ATT&CK for
// ICS coverage, alerts and gateway health. Plain JS, no build step. Everything shown is set
// with textContent or SVG attributes (never innerHTML): event data comes from the field.
// The summaries and technique names come from the collector (one source of truth).
"use strict";

(() => {
  const MAX_ROWS = 500;
  const PAGE_ROWS = 200;
  const REFRESH_MS = 30000;
  const SEVERITIES = ["debug", "info", "warn", "error", "critical"];
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const state = {
    token: null, role: null, ws: null, paused: false, backoff: 1000, timer: null,
    interval: null, queue: [], flushing: false, selected: null, asset: null, timeline: null,
    received: 0, drawn: 0, frames: 0,
  };

  // A token in the address (#token=...) is taken once and removed from the address bar.
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem("linesentry.token", fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem("linesentry.token");

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }

  // A cell whose text may be long: cut by CSS, the full text on hover.
  function cell(text, cls) {
    const td = el("td", text, cls);
    if (text !== undefined && text !== null && String(text).length > 24) td.title = String(text);
    return td;
  }

  // Two lines in one cell (gateway / station, vendor / product...).
  function pair(a, b, cls) {
    const td = el("td", null, cls);
    const top = el("div", a === null || a === undefined || a === "" ? "—" : a, "l1");
    const bottom = el("div", b === null || b === undefined || b === "" ? "" : b, "l2");
    td.append(top, bottom);
    td.title = [a, b].filter((x) => x !== null && x !== undefined && x !== "").join("\n");
    return td;
  }

  function time(iso) {
    if (!iso) return "never";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  // Short form for table cells: the time of day today, the date and minute otherwise (the
  // full time is in the cell's title and the detail).
  function short(iso) {
    const d = new Date(iso);
    if (!iso || isNaN(d)) return time(iso);
    const now = new Date();
    if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString();
    return d.toLocaleDateString() + " " + d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function timeCell(iso) {
    const td = el("td", short(iso), "time");
    td.title = time(iso);
    return td;
  }

  function clock(iso) {
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleTimeString();
  }

  async function api(path, options = {}) {
    const headers = Object.assign({ Authorization: "Bearer " + state.token }, options.headers || {});
    const resp = await fetch(path, Object.assign({}, options, { headers }));
    const body = await resp.json().catch(() => ({}));
    if (resp.status === 401) {
      logout("The token was refused: " + (body.reason || "unauthorized"));
      throw new Error("unauthorized");
    }
    if (!resp.ok) throw new Error(body.reason || resp.statusText);
    return body;
  }

  function setConn(s) {
    $("conn").dataset.state = s;
    $("conn").textContent = s;
  }

  function showLogin(message) {
    $("app").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
  }

  function logout(message) {
    sessionStorage.removeItem("linesentry.token");
    state.token = null;
    if (state.ws) state.ws.close();
    clearInterval(state.timer);
    showLogin(message);
  }

  // ---- filters ---------------------------------------------------------------------------

  function typeList() {
    return $("f-type").value.split(",").map((s) => s.trim()).filter(Boolean);
  }

  // The stream's subscription filters.
  function filters() {
    const f = {};
    const types = typeList();
    if (types.length) f.event_types = types;
    if ($("f-severity").value) f.min_severity = $("f-severity").value;
    for (const [id, key] of [["f-gateway", "gateway_id"], ["f-station", "station_id"], ["f-user", "user_id"]]) {
      if ($(id).value.trim()) f[key] = $(id).value.trim();
    }
    return f;
  }

  // The same filters as query parameters of /api/v1/events, with the selected interval.
  function query() {
    const q = new URLSearchParams();
    const types = typeList();
    if (types.length) q.set("event_types", types.join(","));
    if ($("f-severity").value) q.set("min_severity", $("f-severity").value);
    for (const [id, key] of [["f-gateway", "gateway_id"], ["f-station", "station_id"], ["f-user", "user_id"]]) {
      if ($(id).value.trim()) q.set(key, $(id).value.trim());
    }
    if (state.interval) {
      q.set("start", state.interval.start);
      q.set("end", state.interval.end);
    }
    q.set("limit", String(PAGE_ROWS));
    return q;
  }

  // ---- the event list --------------------------------------------------------------------

  function where(e) {
    // The collector's own events are its (gateway_id = its id); the gateway one is about is
    // event_data.source_gateway, shown beside it.
    const data = e.event_data || {};
    const about = typeof data.source_gateway === "string" ? data.source_gateway : "";
    const gateway = about ? e.gateway_id + " (about " + about + ")" : e.gateway_id;
    const station = e.station_id || (about && typeof data.source_station === "string" ? data.source_station : "");
    return [gateway, station];
  }

  function techniqueLinks(list, into) {
    for (const t of list || []) {
      const label = t.name ? t.id + " " + t.name : t.id;
      if (t.url) {
        const a = el("a", label, "attack");
        a.href = t.url;
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        into.append(a);
      } else {
        into.append(el("span", label, "attack"));
      }
    }
  }

  function eventRow(e) {
    const tr = el("tr", null, "event");
    tr.dataset.id = e.id;
    tr.dataset.severity = e.severity;
    tr.dataset.type = e.event_type;
    tr.tabIndex = 0;
    tr.append(timeCell(e.timestamp));
    const sev = el("td");
    sev.append(el("span", e.severity, "sev sev-" + e.severity));
    tr.append(sev, cell(e.event_type));
    const [gateway, station] = where(e);
    tr.append(pair(gateway, station));
    const summary = el("td", null, "summary");
    summary.append(el("span", e.summary || e.event_type, "text"));
    techniqueLinks(e.attack_techniques, summary);
    tr.append(summary);
    tr.append(el("td", e.verification, "chain-" + e.verification));
    tr.onclick = (ev) => {
      if (ev.target.tagName === "A") return;
      openDetail(e.id);
    };
    tr.onkeydown = (ev) => {
      if (ev.key === "Enter") openDetail(e.id);
    };
    if (state.selected === e.id) tr.classList.add("selected");
    return tr;
  }

  // Live events are queued and drawn once per frame, so a fast stream costs one layout per
  // frame rather than one per event; only the newest MAX_ROWS are drawn.
  function addEvent(e) {
    state.received += 1;
    if (state.paused || state.interval) return;
    state.queue.push(e);
    if (state.queue.length > MAX_ROWS) state.queue.splice(0, state.queue.length - MAX_ROWS);
    if (!state.flushing) {
      state.flushing = true;
      requestAnimationFrame(flush);
    }
  }

  function flush() {
    state.flushing = false;
    const batch = state.queue;
    state.queue = [];
    const body = $("events");
    const frag = document.createDocumentFragment();
    // The highlight of new rows is an animation per row: only for a trickle, not a burst.
    const highlight = batch.length <= 20;
    for (let i = batch.length - 1; i >= 0; i--) {
      const tr = eventRow(batch[i]);
      if (highlight) tr.classList.add("fresh");
      frag.append(tr);
    }
    body.prepend(frag);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    state.drawn += batch.length;
    state.frames += 1;
  }

  async function loadEvents() {
    const body = $("events");
    const note = $("events-note");
    try {
      const r = await api("/api/v1/events?" + query().toString());
      body.replaceChildren(...(r.events || []).map(eventRow));
      note.textContent = r.next ? "Showing the newest " + r.count + " events of this selection." : "";
      body.dataset.loaded = String(Date.now());
    } catch (e) {
      note.textContent = "Could not load events: " + e.message;
    }
  }

  function setInterval_(start, end, label) {
    state.interval = start ? { start, end } : null;
    $("interval").hidden = !start;
    $("interval-text").textContent = start ? "Events from " + label : "";
    for (const b of document.querySelectorAll("#timeline .bar")) {
      b.classList.toggle("active", !!start && b.dataset.start === start);
    }
    loadEvents();
  }

  function subscribe() {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify({ type: "subscribe", filters: filters() }));
    }
  }

  function connect() {
    if (!state.token) return;
    setConn("connecting");
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/stream";
    // A browser cannot set headers on a WebSocket: the token travels as a subprotocol.
    const ws = new WebSocket(url, ["linesentry.v1", "bearer." + state.token]);
    state.ws = ws;
    ws.onopen = () => {
      state.backoff = 1000;
    };
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch { return; }
      if (msg.type === "welcome") {
        ws.send(JSON.stringify({ type: "subscribe", filters: filters() }));
      } else if (msg.type === "subscribed") {
        setConn("live");
      } else if (msg.type === "event") {
        addEvent(msg.event);
      } else if (msg.type === "missed") {
        const p = $("missed");
        const total = Number(p.dataset.total || 0) + msg.count;
        p.dataset.total = total;
        p.textContent = total + " event(s) were not shown: this page could not keep up with the stream.";
        p.hidden = false;
      } else if (msg.type === "error") {
        $("missed").textContent = "Stream: " + msg.reason;
        $("missed").hidden = false;
      }
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      setConn("offline");
      if (!state.token) return;
      setTimeout(connect, state.backoff);
      state.backoff = Math.min(state.backoff * 2, 30000);
    };
  }

  // ---- event detail ----------------------------------------------------------------------

  function dl(pairs) {
    const d = el("dl", null, "fields");
    for (const [k, v] of pairs) {
      d.append(el("dt", k));
      const dd = el("dd", v === null || v === undefined || v === "" ? "—" : v);
      d.append(dd);
    }
    return d;
  }

  function verdict(c) {
    const box = el("div", null, "verdict verdict-" + c.verification);
    box.id = "chain-verdict";
    box.dataset.verdict = c.verification;
    box.append(el("strong", c.verification));
    if (c.explanation) box.append(el("span", ": " + c.explanation));
    const rows = [["seq", c.seq], ["prev_hash", c.prev_hash]];
    if (c.link) rows.push(["this link's hash", c.link.hash], ["received", time(c.link.received_at)]);
    if (c.predecessor) {
      rows.push(["predecessor", "seq " + c.predecessor.seq + " (" + c.predecessor.status + ")"]);
      rows.push(["predecessor hash", c.predecessor.hash]);
    }
    if (c.matches_predecessor !== null && c.matches_predecessor !== undefined) {
      rows.push(["prev_hash matches", c.matches_predecessor ? "yes" : "NO"]);
    }
    box.append(dl(rows));
    return box;
  }

  async function openDetail(id) {
    state.selected = id;
    for (const r of document.querySelectorAll("#events tr.selected")) r.classList.remove("selected");
    const row = document.querySelector('#events tr[data-id="' + CSS.escape(id) + '"]');
    if (row) row.classList.add("selected");
    const box = $("detail");
    box.replaceChildren(el("p", "Loading…", "muted"));
    $("detail-close").hidden = false;
    try {
      const [e, c] = await Promise.all([
        api("/api/v1/events/" + encodeURIComponent(id)),
        api("/api/v1/events/" + encodeURIComponent(id) + "/chain"),
      ]);
      if (state.selected !== id) return;
      const parts = [];
      const title = el("p", null, "detail-summary");
      title.append(el("span", e.severity, "sev sev-" + e.severity), el("span", " " + (e.summary || e.event_type)));
      parts.push(title);
      if ((e.attack_techniques || []).length) {
        const p = el("p", null, "techniques");
        p.append(el("span", "ATT&CK for ICS: "));
        techniqueLinks(e.attack_techniques, p);
        parts.push(p);
      }
      parts.push(dl([
        ["id", e.id], ["type", e.event_type], ["severity", e.severity], ["time", time(e.timestamp)],
        ["received", time(e.received_at)], ["gateway", e.gateway_id], ["station", e.station_id],
        ["user", e.user_id], ["source address", e.source_ip], ["correlation id", e.correlation_id],
      ]));
      parts.push(el("h3", "Chain"), verdict(c));
      parts.push(el("h3", "Data"), el("pre", JSON.stringify(e.event_data, null, 2), "json data"));
      if (e.context && Object.keys(e.context).length) {
        parts.push(el("h3", "Context"), el("pre", JSON.stringify(e.context, null, 2), "json"));
      }
      const corr = el("div", null, "correlated");
      corr.id = "correlated";
      parts.push(el("h3", "Correlated events"), corr);
      const raw = el("details");
      raw.append(el("summary", "Raw record"), el("pre", JSON.stringify(e, null, 2), "json raw"));
      parts.push(raw);
      box.replaceChildren(...parts);
      box.dataset.id = id;
      if (e.correlation_id) {
        const r = await api("/api/v1/events?limit=50&correlation_id=" + encodeURIComponent(e.correlation_id));
        const others = (r.events || []).filter((x) => x.id !== id);
        if (!others.length) corr.append(el("p", "None besides this one.", "muted"));
        for (const o of others) {
          const b = el("button", clock(o.timestamp) + " " + (o.summary || o.event_type), "link");
          b.type = "button";
          b.dataset.id = o.id;
          b.onclick = () => openDetail(o.id);
          corr.append(b);
        }
      } else {
        corr.append(el("p", "No correlation id.", "muted"));
      }
    } catch (err) {
      box.replaceChildren(el("p", "Could not load the event: " + err.message, "error"));
    }
  }

  // ---- timeline --------------------------------------------------------------------------

  async function refreshTimeline() {
    const q = new URLSearchParams({ period: $("t-period").value });
    if ($("f-severity").value) q.set("min_severity", $("f-severity").value);
    if ($("f-gateway").value.trim()) q.set("gateway_id", $("f-gateway").value.trim());
    state.timeline = await api("/api/v1/timeline?" + q.toString());
    drawTimeline();
  }

  function drawTimeline() {
    const t = state.timeline;
    const box = $("timeline");
    if (!t) return;
    const width = Math.max(300, box.clientWidth || 800);
    const height = 150;
    const pad = { l: 36, r: 6, t: 6, b: 20 };
    const n = t.buckets.length || 1;
    const max = Math.max(1, ...t.buckets.map((b) => b.total));
    const bw = (width - pad.l - pad.r) / n;
    const ih = height - pad.t - pad.b;
    const root = svg("svg", { width, height, viewBox: "0 0 " + width + " " + height, role: "img" });
    root.append(svg("line", { x1: pad.l, y1: pad.t + ih, x2: width - pad.r, y2: pad.t + ih, class: "axis" }));
    for (const f of [1, 0.5]) {
      const y = pad.t + ih - ih * f;
      const label = svg("text", { x: pad.l - 4, y: y + 4, class: "tick", "text-anchor": "end" });
      label.textContent = String(Math.round(max * f));
      root.append(label, svg("line", { x1: pad.l, y1: y, x2: width - pad.r, y2: y, class: "grid" }));
    }
    const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor((width - pad.l) / 90))));
    t.buckets.forEach((b, i) => {
      const x = pad.l + i * bw;
      const g = svg("g", { class: "bar", tabindex: 0, "data-start": b.start, "data-end": b.end, "data-total": b.total });
      const title = svg("title");
      const detail = SEVERITIES.filter((s) => b.by_severity[s]).map((s) => s + " " + b.by_severity[s]).join(", ");
      title.textContent = clock(b.start) + " – " + clock(b.end) + ": " + b.total + " events" + (detail ? " (" + detail + ")" : "");
      g.append(title);
      g.append(svg("rect", { x, y: pad.t, width: Math.max(1, bw), height: ih, class: "hit" }));
      let y = pad.t + ih;
      for (const s of SEVERITIES) {
        const c = b.by_severity[s] || 0;
        if (!c) continue;
        const h = (c / max) * ih;
        y -= h;
        g.append(svg("rect", { x: x + 0.5, y, width: Math.max(1, bw - 1), height: h, class: "s-" + s, "data-severity": s, "data-count": c }));
      }
      const pick = () => setInterval_(b.start, b.end, clock(b.start) + " to " + clock(b.end) + " (" + b.total + ")");
      g.addEventListener("click", pick);
      g.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); pick(); } });
      if (state.interval && state.interval.start === b.start) g.classList.add("active");
      root.append(g);
      if (i % every === 0) {
        const label = svg("text", { x: x + 1, y: height - 6, class: "tick" });
        label.textContent = t.step_s >= 86400 ? new Date(b.start).toLocaleDateString() : clock(b.start).replace(/:00$/, "");
        root.append(label);
      }
    });
    box.replaceChildren(root);
    box.dataset.width = String(width);
    box.dataset.total = String(t.total);
    $("t-total").textContent = t.total + " events from " + time(t.from) + " to " + time(t.to);
  }

  // ---- inventory -------------------------------------------------------------------------

  const ASSET_CELLS = [
    ["protocol", "address"], ["vendor", "product"], ["firmware", null], ["program_checksum", null],
    ["certificate_thumbprint", "security_policy"], ["status", "mode"],
  ];

  async function refreshAssets() {
    const r = await api("/api/v1/assets?limit=1000");
    const body = $("assets");
    body.replaceChildren();
    for (const a of r.assets || []) {
      const tr = el("tr", null, "asset");
      tr.dataset.gateway = a.gateway_id;
      tr.dataset.station = a.station_id;
      tr.tabIndex = 0;
      tr.append(pair(a.station_id, a.gateway_id, "station"));
      for (const [f1, f2] of ASSET_CELLS) {
        let second = f2 ? a[f2] : null;
        let first = a[f1];
        // OPC UA servers name themselves by ApplicationUri rather than vendor and product.
        if (f1 === "vendor" && !first) first = a.application_uri;
        if (f1 === "vendor" && !second) second = a.product_name;
        if (f1 === "status" && a.reachable === false) first = "unreachable" + (a.status ? " (" + a.status + ")" : "");
        const td = pair(first, second, "f-" + f1);
        const changed = (a.changed_fields || []).filter((f) => f === f1 || f === f2 || (f1 === "vendor" && f === "application_uri"));
        if (changed.length) {
          td.classList.add("changed");
          td.title += "\nchanged: " + changed.join(", ") + (a.last_change_at ? " (last " + time(a.last_change_at) + ")" : "");
        }
        tr.append(td);
      }
      tr.append(pair(short(a.first_seen), short(a.last_seen), "seen"));
      const alerts = el("td", a.open_alerts, a.open_alerts ? "alerts-open" : "");
      tr.append(alerts);
      tr.onclick = () => openHistory(a.gateway_id, a.station_id);
      tr.onkeydown = (ev) => { if (ev.key === "Enter") openHistory(a.gateway_id, a.station_id); };
      if (state.asset && state.asset[0] === a.gateway_id && state.asset[1] === a.station_id) tr.classList.add("selected");
      body.append(tr);
    }
    $("inv-count").textContent = (r.count || 0) + " stations" + (r.truncated ? " (first " + r.count + ")" : "");
  }

  async function openHistory(gateway, station) {
    state.asset = [gateway, station];
    for (const r of document.querySelectorAll("#assets tr.selected")) r.classList.remove("selected");
    const row = document.querySelector('#assets tr[data-gateway="' + CSS.escape(gateway) + '"][data-station="' + CSS.escape(station) + '"]');
    if (row) row.classList.add("selected");
    const r = await api("/api/v1/assets/" + encodeURIComponent(gateway) + "/" + encodeURIComponent(station) + "/history?limit=200");
    $("asset-history").hidden = false;
    $("asset-history-title").textContent = "History of " + station + " on " + gateway + " (" + r.count + ")";
    const body = $("asset-history-rows");
    body.replaceChildren();
    if (!r.history.length) {
      const tr = el("tr");
      const td = el("td", "No changes recorded yet.", "muted");
      td.colSpan = 5;
      tr.append(td);
      body.append(tr);
    }
    for (const h of r.history) {
      const tr = el("tr", null, h.watched ? "watched" : "");
      tr.dataset.field = h.field;
      tr.dataset.id = h.event_id;
      tr.tabIndex = 0;
      tr.append(timeCell(h.at), cell(h.field), cell(h.previous === null ? "—" : h.previous), cell(h.value === null ? "—" : h.value), cell(h.event_type));
      tr.onclick = () => openDetail(h.event_id);
      tr.onkeydown = (ev) => { if (ev.key === "Enter") openDetail(h.event_id); };
      body.append(tr);
    }
  }

  // ---- ATT&CK ----------------------------------------------------------------------------

  async function refreshAttack() {
    const r = await api("/api/v1/attack?period=24h");
    const box = $("attack");
    const max = Math.max(1, ...r.techniques.map((t) => t.count));
    const cols = [];
    for (const tactic of r.tactics) {
      const list = r.techniques.filter((t) => t.tactics.includes(tactic));
      if (!list.length) continue;
      const col = el("div", null, "tactic");
      col.append(el("h3", tactic));
      for (const t of list) {
        const heat = t.count ? 1 + Math.min(3, Math.floor((t.count / max) * 3.999)) : 0;
        const b = el("button", null, "technique heat-" + heat);
        b.type = "button";
        b.dataset.id = t.id;
        b.dataset.count = t.count;
        b.append(el("span", t.id + " " + t.name, "name"), el("span", String(t.count), "count"));
        b.title = t.name + ": " + t.count + " events (" + t.event_types.join(", ") + ")";
        b.onclick = () => {
          $("f-type").value = t.event_types.join(", ");
          applyFilters();
          location.hash = "#p-events";
        };
        col.append(b);
      }
      cols.push(col);
    }
    box.replaceChildren(...cols);
  }

  // ---- counts, gateways, alerts ----------------------------------------------------------

  async function refreshCounts() {
    const s = await api("/api/v1/stats?period=24h");
    const body = $("counts");
    body.replaceChildren();
    Object.entries(s.by_type || {})
      .sort((a, b) => b[1] - a[1])
      .forEach(([type, n]) => {
        const tr = el("tr");
        tr.dataset.type = type;
        tr.append(cell(type), el("td", n));
        body.append(tr);
      });
    $("total").textContent = s.total + " events from " + time(s.from) + " to " + time(s.to);
  }

  // A gateway without an MQTT status topic (HTTPS only) is judged by its ingest activity.
  function gatewayStatus(gw) {
    if (!gw.enabled) return ["disabled", "offline"];
    if (gw.status) return [gw.status, gw.status === "online" ? "" : "offline"];
    if (!gw.last_seen) return ["never seen", "muted"];
    const age = Date.now() - new Date(gw.last_seen).getTime();
    return age < 5 * 60000 ? ["active (ingest)", ""] : ["stale", "offline"];
  }

  async function refreshGateways() {
    const [g, buffers] = await Promise.all([
      api("/api/v1/gateways"),
      api("/api/v1/events?limit=200&event_types=agent.buffer_high,agent.buffer_dropped,agent.buffer_reset,forward.upstream_down").catch(() => ({ events: [] })),
    ]);
    const lastBuffer = {};
    for (const e of buffers.events || []) {
      if (!lastBuffer[e.gateway_id]) lastBuffer[e.gateway_id] = e;
    }
    const body = $("gateways");
    body.replaceChildren();
    for (const gw of g.gateways || []) {
      const tr = el("tr");
      tr.dataset.gateway = gw.gateway_id;
      const [status, cls] = gatewayStatus(gw);
      tr.append(cell(gw.gateway_id), el("td", status, cls));
      tr.append(timeCell(gw.last_seen), el("td", gw.last_seq ?? ""));
      const gaps = el("td", gw.gaps + (gw.gaps_unexplained ? " (" + gw.gaps_unexplained + " unexplained)" : ""));
      gaps.className = gw.gaps_unexplained ? "chain-gap" : "";
      gaps.dataset.gaps = gw.gaps;
      tr.append(gaps, el("td", gw.missing_events), el("td", gw.broken, gw.broken ? "chain-broken" : ""), el("td", gw.pending));
      const b = lastBuffer[gw.gateway_id];
      const buf = cell(b ? (b.summary || b.event_type).replace(/^[^:]*: /, "") + " (" + time(b.timestamp) + ")" : "ok");
      if (b) buf.className = "buffer-" + b.severity;
      tr.append(buf);
      body.append(tr);
    }
  }

  async function refreshAlerts() {
    const a = await api("/api/v1/alerts?status=open&limit=50");
    const body = $("alerts");
    body.replaceChildren();
    const canAck = state.role === "operator" || state.role === "admin";
    for (const al of a.alerts || []) {
      const tr = el("tr");
      tr.dataset.id = al.id;
      const sev = el("td");
      sev.append(el("span", al.severity, "sev sev-" + al.severity));
      tr.append(timeCell(al.raised_at), sev, cell(al.rule), cell(al.group_key), el("td", al.source_count));
      const c = el("td");
      if (canAck) {
        const b = el("button", "Acknowledge");
        b.type = "button";
        b.onclick = async () => {
          b.disabled = true;
          try {
            await api("/api/v1/alerts/" + encodeURIComponent(al.id) + "/ack", {
              method: "POST",
              headers: { "Content-Type": "application/json" },
              body: "{}",
            });
            tr.remove();
          } catch (e) {
            b.disabled = false;
            b.title = e.message;
          }
        };
        c.append(b);
      }
      tr.append(c);
      body.append(tr);
    }
  }

  async function refresh() {
    await Promise.allSettled([
      refreshCounts(), refreshGateways(), refreshAlerts(), refreshTimeline(), refreshAssets(), refreshAttack(),
    ]);
    document.body.dataset.refreshed = String(Date.now());
  }

  function applyFilters() {
    $("events").replaceChildren();
    state.queue = [];
    subscribe();
    loadEvents();
    refreshTimeline().catch(() => {});
  }

  async function start() {
    if (!state.token) return showLogin();
    try {
      const me = await api("/api/v1/whoami");
      state.role = me.role;
      $("who").textContent = me.name + " (" + me.role + ")";
    } catch (e) {
      if (state.token) showLogin("Could not reach the collector: " + e.message);
      return;
    }
    $("login").hidden = true;
    $("app").hidden = false;
    connect();
    loadEvents();
    refresh();
    clearInterval(state.timer);
    state.timer = setInterval(refresh, REFRESH_MS);
  }

  $("login-form").onsubmit = (ev) => {
    ev.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("linesentry.token", state.token);
    $("token").value = "";
    start();
  };
  $("filters").onsubmit = (ev) => {
    ev.preventDefault();
    applyFilters();
  };
  $("pause").onclick = () => {
    state.paused = !state.paused;
    $("pause").textContent = state.paused ? "Resume" : "Pause";
  };
  $("interval-clear").onclick = () => setInterval_(null);
  $("t-period").onchange = () => refreshTimeline().catch(() => {});
  $("detail-close").onclick = () => {
    state.selected = null;
    $("detail").replaceChildren(el("p", "Select an event to see all its fields, its chain verdict and the events correlated with it.", "muted"));
    $("detail-close").hidden = true;
  };
  $("refresh").onclick = refresh;
  $("logout").onclick = () => logout("Token forgotten.");
  // Redrawn for the chart's new width (the SVG is scaled by CSS meanwhile).
  let resizeTimer = null;
  new ResizeObserver(() => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (Number($("timeline").dataset.width) !== Math.max(300, $("timeline").clientWidth)) drawTimeline();
    }, 100);
  }).observe($("timeline"));
  // Counters for tests and for a person at the console: events received from the stream,
  // drawn, and the frames that drew them (more than MAX_ROWS in one frame: only the newest
  // are drawn, since the older would leave the table at once).
  const stats = () => ({ received: state.received, drawn: state.drawn, frames: state.frames,
    missed: Number($("missed").dataset.total || 0) });
  window.linesentry = { refresh, openDetail, openHistory, loadEvents, stats };
  start();
})();
