// The admin page: the cluster as the nodes report it (GET /api/v1/cluster),
// a live rate graph, and a client lookup (GET /api/v1/presence/<id>), all
// behind the API key. The key is entered in a form and kept in this
// script's memory only: never in a URL, never in storage.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  let key = null;
  let timer = null;
  let previous = null; // {at, sends by node}
  const rates = [];    // total msgs/s, the last 60 samples

  function api(path) {
    return fetch(path, { headers: { Authorization: "Bearer " + key } }).then((r) => {
      if (r.status === 401) throw new Error("wrong API key");
      if (!r.ok && r.status !== 404) throw new Error("HTTP " + r.status);
      return r.status === 404 ? null : r.json();
    });
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = String(text);
    row.appendChild(td);
  }

  function total(sends) {
    return Object.values(sends || {}).reduce((a, b) => a + b, 0);
  }

  function refresh() {
    api("/api/v1/cluster").then((cluster) => {
      $("status").textContent = "live";
      $("status").className = "pill open";
      const now = Date.now();
      const body = $("nodes").querySelector("tbody");
      body.textContent = "";
      let sum = 0;
      for (const node of cluster.nodes) {
        const row = document.createElement("tr");
        row.dataset.node = node.node;
        let rate = 0;
        if (previous && previous.sends[node.node] !== undefined) {
          rate = (total(node.sends) - previous.sends[node.node]) / ((now - previous.at) / 1000);
        }
        sum += Math.max(0, rate);
        cell(row, node.node);
        cell(row, node.sessions);
        cell(row, node.detached);
        cell(row, node.in_flight);
        cell(row, rate.toFixed(1));
        cell(row, node.offline_receipts);
        cell(row, node.presence + (node.presence_ok ? " ok" : " DOWN") + " / " +
          node.bus + (node.bus_ok ? " ok" : " DOWN"));
        body.appendChild(row);
      }
      previous = { at: now, sends: Object.fromEntries(cluster.nodes.map((n) => [n.node, total(n.sends)])) };
      rates.push(sum);
      if (rates.length > 60) rates.shift();
      const top = Math.max(1, ...rates);
      $("rate-line").setAttribute("points",
        rates.map((r, i) => (i * 10) + "," + (118 - (r / top) * 110).toFixed(1)).join(" "));
      $("rate-now").textContent = sum.toFixed(1) + " msgs/s now, " + top.toFixed(1) + " at most in the last minute";
    }).catch((e) => {
      $("status").textContent = e.message;
      $("status").className = "pill closed";
    });
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    key = $("key").value;
    $("key").value = "";
    $("unlock").hidden = true;
    $("admin").hidden = false;
    clearInterval(timer);
    refresh();
    timer = setInterval(refresh, 1000);
  });

  $("lookup-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("client").value.trim();
    const out = $("client-result");
    out.textContent = "";
    api("/api/v1/presence/" + encodeURIComponent(id)).then((p) => {
      const head = document.createElement("p");
      head.id = "client-summary";
      head.textContent = p.client_id + (p.online ? " is online on " + p.devices.length + " device(s)" : " is offline");
      out.appendChild(head);
      const list = document.createElement("ul");
      for (const d of p.devices) {
        const li = document.createElement("li");
        li.textContent = d.device + " on node " + d.node + ", session " + d.session + ", since " + new Date(d.since).toISOString();
        list.appendChild(li);
      }
      out.appendChild(list);
    }).catch((e) => { out.textContent = e.message; });
  });
})();
