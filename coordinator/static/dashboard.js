// The dashboard page: renders a RunView snapshot (coordinator/dashboard.py), from the data
// inlined in a report, or live from the coordinator's Server-Sent Events. Every value a
// device sent is set as text (textContent), never as HTML.
(function () {
  "use strict";

  var inline = JSON.parse(document.getElementById("data").textContent);
  var charts = {};
  var sortKey = "client";
  var sortDown = false;
  var latest = null;

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "";
    var units = ["B", "kB", "MB", "GB", "TB"];
    var i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return (i ? n.toFixed(n < 10 ? 2 : 1) : String(n)) + " " + units[i];
  }

  function number(n, digits) {
    return typeof n === "number" ? n.toFixed(digits) : "";
  }

  function clock(epoch) {
    if (typeof epoch !== "number") return "";
    return new Date(epoch * 1000).toLocaleTimeString();
  }

  function codecText(config) {
    if (!config || typeof config !== "object") return "none";
    var parts = [];
    if (config.prune) parts.push("prune " + JSON.stringify(config.prune.rate));
    if (config.sparsify) parts.push("top-" + Math.round(100 * config.sparsify.keep) + " %");
    if (config.wire && config.wire.bits) parts.push(config.wire.bits + "-bit");
    if (config.wire && config.wire.entropy) parts.push(config.wire.entropy);
    if (config.error_feedback) parts.push("error feedback");
    return parts.length ? parts.join(", ") : "float32";
  }

  function setSummary(pairs) {
    var dl = document.getElementById("summary");
    dl.textContent = "";
    pairs.forEach(function (pair) {
      var dt = document.createElement("dt");
      dt.textContent = pair[0];
      var dd = document.createElement("dd");
      dd.textContent = pair[1];
      dd.id = "summary-" + pair[0].replace(/[^a-z]+/g, "-");
      dl.appendChild(dt);
      dl.appendChild(dd);
    });
  }

  function renderHeader(view) {
    var h = view.header || {};
    var config = h.config || {};
    document.getElementById("run").textContent = h.run || "";
    var state = document.getElementById("state");
    state.textContent = h.state || "";
    state.className = "state " + String(h.state || "").split(/[ :]/)[0];
    var rounds = view.rounds || [];
    var sent = 0, raw = 0, down = 0, rawDown = 0;
    rounds.forEach(function (r) {
      sent += r.bytes_up || 0; raw += r.raw_up || 0; down += r.bytes_down || 0; rawDown += r.raw_down || 0;
    });
    var last = rounds.length ? rounds[rounds.length - 1] : {};
    setSummary([
      ["round", String(h.round || 0) + " of " + String(config.rounds || "?")],
      ["accuracy", typeof last.accuracy === "number" ? (100 * last.accuracy).toFixed(2) + " %" : "–"],
      ["strategy", typeof config.strategy === "string" ? config.strategy
        : config.strategy ? config.strategy.name || JSON.stringify(config.strategy) : "fedavg"],
      ["fingerprint", h.fingerprint || ""],
      ["uplink", codecText(config.uplink)],
      ["downlink", codecText(config.downlink) + (config.broadcast ? " (" + config.broadcast + ")" : "")],
      ["bytes up", bytes(sent) + (raw ? " (" + (raw / Math.max(sent, 1)).toFixed(1) + "x smaller than float32)" : "")],
      ["bytes down", bytes(down) + (rawDown ? " (" + (rawDown / Math.max(down, 1)).toFixed(1) + "x smaller)" : "")],
    ]);
  }

  function renderDevices(view) {
    var devices = (view.devices || []).slice();
    devices.sort(function (a, b) {
      var x = a[sortKey], y = b[sortKey];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * (sortDown ? -1 : 1);
    });
    var body = document.querySelector("#devices tbody");
    body.textContent = "";
    devices.forEach(function (d) {
      var row = document.createElement("tr");
      row.dataset.client = d.client;
      if (d.missed_deadline) row.className = "missed";
      cell(row, d.client);
      cell(row, d.online ? "online" : "offline", d.online ? "online" : "offline");
      cell(row, clock(d.last_seen));
      cell(row, d.selected); cell(row, d.answered); cell(row, d.late); cell(row, d.rejected_rounds);
      cell(row, d.last_reason, "reason");
      cell(row, number(d.mean_train_s, 2));
      cell(row, bytes(d.bytes_sent)); cell(row, bytes(d.bytes_received));
      cell(row, d.backend); cell(row, number(d.fps, 1));
      body.appendChild(row);
    });
    var online = devices.filter(function (d) { return d.online; }).length;
    document.getElementById("device-count").textContent = online + " online of " + devices.length;
    document.querySelectorAll("#devices th").forEach(function (th) {
      th.className = th.dataset.key === sortKey ? "sorted" + (sortDown ? " down" : "") : "";
    });
  }

  function renderRounds(view) {
    var body = document.querySelector("#rounds tbody");
    body.textContent = "";
    (view.rounds || []).slice().reverse().forEach(function (r) {
      var row = document.createElement("tr");
      row.dataset.round = r.round;
      cell(row, r.round + (r.restored ? " (restored)" : ""));
      cell(row, typeof r.accuracy === "number" ? (100 * r.accuracy).toFixed(2) + " %" : "", "accuracy");
      cell(row, number(r.loss, 4));
      cell(row, r.accepted + " of " + r.selected); cell(row, r.rejected);
      cell(row, bytes(r.bytes_up)); cell(row, bytes(r.bytes_down));
      cell(row, r.raw_up && r.bytes_up ? (r.raw_up / r.bytes_up).toFixed(1) + "x" : "");
      cell(row, number(r.round_time_s, 2)); cell(row, number(r.aggregate_s, 3));
      body.appendChild(row);
    });
  }

  function renderRejections(view) {
    var body = document.querySelector("#rejections tbody");
    body.textContent = "";
    (view.rejections || []).slice().reverse().forEach(function (r) {
      var row = document.createElement("tr");
      cell(row, clock(r.time)); cell(row, r.client); cell(row, r.round); cell(row, r.status);
      cell(row, r.reason, "reason");
      body.appendChild(row);
    });
  }

  function chart(id, series, data, width, format) {
    var target = document.getElementById(id);
    if (charts[id]) {
      charts[id].setData(data);
      return;
    }
    var y = { size: 70 };
    if (format) y.values = function (u, values) { return values.map(format); };
    var opts = {
      width: width, height: 220, legend: { live: false },
      scales: { x: { time: false } },
      axes: [{ label: "round", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }, y],
      series: [{ label: "round" }].concat(series),
    };
    if (series.some(function (s) { return s.scale === "loss"; })) {
      opts.axes.push({ scale: "loss", side: 1, grid: { show: false } });
    }
    charts[id] = new uPlot(opts, data, target);
  }

  function renderCharts(view) {
    if (typeof uPlot === "undefined") return;
    var rounds = view.rounds || [];
    var x = rounds.map(function (r) { return r.round; });
    var pick = function (key, scale) {
      return rounds.map(function (r) { return typeof r[key] === "number" ? r[key] * (scale || 1) : null; });
    };
    var width = Math.max(320, Math.min(680, (document.body.clientWidth - 140) / 2));  // two charts a row
    chart("chart-accuracy", [
      { label: "accuracy %", stroke: "#1f77b4", width: 2 },
      { label: "loss", stroke: "#d62728", scale: "loss" },
    ], [x, pick("accuracy", 100), pick("loss")], width);
    chart("chart-bytes", [
      { label: "up", stroke: "#2ca02c", width: 2 }, { label: "down", stroke: "#9467bd", width: 2 },
      { label: "up, float32", stroke: "#2ca02c", dash: [4, 4] },
      { label: "down, float32", stroke: "#9467bd", dash: [4, 4] },
    ], [x, pick("bytes_up"), pick("bytes_down"), pick("raw_up"), pick("raw_down")], width, bytes);
    var sums = {};
    var cumulative = function (key) {
      sums[key] = 0;
      return rounds.map(function (r) { sums[key] += r[key] || 0; return sums[key]; });
    };
    chart("chart-total", [
      { label: "up", stroke: "#2ca02c", width: 2 }, { label: "down", stroke: "#9467bd", width: 2 },
      { label: "up, float32", stroke: "#2ca02c", dash: [4, 4] },
      { label: "down, float32", stroke: "#9467bd", dash: [4, 4] },
    ], [x, cumulative("bytes_up"), cumulative("bytes_down"), cumulative("raw_up"), cumulative("raw_down")], width,
      bytes);
    chart("chart-time", [
      { label: "waiting s", stroke: "#8c564b" }, { label: "training s", stroke: "#ff7f0e", width: 2 },
      { label: "aggregation s", stroke: "#17becf" },
    ], [x, pick("wait_s"), pick("train_s"), pick("aggregate_s")], width);
  }

  function render(view) {
    latest = view;
    renderHeader(view);
    renderDevices(view);
    renderRounds(view);
    renderRejections(view);
    renderCharts(view);
    document.body.dataset.version = String(view.version);
  }

  document.querySelectorAll("#devices th").forEach(function (th) {
    th.addEventListener("click", function () {
      sortDown = sortKey === th.dataset.key ? !sortDown : false;
      sortKey = th.dataset.key;
      if (latest) renderDevices(latest);
    });
  });

  if (inline) {
    render(inline);
    document.getElementById("connection").textContent = "";
    return;
  }
  var token = new URLSearchParams(window.location.search).get("token");
  var source = new EventSource("events" + (token ? "?token=" + encodeURIComponent(token) : ""));
  source.onmessage = function (event) {
    document.getElementById("connection").textContent = "";
    render(JSON.parse(event.data));
  };
  source.onerror = function () {
    var state = latest && latest.header ? String(latest.header.state || "") : "";
    if (state === "finished" || state.indexOf("failed") === 0) {
      source.close();  // the run is over and its coordinator gone: nothing more will come
      document.getElementById("connection").textContent = "";
      return;
    }
    document.getElementById("connection").textContent =
      "no connection to the coordinator: retrying (the figures below are the last received)";
  };
})();
