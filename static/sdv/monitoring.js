// The monitoring plan's map: sites, monitors' homes and trips, drawn by the vendored Leaflet.
// Tiles only when a tile URL is configured (MONITORING_MAP_TILE_URL): the page works without.
(function () {
  const box = document.getElementById("monitoring-map");
  const source = document.getElementById("map-data");
  if (!box || !source || typeof L === "undefined") return;
  const data = JSON.parse(source.textContent);
  const breaches = new Set(JSON.parse(document.getElementById("breach-sites").textContent));
  const map = L.map(box, { zoomSnap: 0.25 });
  if (box.dataset.tiles) {
    L.tileLayer(box.dataset.tiles, { maxZoom: 18, attribution: box.dataset.attribution || "" }).addTo(map);
  }
  const colours = ["#0d6efd", "#6f42c1", "#fd7e14", "#198754", "#d63384", "#0dcaf0", "#6c757d", "#ffc107"];
  const colourOf = {};
  data.homes.forEach((h, i) => { colourOf[h.username] = colours[i % colours.length]; });
  const bounds = [];
  data.trips.forEach((t) => {
    L.polyline(t.points, { color: colourOf[t.monitor] || "#333", weight: 2, opacity: 0.7 }).bindTooltip(t.label).addTo(map);
  });
  data.sites.forEach((s) => {
    const bad = breaches.has(s.number);
    L.circleMarker([s.lat, s.lon], { radius: 7, color: bad ? "#dc3545" : "#212529", fillColor: bad ? "#dc3545" : "#ffffff",
      fillOpacity: 0.9, weight: 2 }).bindTooltip(`${s.number} ${s.name} (${s.city})`).addTo(map);
    bounds.push([s.lat, s.lon]);
  });
  data.homes.forEach((h) => {
    const d = 0.04;
    L.rectangle([[h.lat - d, h.lon - d], [h.lat + d, h.lon + d]], { color: colourOf[h.username], weight: 2, fillOpacity: 0.8 })
      .bindTooltip(`${h.name} (${h.username}), ${h.city}`).addTo(map);
    bounds.push([h.lat, h.lon]);
  });
  if (bounds.length) map.fitBounds(bounds, { padding: [30, 30] }); else map.setView([50, 10], 4);
  box.dataset.ready = "1";
})();
