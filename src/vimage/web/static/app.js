// vimage gui: draws the topology as SVG, edits it through the JSON API, runs consoles and
// shows link counters over one websocket. Plain JS, no build step (docs/gui.md).
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const SVG = "http://www.w3.org/2000/svg";
const PARAMS = ["bandwidth", "delay", "jitter", "loss", "ber", "duplicate", "queue"];
const SAMPLES = 60;  // points in a sparkline (one a second)
const $ = (id) => document.getElementById(id);

let view = null;        // the last answer of api/topology
let selected = null;    // {kind: "node", name} or {kind: "link", a, b}
let linking = null;     // null, or the nodes clicked so far in "Add link" mode
let consoleNode = null;
let socket = null;
let nextId = 1;
const consoles = {};    // node -> text of its console
const rates = {};       // "a|b" -> {last, bps: [], pps: []}
const sparks = {};      // "a|b" -> the SVG elements showing its rates

// -- talking to the server ---------------------------------------------------------------
async function api(method, path, body) {
  const options = {method, headers: {"X-Vimage-Token": TOKEN}};
  if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function say(text, ok) {
  $("message").textContent = text || "";
  $("message").className = "message" + (ok ? " ok" : "");
}

async function act(work) {
  try { say(""); await work(); } catch (error) { say(error.message); }
}

function setView(data) { view = data; render(); }
const reload = async () => setView(await api("GET", "api/topology"));
const push = async (topology) => setView(await api("PUT", "api/topology", {topology}));
const copy = () => structuredClone(view.topology);
const ends = (link) => [link.a.split(":")[0], link.b.split(":")[0]];
const withToken = (path) => path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);

