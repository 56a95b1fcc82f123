// The tcu-sim dashboard: map, table, command trace and fault controls, updated live from
// /dashboard/api/stream. Every text from the server goes into the page with textContent, never as HTML.
"use strict";
(function () {
  const PAGE = 50;
  const state = { offset: 0, total: 0, rows: new Map(), markers: new Map(), map: null, live: false };

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  async function call(method, url, body) {
    const options = { method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response = await fetch(url, options);
    if (response.status === 401 && url !== "/dashboard/api/session") {
      const token = window.prompt("Operator token");
      if (token) {
        await call("POST", "/dashboard/api/session", { token });
        response = await fetch(url, options);
      }
    }
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    return { ok: response.ok, status: response.status, data };
  }

  function notice(text) { document.getElementById("notice").textContent = text; }

  // -- map ----------------------------------------------------------------------------------------------
  function setUpMap() {
    const map = L.map("map", { preferCanvas: true, zoomControl: true });
    const tiles = new URLSearchParams(window.location.search).get("tiles") !== "off";
    if (tiles && navigator.onLine) {
      L.tileLayer("https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png", {
        maxZoom: 19, attribution: "© OpenStreetMap contributors",
      }).addTo(map);
    }
    map.setView([41.39, 2.17], 11);
    state.map = map;
  }

  function markerStyle(online) {
    return { radius: 6, weight: 1, color: "#123", fillOpacity: 0.9, fillColor: online ? "#2e7d32" : "#b71c1c" };
  }

  function placeCar(vin, lat, lon, online) {
    let marker = state.markers.get(vin);
    if (!marker) {
      marker = L.circleMarker([lat, lon], markerStyle(online));
      const label = el("span", vin);  // text, not HTML
      marker.bindTooltip(label);
      marker.addTo(state.map);
      state.markers.set(vin, marker);
    } else {
      marker.setLatLng([lat, lon]);
      marker.setStyle(markerStyle(online));
    }
  }

  async function loadPositions() {
    const { ok, data } = await call("GET", "/dashboard/api/positions");
    if (!ok) return;
    const points = [];
    for (const [vin, lat, lon, online] of data.cars) {
      placeCar(vin, lat, lon, online);
      points.push([lat, lon]);
    }
    if (points.length) state.map.fitBounds(points, { padding: [20, 20], maxZoom: 14 });
    const note = data.sampled ? `${data.cars.length} of ${data.total} cars on the map (a sample)`
                              : `${data.cars.length} cars on the map`;
    document.getElementById("map-note").textContent = note;
    document.getElementById("map").dataset.markers = String(state.markers.size);
  }

  // -- table --------------------------------------------------------------------------------------------
  function button(text, handler) {
    const b = el("button", text);
    b.type = "button";
    b.addEventListener("click", handler);
    return b;
  }

  async function control(vin, action, body) {
    const { ok, data } = await call("POST", `/dashboard/api/cars/${encodeURIComponent(vin)}/${action}`, body);
    notice(ok ? `${action} ${vin}: done` : `${action} ${vin}: ${data.error || "refused"}`);
  }

  function numberOf(id) { return Number(document.getElementById(id).value); }

  function renderRow(car) {
    const tr = el("tr");
    tr.dataset.vin = car.vin;
    tr.className = car.online ? "online" : "offline";
    const cells = [
      [car.vin, "vin"], [car.model], [car.group],
      [car.online ? `online (${car.signal_pct}%)` : "offline", "connection"],
      [car.locked ? "locked" : "unlocked", "locked"],
      [car.doors_open.join(", ") || "—", "doors"], [car.windows_open.join(", ") || "—", "windows"],
      [car.heater, "heater"], [`${car.battery_12v_v} V`, "battery"], [car.faults.join(", "), "faults"],
      [car.users, "users"], [car.last_command, "last-command"],
    ];
    for (const [text, cls] of cells) tr.appendChild(el("td", text, cls));
    const td = el("td", null, "controls");
    td.appendChild(button("offline", () => control(car.vin, "offline", { seconds: numberOf("offline-s") })));
    td.appendChild(button("weak signal", () => control(car.vin, "weak-signal", { signal_pct: 15, seconds: 60 })));
    td.appendChild(button("clock skew", () => control(car.vin, "clock-skew", { skew_s: numberOf("skew-s") })));
    const open = car.doors_open.includes("front_left");
    td.appendChild(button(open ? "close door" : "open door",
                          () => control(car.vin, "door", { door: "front_left", open: !open })));
    td.appendChild(button("clear", () => control(car.vin, "clear", {})));
    tr.appendChild(td);
    return tr;
  }

  function showCar(car) {
    state.rows.set(car.vin, car);
    placeCar(car.vin, car.lat, car.lon, car.online);
    const old = document.querySelector(`#cars tbody tr[data-vin="${CSS.escape(car.vin)}"]`);
    if (old) old.replaceWith(renderRow(car));
  }

  async function loadPage() {
    const { ok, data } = await call("GET", `/dashboard/api/cars?offset=${state.offset}&limit=${PAGE}`);
    if (!ok) return;
    state.total = data.total;
    const body = document.querySelector("#cars tbody");
    body.replaceChildren(...data.cars.map(renderRow));
    for (const car of data.cars) state.rows.set(car.vin, car);
    const last = Math.min(state.offset + PAGE, state.total);
    document.getElementById("page").textContent = `cars ${state.offset + 1}–${last} of ${state.total}`;
  }

  // -- header, trace, stream ----------------------------------------------------------------------------
  function showFleet(fleet) {
    document.getElementById("fleet-name").textContent = fleet.fleet;
    document.getElementById("fleet-counts").textContent = `${fleet.online}/${fleet.cars} online`;
    document.getElementById("broker").textContent = `broker: ${fleet.broker}`;
    document.getElementById("cloud").textContent = `cloud: ${fleet.cloud}`;
  }

  function trace(line, cls) {
    const list = document.getElementById("trace");
    list.insertBefore(el("li", line, cls), list.firstChild);
    while (list.childElementCount > 100) list.removeChild(list.lastChild);
  }

  function follow() {
    const source = new EventSource("/dashboard/api/stream");
    const badge = document.getElementById("live");
    source.addEventListener("open", () => { badge.textContent = "live"; badge.className = "badge on"; });
    source.addEventListener("error", () => { badge.textContent = "reconnecting…"; badge.className = "badge"; });
    source.addEventListener("fleet", (e) => showFleet(JSON.parse(e.data)));
    source.addEventListener("car", (e) => showCar(JSON.parse(e.data)));
    source.addEventListener("command", (e) => {
      const step = JSON.parse(e.data);
      trace(step.line, step.state);
    });
    source.addEventListener("notice", (e) => trace(JSON.parse(e.data).line, "notice"));
  }

  async function fleetControl(action) {
    const body = action === "latency" ? { latency_ms: numberOf("latency-ms"), seconds: 60 }
               : action === "black-hole" ? { seconds: 20 } : {};
    const { ok, data } = await call("POST", `/dashboard/api/fleet/${action}`, body);
    notice(ok ? `${action}: done` : `${action}: ${data.error || "refused"}`);
  }

  async function start() {
    setUpMap();
    document.getElementById("prev").addEventListener("click", () => {
      state.offset = Math.max(0, state.offset - PAGE); loadPage();
    });
    document.getElementById("next").addEventListener("click", () => {
      if (state.offset + PAGE < state.total) { state.offset += PAGE; loadPage(); }
    });
    for (const b of document.querySelectorAll("[data-fleet]")) {
      b.addEventListener("click", () => fleetControl(b.dataset.fleet));
    }
    const fleet = await call("GET", "/dashboard/api/fleet");
    if (fleet.ok) showFleet(fleet.data);
    const recent = await call("GET", "/dashboard/api/commands");
    if (recent.ok) for (const line of recent.data.lines.slice().reverse()) trace(line, "");
    follow();
    await Promise.all([loadPage(), loadPositions()]);
    document.body.dataset.ready = "true";
  }

  window.addEventListener("DOMContentLoaded", start);
})();
