// Shipyard console: progressive enhancement only. Every page reads without this file; with
// it, parts marked data-poll refresh (backing off while nothing changes or the server is
// unreachable), logs marked data-log follow, and figures marked data-chart draw with uPlot.
(function () {
  "use strict";
  var MIN_MS = 2000, MAX_MS = 30000;

  function poll(el) {
    var url = el.getAttribute("data-poll"), delay = MIN_MS, last = el.innerHTML;
    function tick() {
      if (el.getAttribute("data-final") === "1") return;
      if (document.hidden) { setTimeout(tick, delay); return; }
      fetch(url, {headers: {"X-Console-Poll": "1"}, credentials: "same-origin"}).then(function (r) {
        if (!r.ok) throw new Error(r.status);
        var final = r.headers.get("X-Console-Final") === "1";
        return r.text().then(function (text) {
          if (text !== last && !el.contains(document.activeElement)) {
            el.innerHTML = text; last = text; delay = MIN_MS;
            if (window.htmx) window.htmx.process(el);
          } else {
            delay = Math.min(MAX_MS, delay * 1.5);
          }
          if (final) el.setAttribute("data-final", "1");
        });
      }).catch(function () { delay = Math.min(MAX_MS, delay * 2); })
        .then(function () { setTimeout(tick, delay); });
    }
    setTimeout(tick, delay);
  }

  function follow(pre) {
    if (pre.getAttribute("data-follow") !== "1") return;
    var url = pre.getAttribute("data-log"), after = +pre.getAttribute("data-after") || 0;
    var delay = 1000;
    function fmt(ms) { return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC"; }
    function tick() {
      fetch(url + "&after=" + after, {credentials: "same-origin"}).then(function (r) {
        if (!r.ok) throw new Error(r.status);
        return r.json();
      }).then(function (data) {
        var stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
        data.lines.forEach(function (line) {
          var span = document.createElement("span"), ts = document.createElement("span");
          span.className = "line"; ts.className = "ts"; ts.textContent = fmt(line[0]);
          span.appendChild(ts); span.appendChild(document.createTextNode(" " + line[1] + "\n"));
          pre.appendChild(span);
        });
        if (data.lines.length) {
          var empty = document.getElementById("log-empty");
          if (empty) empty.remove();
          delay = 1000;
        } else {
          delay = Math.min(MAX_MS, delay * 1.5);
        }
        after = data.next; pre.setAttribute("data-after", after);
        if (stick) pre.scrollTop = pre.scrollHeight;
        if (data.final && !data.lines.length) return;
        setTimeout(tick, data.lines.length ? 200 : delay);
      }).catch(function () { delay = Math.min(MAX_MS, delay * 2); setTimeout(tick, delay); });
    }
    pre.scrollTop = pre.scrollHeight;
    tick();
  }

  var PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
  var DASHES = [[], [6, 3], [2, 2], [8, 2, 2, 2]];

  function aligned(series) {
    // uPlot wants one x array: the union of the series' times, gaps as null.
    var names = Object.keys(series), xs = {};
    names.forEach(function (n) { series[n].x.forEach(function (x) { xs[x] = true; }); });
    var x = Object.keys(xs).map(Number).sort(function (a, b) { return a - b; });
    var index = {}; x.forEach(function (v, i) { index[v] = i; });
    var data = [x];
    names.forEach(function (n) {
      var ys = new Array(x.length).fill(null);
      series[n].x.forEach(function (t, i) { ys[index[t]] = series[n].y[i]; });
      data.push(ys);
    });
    return {names: names, data: data};
  }

  function chart(fig) {
    if (!window.uPlot) return;
    var holder = fig.querySelector(".chart-data");
    var series = JSON.parse(holder.textContent || "{}");
    var scatter = fig.getAttribute("data-kind") === "scatter";
    var plot = null, count = -1;
    function draw(s) {
      var a = aligned(s), total = a.data.slice(1).reduce(function (n, ys) {
        return n + ys.filter(function (v) { return v !== null; }).length; }, 0);
      fig.setAttribute("data-points", String(total));
      if (plot && a.names.length + 1 === plot.series.length) { plot.setData(a.data); return; }
      if (plot) plot.destroy();
      if (!a.names.length) return;
      var x = a.data[0], windowS = +fig.getAttribute("data-window") || 0;
      var xScale = {time: !scatter};
      if (windowS) {
        var now = Date.now() / 1000;
        xScale.range = function () { return [now - windowS, now + 60]; };
      } else if (x.length < 2 || x[0] === x[x.length - 1]) {
        // One time alone: uPlot would stretch the axis over years around it.
        xScale.range = function () { return [x[0] - 30, x[0] + 30]; };
      }
      var opts = {
        width: Math.max(300, fig.clientWidth - 10), height: 240,
        scales: {x: xScale},
        axes: [{stroke: getComputedStyle(fig).color}, {stroke: getComputedStyle(fig).color}],
        series: [{label: scatter ? "trial" : "time"}].concat(a.names.map(function (n, i) {
          return {label: n, stroke: PALETTE[i % PALETTE.length], dash: DASHES[i % DASHES.length],
                  width: 2, spanGaps: true, points: {show: scatter || a.data[0].length < 40}};
        }))
      };
      plot = new window.uPlot(opts, a.data, fig);
    }
    draw(series);
    var src = fig.getAttribute("data-chart"), delay = MIN_MS;
    if (!src || fig.getAttribute("data-final") === "1") return;
    function tick() {
      fetch(src, {credentials: "same-origin"}).then(function (r) {
        if (!r.ok) throw new Error(r.status); return r.json();
      }).then(function (d) {
        var n = JSON.stringify(d.series).length;
        if (n !== count) { count = n; draw(d.series); delay = MIN_MS; }
        else delay = Math.min(MAX_MS, delay * 1.5);
        if (!d.final) setTimeout(tick, delay);
      }).catch(function () { delay = Math.min(MAX_MS, delay * 2); setTimeout(tick, delay); });
    }
    setTimeout(tick, delay);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
    document.querySelectorAll("pre[data-log]").forEach(follow);
    document.querySelectorAll("figure[data-chart]").forEach(chart);
    document.documentElement.setAttribute("data-console-ready", "1");
  });
})();
