// The deviation dashboard's charts: each site's rate against the study's, and the monthly trend.
(function () {
  const data = JSON.parse(document.getElementById("dashboard-data").textContent);
  if (typeof Chart === "undefined") return;
  new Chart(document.getElementById("rate-chart"), {
    type: "bar",
    data: {labels: data.sites, datasets: [
      {label: "Site rate per 1000 subject-days", data: data.rates, backgroundColor: "#4c78a8"},
      {label: "Study rate", data: data.sites.map(() => data.study_rate), type: "line", borderColor: "#e45756",
       pointRadius: 0, borderDash: [6, 4]}]},
    options: {animation: false, responsive: true, maintainAspectRatio: false},
  });
  new Chart(document.getElementById("trend-chart"), {
    type: "line",
    data: {labels: data.months, datasets: [{label: "Deviations per month", data: data.trend, borderColor: "#4c78a8"}]},
    options: {animation: false, responsive: true, maintainAspectRatio: false},
  });
})();
