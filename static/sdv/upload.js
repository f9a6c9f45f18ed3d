// Drag and drop of source documents (several files at once) onto a subject's or a visit's drop
// zone: each file is sent to POST /api/v1/source-documents/ (session and CSRF token, as the form
// would) and its outcome listed; the page reloads once every file is answered. Without
// JavaScript the same form posts the chosen files to the upload view.
(function () {
  "use strict";
  function csrf(form) {
    return form.querySelector("input[name=csrfmiddlewaretoken]").value;
  }
  function line(form, text, ok) {
    var item = document.createElement("li");
    item.textContent = text;
    item.className = ok ? "upload-ok" : "upload-error";
    form.querySelector(".dropzone-status").appendChild(item);
  }
  function send(form, file) {
    var data = new FormData();
    data.append("study", form.dataset.study);
    data.append("subject_id", form.dataset.subject);
    data.append("visit_oid", form.dataset.visit || "");
    data.append("file", file);
    return fetch("/api/v1/source-documents/", {
      method: "POST", body: data, credentials: "same-origin",
      headers: {"X-CSRFToken": csrf(form), "Accept": "application/json"}
    }).then(function (response) {
      return response.json().then(function (body) {
        if (response.ok) {
          line(form, file.name + ": " + (response.status === 201 ? "uploaded" : "already uploaded") +
               " (document " + body.id + ")", true);
        } else {
          line(form, file.name + ": " + (body.message || response.statusText), false);
        }
      });
    }).catch(function (error) { line(form, file.name + ": " + error, false); });
  }
  function uploadAll(form, files) {
    var pending = Array.prototype.map.call(files, function (file) { return send(form, file); });
    Promise.all(pending).then(function () {
      form.classList.remove("dropzone-busy");
      form.dataset.done = "true";
      if (!form.querySelector(".upload-error")) { window.setTimeout(function () { window.location.reload(); }, 800); }
    });
    form.classList.add("dropzone-busy");
  }
  document.querySelectorAll("form.dropzone").forEach(function (form) {
    var input = form.querySelector("input[type=file]");
    form.addEventListener("dragover", function (event) { event.preventDefault(); form.classList.add("dropzone-over"); });
    form.addEventListener("dragleave", function () { form.classList.remove("dropzone-over"); });
    form.addEventListener("drop", function (event) {
      event.preventDefault();
      form.classList.remove("dropzone-over");
      if (event.dataTransfer && event.dataTransfer.files.length) { uploadAll(form, event.dataTransfer.files); }
    });
    input.addEventListener("change", function () { if (input.files.length) { uploadAll(form, input.files); } });
    form.addEventListener("submit", function (event) {
      if (input.files.length) { event.preventDefault(); uploadAll(form, input.files); }
    });
  });
})();
