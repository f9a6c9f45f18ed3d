/* Query inbox: "select all" on the page, the count of ticked queries, and only the options of the
   chosen bulk action (recipient for reassign, resolution for close). The form works without it. */
(function () {
  "use strict";
  var form = document.getElementById("bulk-form");
  if (!form) { return; }
  var boxes = form.querySelectorAll("input[name=ids]");
  var all = document.getElementById("select-all");
  var action = document.getElementById("bulk-action");
  var selected = document.getElementById("bulk-selected");

  function count() {
    var n = form.querySelectorAll("input[name=ids]:checked").length;
    if (selected) { selected.textContent = n ? n + " selected" : ""; }
    if (all) { all.checked = n > 0 && n === boxes.length; all.indeterminate = n > 0 && n < boxes.length; }
  }
  function options() {
    form.querySelectorAll("[data-for-action]").forEach(function (field) {
      field.hidden = !action || field.getAttribute("data-for-action") !== action.value;
    });
  }
  if (all) {
    all.addEventListener("change", function () {
      boxes.forEach(function (box) { box.checked = all.checked; });
      count();
    });
  }
  boxes.forEach(function (box) { box.addEventListener("change", count); });
  if (action) { action.addEventListener("change", options); }
  options();
  count();
})();
