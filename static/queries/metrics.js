/* Charts of the query metrics page, drawn with the vendored Chart.js from the metrics the page
   embeds with json_script (the same dict as GET /api/v1/query-metrics/). */
(function () {
  "use strict";
  var node = document.getElementById("metrics-data");
  if (!node || typeof Chart === "undefined") { return; }
  var metrics = JSON.parse(node.textContent);
  var STATE_COLOURS = {candidate: "#7e57c2", open: "#f9a825", answered: "#1e88e5", closed: "#2e7d32",
                       cancelled: "#90a4ae"};
  var ANSWER = "#1e88e5", CLOSE = "#2e7d32";
  var base = {responsive: true, maintainAspectRatio: false, animation: false};

  function bar(id, labels, datasets, options) {
    var canvas = document.getElementById(id);
    if (!canvas) { return; }
    new Chart(canvas, {type: "bar", data: {labels: labels, datasets: datasets}, options: Object.assign({}, base, options)});
  }
  function medians(rows, label) {
    return [
      {label: "days to answer", data: rows.map(function (r) { return r.median_days_to_answer; }), backgroundColor: ANSWER},
      {label: "days to close", data: rows.map(function (r) { return r.median_days_to_close; }), backgroundColor: CLOSE}
    ];
  }

  var states = Object.keys(metrics.states);
  var counts = states.map(function (s) { return metrics.states[s]; });
  var nonZero = counts.filter(function (n) { return n > 0; });
  // A closed history dwarfs the open queries (42,095 against 67 in clindata): log scale then.
  var logScale = nonZero.length > 1 && Math.max.apply(null, nonZero) > 50 * Math.min.apply(null, nonZero);
  bar("chart-states", states, [{label: "queries", data: counts,
      backgroundColor: states.map(function (s) { return STATE_COLOURS[s]; })}],
      {plugins: {legend: {display: false}}, scales: {y: logScale
        ? {type: "logarithmic", title: {display: true, text: "queries (log scale)"}}
        : {beginAtZero: true, ticks: {precision: 0}}}});

  bar("chart-aging", metrics.aging.map(function (b) { return b.bucket; }), [
    {label: "open", data: metrics.aging.map(function (b) { return b.open; }), backgroundColor: STATE_COLOURS.open},
    {label: "answered", data: metrics.aging.map(function (b) { return b.answered; }), backgroundColor: STATE_COLOURS.answered}
  ], {scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true, ticks: {precision: 0}}}});

  bar("chart-rules", metrics.by_rule.map(function (r) { return r.rule; }), medians(metrics.by_rule),
      {indexAxis: "y", scales: {x: {beginAtZero: true, title: {display: true, text: "median days"}}}});
  bar("chart-recipients", metrics.by_recipient.map(function (r) { return r.label || r.recipient; }),
      medians(metrics.by_recipient), {scales: {y: {beginAtZero: true, title: {display: true, text: "median days"}}}});

  bar("chart-sites", metrics.by_site.map(function (r) { return r.site; }), [
    {label: "median days to close", data: metrics.by_site.map(function (r) { return r.median_days_to_close; }),
     backgroundColor: CLOSE}
  ], {plugins: {legend: {display: false}, tooltip: {callbacks: {afterLabel: function (item) {
        var row = metrics.by_site[item.dataIndex];
        return row.closed + " closed of " + row.queries + ", " + row.outstanding + " open or answered";
      }}}},
      scales: {x: {title: {display: true, text: "site"}}, y: {beginAtZero: true, title: {display: true, text: "median days"}}}});
})();
