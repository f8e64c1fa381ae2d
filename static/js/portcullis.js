// Copy buttons and showing htmx refusals; live.js keeps pages current over the websocket. Everything else is htmx.
"use strict";

document.addEventListener("click", function (event) {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.textContent;
  const done = function () {
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = "Copy"; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
  } else {
    selectText(source);
  }
});

function selectText(element) {
  // Fallback where the clipboard API is unavailable: select it so Ctrl+C works.
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

// A refused htmx request (400/403) says why in plain text: show it instead of failing silently.
document.addEventListener("htmx:responseError", function (event) {
  let box = document.getElementById("bulk-error");
  if (!box) {
    box = document.createElement("div");
    box.id = "bulk-error";
    box.className = "error floating";
    box.setAttribute("role", "alert");
    document.querySelector("main").prepend(box);
  }
  const xhr = event.detail.xhr;
  box.textContent = xhr.status === 403 ? "Only staff users can change this." : (xhr.responseText || "That did not work.").slice(0, 500);
});
document.addEventListener("htmx:afterRequest", function (event) {
  // Only a change that went through clears the refusal: a filter refreshing the list does not.
  const box = document.getElementById("bulk-error");
  const verb = ((event.detail.requestConfig || {}).verb || "get").toLowerCase();
  if (box && event.detail.successful && verb !== "get") box.textContent = "";
});

// A confirmation panel closes without a request; its heading takes the focus when it opens.
document.addEventListener("click", function (event) {
  const button = event.target.closest("button[data-dismiss]");
  if (!button) return;
  const panel = document.getElementById(button.dataset.dismiss);
  if (!panel) return;
  const empty = document.createElement("div");
  empty.id = panel.id;
  empty.setAttribute("role", "status");
  panel.replaceWith(empty);
});
document.addEventListener("htmx:afterSettle", function () {
  const heading = document.querySelector(".confirm h2[tabindex='-1']:not([data-focused])");
  if (heading) { heading.dataset.focused = "1"; heading.focus(); }
});