function el(tag, attrs, parent, text) {
  const ns = ["svg", "g", "line", "circle", "rect", "text", "polyline"].includes(tag) ? SVG : null;
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

// -- the canvas ----------------------------------------------------------------------------
function render() {
  const t = view.topology;
  $("title").textContent = "vimage · " + t.name;
  $("status").textContent = view.up ? "running" : "stopped";
  $("status").className = "status" + (view.up ? " up" : "");
  $("start").disabled = view.up;
  $("stop").disabled = !view.up;
  $("save").disabled = !view.file;
  $("save").title = view.file || "started without a file: use Download";
  $("add-link").className = linking ? "on" : "";
  drawCanvas();
  drawPanel();
}

function position(name) { return view.topology.nodes[name].position || [80, 80]; }

function drawCanvas() {
  const svg = $("canvas");
  svg.replaceChildren();
  const points = Object.keys(view.topology.nodes).map(position);
  const xs = points.map((p) => p[0]).concat([0, 600]);
  const ys = points.map((p) => p[1]).concat([0, 400]);
  const [x0, y0] = [Math.min(...xs) - 60, Math.min(...ys) - 60];
  svg.setAttribute("viewBox", `${x0} ${y0} ${Math.max(...xs) - x0 + 80} ${Math.max(...ys) - y0 + 80}`);
  for (const link of view.topology.links) drawLink(svg, link);
  for (const [name, node] of Object.entries(view.topology.nodes)) drawNode(svg, name, node);
  updateSparks();
}

function linkLabel(link) {
  return ["bandwidth", "delay", "loss"].filter((k) => link[k] !== undefined).map((k) => link[k]).join(" ");
}

function drawLink(svg, link) {
  const [a, b] = ends(link);
  const [pa, pb] = [position(a), position(b)];
  const isSel = selected && selected.kind === "link" && selected.a === a && selected.b === b;
  const g = el("g", {class: "link" + (isSel ? " selected" : ""), "data-a": a, "data-b": b}, svg);
  for (const cls of ["wire", "hit"]) el("line", {class: cls, x1: pa[0], y1: pa[1], x2: pb[0], y2: pb[1]}, g);
  const [mx, my] = [(pa[0] + pb[0]) / 2, (pa[1] + pb[1]) / 2];
  el("text", {x: mx, y: my - 8}, g, linkLabel(link));
  const box = el("g", {transform: `translate(${mx - 40},${my + 6})`}, g);
  el("rect", {class: "sparkbox", width: 80, height: 26}, box);
  sparks[a + "|" + b] = {
    bps: el("polyline", {class: "spark"}, box),
    pps: el("polyline", {class: "spark pps"}, box),
    text: el("text", {x: 40, y: 38}, box, ""),
  };
  g.addEventListener("click", () => { selected = {kind: "link", a, b}; render(); });
}

function drawNode(svg, name, node) {
  const [x, y] = node.position || [80, 80];
  const isSel = selected && selected.kind === "node" && selected.name === name;
  const picked = linking && linking.includes(name);
  const g = el("g", {class: `node ${node.type}${isSel ? " selected" : ""}${picked ? " pick" : ""}`,
                     "data-name": name, transform: `translate(${x},${y})`}, svg);
  if (node.type === "lanswitch" || node.type === "hub") el("rect", {x: -20, y: -14, width: 40, height: 28}, g);
  else el("circle", {r: 18}, g);
  el("text", {y: 4}, g, node.type === "router" ? "R" : node.type[0].toUpperCase());
  el("text", {y: 34}, g, name);
  const rank = (view.ranks || {})[name];
  if (rank !== undefined) el("title", {}, g, `${name}: rank ${rank}`);
  g.addEventListener("mousedown", (event) => drag(event, g, name));
}

function drag(event, g, name) {
  event.preventDefault();
  const svg = $("canvas");
  const matrix = svg.getScreenCTM().inverse();
  const start = [event.clientX, event.clientY];
  const origin = position(name);
  let moved = false;
  let at = origin;
  const move = (e) => {
    const dx = (e.clientX - start[0]) * matrix.a;
    const dy = (e.clientY - start[1]) * matrix.d;
    moved = moved || Math.abs(dx) + Math.abs(dy) > 3;
    at = [Math.round(origin[0] + dx), Math.round(origin[1] + dy)];
    g.setAttribute("transform", `translate(${at[0]},${at[1]})`);
  };
  const up = () => {
    window.removeEventListener("mousemove", move);
    window.removeEventListener("mouseup", up);
    if (!moved) return clickNode(name);
    const t = copy();
    t.nodes[name].position = at;
    act(() => push(t));
  };
  window.addEventListener("mousemove", move);
  window.addEventListener("mouseup", up);
}

function clickNode(name) {
  if (linking) {
    if (!linking.includes(name)) linking.push(name);
    if (linking.length < 2) return render();
    const t = copy();
    t.links.push({a: linking[0], b: linking[1]});
    linking = null;
    return act(() => push(t));
  }
  selected = {kind: "node", name};
  render();
}

// -- the side panel ------------------------------------------------------------------------
function button(id, label, parent, handler) {
  const b = el("button", {id}, parent, label);
  b.addEventListener("click", () => act(handler));
  return b;
}

function drawPanel() {
  const panel = $("panel");
  panel.replaceChildren();
  if (selected && selected.kind === "node" && view.topology.nodes[selected.name]) return nodePanel(panel, selected.name);
  if (selected && selected.kind === "link" && findLink(copy(), selected.a, selected.b)) return linkPanel(panel, selected.a, selected.b);
  selected = null;
  el("p", {class: "hint"}, panel, linking ? "Click two nodes to link them." : "Click a node or a link.");
}

function nodePanel(panel, name) {
  const node = view.topology.nodes[name];
  el("h3", {}, panel, `${name} (${node.type}${node.model ? ", " + node.model : ""})`);
  const rank = (view.ranks || {})[name];  // a partitioned experiment: the rank serving it
  if (rank !== undefined) el("p", {id: "node-rank", class: "hint"}, panel, `on rank ${rank}`);
  const auto = view.addresses[name] || {};
  const l3 = !["lanswitch", "hub"].includes(node.type);  // switches hold no addresses
  for (const [ifname, iface] of Object.entries(l3 ? node.interfaces || {} : {})) {
    const label = el("label", {}, panel, ifname);
    el("input", {id: `addr-${ifname}`, "data-if": ifname, value: (iface.ipv4 || []).join(", "),
                 placeholder: (auto[ifname] || []).join(", ") || "no address"}, label);
  }
  const row = el("p", {}, panel);
  if (l3 && node.interfaces) button("apply-node", "Apply addresses", row, () => applyAddresses(name));
  button("open-console", "Console", row, async () => openConsole(name));
  button("delete-node", "Delete", row, () => deleteNode(name));
}

async function applyAddresses(name) {
  const t = copy();
  for (const input of document.querySelectorAll("#panel input[data-if]")) {
    const iface = t.nodes[name].interfaces[input.dataset.if];
    const list = input.value.split(/[\s,]+/).filter(Boolean);
    if (list.length) iface.ipv4 = list; else delete iface.ipv4;
  }
  await push(t);
  say("addresses changed", true);
}

function findLink(t, a, b) {
  return t.links.findIndex((l) => { const [x, y] = ends(l); return (x === a && y === b) || (x === b && y === a); });
}

function dropLink(t, index) {
  for (const end of [t.links[index].a, t.links[index].b]) {
    const [node, ifname] = end.split(":");
    const ifaces = (t.nodes[node] || {}).interfaces || {};
    if (ifname && ifaces[ifname] && Object.keys(ifaces[ifname]).length === 0) delete ifaces[ifname];
  }
  t.links.splice(index, 1);
}

async function deleteNode(name) {
  const t = copy();
  for (let i = t.links.length - 1; i >= 0; i--) if (ends(t.links[i]).includes(name)) dropLink(t, i);
  delete t.nodes[name];
  selected = null;
  await push(t);
}

function linkPanel(panel, a, b) {
  const link = view.topology.links[findLink(view.topology, a, b)];
  el("h3", {}, panel, `${link.a} — ${link.b}`);
  for (const key of PARAMS) {
    const label = el("label", {}, panel, key);
    el("input", {id: `param-${key}`, value: link[key] === undefined ? "" : link[key], placeholder: "default"}, label);
  }
  const row = el("p", {}, panel);
  button("apply-link", "Apply", row, () => applyLink(a, b));
  button("delete-link", "Delete", row, async () => {
    const t = copy();
    dropLink(t, findLink(t, a, b));
    selected = null;
    await push(t);
  });
  const cap = el("p", {}, panel);
  const state = view.captures.find((c) => c.a === a && c.b === b);
  button("capture-start", "Capture", cap, async () => { await api("POST", "api/capture/start", {a, b}); await reload(); });
  button("capture-stop", "Stop capture", cap, async () => { await api("POST", "api/capture/stop", {a, b}); await reload(); });
  if (state) {
    el("a", {id: "capture-download", href: withToken(`api/capture.pcap?a=${a}&b=${b}`), download: `${a}-${b}.pcap`},
       cap, ` pcap: ${state.captured} frames${state.running ? " so far" : ""}`);
  }
}

async function applyLink(a, b) {
  const params = {};
  for (const key of PARAMS) params[key] = $(`param-${key}`).value.trim() || null;
  await api("POST", "api/link", {a, b, params});
  await reload();
  say(`link ${a}-${b} changed${view.up ? " (live)" : ""}`, true);
}

// -- consoles and counters over the websocket ----------------------------------------------
function openConsole(name) {
  consoleNode = name;
  $("console").hidden = false;
  $("console-node").textContent = name;
  showConsole();
  $("console-input").focus();
}

function showConsole() {
  const out = $("console-output");
  out.textContent = consoles[consoleNode] || "";
  out.scrollTop = out.scrollHeight;
}

function write(node, text) {
  consoles[node] = (consoles[node] || "") + text;
  if (node === consoleNode) showConsole();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(TOKEN)}`);
  const pending = {};
  socket.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "counters") return counters(msg);
    const node = pending[msg.id] || consoleNode;
    delete pending[msg.id];
    if (msg.type === "result") write(node, msg.output + (msg.status ? `[exit ${msg.status}]\n` : ""));
    else if (msg.type === "error") write(node, `error: ${msg.error}\n`);
  };
  socket.onclose = () => setTimeout(connect, 2000);
  socket.sendCmd = (node, line) => {
    const id = nextId++;
    pending[id] = node;
    socket.send(JSON.stringify({type: "cmd", id, node, line}));
  };
}

function counters(msg) {
  if (view && msg.up !== view.up) reload();
  if (!msg.up) { for (const k in rates) delete rates[k]; return updateSparks(); }
  for (const link of msg.links) {
    const r = rates[link.a + "|" + link.b] ||= {last: null, bps: [], pps: []};
    if (r.last && msg.time > r.last.time) {
      const dt = msg.time - r.last.time;
      r.bps.push((link.bytes - r.last.bytes) * 8 / dt);
      r.pps.push((link.packets - r.last.packets) / dt);
      if (r.bps.length > SAMPLES) { r.bps.shift(); r.pps.shift(); }
    }
    r.last = {time: msg.time, bytes: link.bytes, packets: link.packets};
  }
  updateSparks();
}

function human(value, unit) {
  const steps = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [size, prefix] of steps) if (value >= size) return (value / size).toFixed(1) + " " + prefix + unit;
  return Math.round(value) + " " + unit;
}

function polyline(values) {
  const top = Math.max(...values, 1);
  const x = (i) => 80 - (values.length - 1 - i) * 80 / (SAMPLES - 1);  // the newest at the right
  return values.map((v, i) => `${x(i).toFixed(1)},${(24 - v / top * 22).toFixed(1)}`).join(" ");
}

function updateSparks() {
  for (const [key, s] of Object.entries(sparks)) {
    const r = rates[key];
    if (!r || !r.bps.length) { s.bps.setAttribute("points", ""); s.pps.setAttribute("points", ""); s.text.textContent = ""; continue; }
    s.bps.setAttribute("points", polyline(r.bps));
    s.pps.setAttribute("points", polyline(r.pps));
    s.text.textContent = `${human(r.bps.at(-1), "bit/s")} ${human(r.pps.at(-1), "pkt/s")}`;
  }
}

// -- the toolbar ---------------------------------------------------------------------------
function addNode() {
  const t = copy();
  const type = $("new-type").value;
  const prefix = type === "lanswitch" ? "switch" : type;
  let n = 1;
  while (t.nodes[prefix + n]) n++;
  const xs = Object.values(t.nodes).map((node) => (node.position || [0, 0])[0]);
  t.nodes[prefix + n] = {type, position: [Math.max(0, ...xs) + 120, 80]};
  if (type === "router") t.nodes[prefix + n].model = "static";
  selected = {kind: "node", name: prefix + n};
  return push(t);
}

function init() {
  $("start").addEventListener("click", () => act(async () => { say("starting..."); setView(await api("POST", "api/up")); say("running", true); }));
  $("stop").addEventListener("click", () => act(async () => setView(await api("POST", "api/down"))));
  $("save").addEventListener("click", () => act(async () => say("saved " + (await api("POST", "api/save")).saved, true)));
  $("add-node").addEventListener("click", () => act(addNode));
  $("add-link").addEventListener("click", () => { linking = linking ? null : []; render(); });
  $("download").href = withToken("api/yaml");
  $("console-input").addEventListener("keydown", (event) => {
    const line = event.target.value.trim();
    if (event.key !== "Enter" || !line || !consoleNode) return;
    write(consoleNode, `${consoleNode}> ${line}\n`);
    socket.sendCmd(consoleNode, line);
    event.target.value = "";
  });
  act(async () => {
    await reload();
    for (const type of view.node_types) el("option", {value: type}, $("new-type"), type);
  });
  connect();
}

init();
