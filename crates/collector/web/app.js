// linesentry collector page: live events over the WebSocket stream, per-type counts of the
// last 24 h, gateway status and open alerts. Plain JS, no build step. Everything shown is
// set with textContent (never innerHTML): event data comes from the field.
"use strict";

(() => {
  const MAX_ROWS = 500;
  const REFRESH_MS = 30000;
  const $ = (id) => document.getElementById(id);
  const state = { token: null, role: null, ws: null, paused: false, backoff: 1000, timer: null };

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

  function time(iso) {
    if (!iso) return "never";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
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

  function filters() {
    const f = {};
    const types = $("f-type").value.split(",").map((s) => s.trim()).filter(Boolean);
    if (types.length) f.event_types = types;
    if ($("f-severity").value) f.min_severity = $("f-severity").value;
    for (const [id, key] of [["f-gateway", "gateway_id"], ["f-station", "station_id"], ["f-user", "user_id"]]) {
      if ($(id).value.trim()) f[key] = $(id).value.trim();
    }
    return f;
  }

  function summary(data) {
    const text = JSON.stringify(data || {});
    return text.length > 160 ? text.slice(0, 157) + "..." : text;
  }

  function addEvent(e) {
    if (state.paused) return;
    const tr = el("tr", null, "event fresh");
    tr.dataset.id = e.id;
    tr.dataset.severity = e.severity;
    tr.dataset.type = e.event_type;
    tr.append(el("td", time(e.timestamp)));
    const sev = el("td");
    sev.append(el("span", e.severity, "sev sev-" + e.severity));
    tr.append(sev);
    // The collector's own events are its (gateway_id = its id); the gateway one is about is
    // event_data.source_gateway, shown beside it.
    const about = (e.event_data && e.event_data.source_gateway) || "";
    const gateway = about ? e.gateway_id + " (about " + about + ")" : e.gateway_id;
    const station = e.station_id || (about && e.event_data.source_station) || "";
    tr.append(el("td", e.event_type), el("td", gateway), el("td", station), el("td", e.user_id || ""));
    tr.append(el("td", e.verification, "chain-" + e.verification));
    tr.append(el("td", summary(e.event_data), "data"));
    const body = $("events");
    body.prepend(tr);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
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

  async function refreshCounts() {
    const s = await api("/api/v1/stats?period=24h");
    const body = $("counts");
    body.replaceChildren();
    Object.entries(s.by_type || {})
      .sort((a, b) => b[1] - a[1])
      .forEach(([type, n]) => {
        const tr = el("tr");
        tr.dataset.type = type;
        tr.append(el("td", type), el("td", n));
        body.append(tr);
      });
    $("total").textContent = s.total + " events from " + time(s.from) + " to " + time(s.to);
  }

  async function refreshGateways() {
    const g = await api("/api/v1/gateways");
    const body = $("gateways");
    body.replaceChildren();
    for (const gw of g.gateways || []) {
      const tr = el("tr");
      tr.dataset.gateway = gw.gateway_id;
      const status = gw.enabled ? (gw.status || "unknown") : "disabled";
      tr.append(el("td", gw.gateway_id), el("td", status, status === "online" ? "" : "offline"));
      tr.append(el("td", time(gw.last_seen)), el("td", gw.last_seq ?? ""));
      const gaps = el("td", gw.gaps + (gw.gaps_unexplained ? " (" + gw.gaps_unexplained + " unexplained)" : ""));
      gaps.className = gw.gaps_unexplained ? "chain-gap" : "";
      gaps.dataset.gaps = gw.gaps;
      tr.append(gaps, el("td", gw.missing_events), el("td", gw.broken, gw.broken ? "chain-broken" : ""), el("td", gw.pending));
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
      tr.append(el("td", time(al.raised_at)), sev, el("td", al.rule), el("td", al.group_key), el("td", al.source_count));
      const cell = el("td");
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
        cell.append(b);
      }
      tr.append(cell);
      body.append(tr);
    }
  }

  async function refresh() {
    await Promise.allSettled([refreshCounts(), refreshGateways(), refreshAlerts()]);
    document.body.dataset.refreshed = String(Date.now());
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
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      $("events").replaceChildren();
      state.ws.send(JSON.stringify({ type: "subscribe", filters: filters() }));
    }
  };
  $("pause").onclick = () => {
    state.paused = !state.paused;
    $("pause").textContent = state.paused ? "Resume" : "Pause";
  };
  $("refresh").onclick = refresh;
  $("logout").onclick = () => logout("Token forgotten.");
  window.linesentry = { refresh };
  start();
})();
