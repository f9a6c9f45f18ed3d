/* Charts of the risk pages, drawn with the vendored Chart.js from data the page embeds with
   json_script: the funnel plot of one KRI (sites' metric against denominator, with the expected
   metric and the +/-2 and +/-3 bounds) and a site's risk score and KRI scores over snapshots. */
(function () {
  "use strict";
  function data(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }
  var FLAG_COLOURS = {"2": "#c62828", "1": "#f9a825", "0": "#2e7d32", "-1": "#f9a825", "-2": "#c62828"};
  var BOUND_STYLES = {"-3": [6, 3], "-2": [2, 2], "0": [], "2": [2, 2], "3": [6, 3]};

  function funnel() {
    var funnel = data("funnel-data");
    var canvas = document.getElementById("funnel-chart");
    if (!funnel || !canvas || typeof Chart === "undefined") { return; }
    var datasets = funnel.bounds.map(function (bound) {
      return {type: "line", label: bound.z === 0 ? "expected" : (bound.z > 0 ? "+" : "") + bound.z, data: bound.points,
              borderColor: bound.z === 0 ? "#37474f" : "#90a4ae", borderDash: BOUND_STYLES[String(bound.z)],
              borderWidth: 1, pointRadius: 0, fill: false, tension: 0};
    });
    datasets.push({type: "scatter", label: "sites", data: funnel.points,
                   pointBackgroundColor: funnel.points.map(function (p) {
                     return p.flag === null ? "#adb5bd" : FLAG_COLOURS[String(p.flag)] || "#2e7d32"; }),
                   pointRadius: 4});
    new Chart(canvas, {
      data: {datasets: datasets},
      options: {
        responsive: true, maintainAspectRatio: false, animation: false, parsing: true,
        scales: {x: {type: "linear", title: {display: true, text: funnel.x}},
                 y: {type: "linear", title: {display: true, text: funnel.y}}},
        plugins: {tooltip: {callbacks: {label: function (item) {
          var p = item.raw;
          return p.site ? "site " + p.site + ": " + p.y.toPrecision(4) + " (flag " + (p.flag === null ? "masked" : p.flag) + ")"
                        : item.dataset.label + ": " + p.y.toPrecision(4);
        }}}}
      }
    });
  }

  function siteHistory() {
    var chart = data("site-chart-data");
    var risk = document.getElementById("risk-history-chart");
    var kris = document.getElementById("kri-history-chart");
    if (!chart || typeof Chart === "undefined") { return; }
    if (risk) {
      new Chart(risk, {type: "line", data: {labels: chart.dates, datasets: [{label: "site risk score", data: chart.risk,
        borderColor: "#c62828", tension: 0}]}, options: {responsive: true, maintainAspectRatio: false, animation: false,
        scales: {y: {min: 0, max: 100}}}});
    }
    if (kris) {
      var palette = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037", "#ad1457",
                     "#283593", "#558b2f", "#4e342e", "#37474f"];
      var datasets = Object.keys(chart.kris).map(function (kri, i) {
        return {label: chart.kris[kri].name, data: chart.kris[kri].points, borderColor: palette[i % palette.length],
                tension: 0, spanGaps: false};
      });
      new Chart(kris, {type: "line", data: {labels: chart.dates, datasets: datasets},
        options: {responsive: true, maintainAspectRatio: false, animation: false,
                  scales: {x: {type: "category"}, y: {title: {display: true, text: "score"}}}}});
    }
  }

  funnel();
  siteHistory();
})();
