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


// Keyboard: a region that scrolls sideways (a wide table on a phone, a long configuration) can take the focus, so
// arrow keys scroll it.
function focusableScrollers(root) {
  root.querySelectorAll("table.list, table.sbs, pre, .config pre").forEach(function (el) {
    if (!el.hasAttribute("tabindex") && (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1)) {
      el.setAttribute("tabindex", "0");
    }
  });
}
document.addEventListener("DOMContentLoaded", function () { focusableScrollers(document); });
document.addEventListener("htmx:afterSettle", function (event) { focusableScrollers(event.detail.elt || document); });

// Focus stays where the person was after an htmx swap: on the control with the same accessible name if the new
// content has it, else on the swapped region (never lost to <body>). A swap while nothing had the focus (a page's
// own loads, live updates) moves nothing.
let lastFocus = null;
document.addEventListener("htmx:beforeSwap", function () {
  const active = document.activeElement;
  if (active && active !== document.body) {
    lastFocus = {label: active.getAttribute("aria-label") || active.id || ""};
  }
});
document.addEventListener("htmx:afterSettle", function (event) {
  const had = lastFocus;
  lastFocus = null;
  if (!had || (document.activeElement && document.activeElement !== document.body)) return;
  let target = had.label ? [...document.querySelectorAll("[aria-label], [id]")].find(function (el) {
    return el.getAttribute("aria-label") === had.label || el.id === had.label;
  }) : null;
  if (!target && event.detail.elt && event.detail.elt.isConnected) {
    target = event.detail.elt;
    if (!target.hasAttribute("tabindex") && !target.matches("a, button, input, select, textarea")) {
      target.setAttribute("tabindex", "-1");
    }
  }
  if (target) target.focus({preventScroll: true});
});

// A select that changes the policy commits when the person has chosen: at once for a mouse or touch pick, but
// after arrow keys only on Enter or on leaving the select (arrowing through the options must not save each one).
// Such selects send "commit" (their hx-trigger) instead of acting on "change".
const COMMITS = "select[data-commits], [data-commits] select";
document.addEventListener("keydown", function (event) {
  const select = event.target.closest && event.target.closest(COMMITS);
  if (!select) return;
  if (event.key === "Enter" && select.dataset.pending) {
    event.preventDefault();
    delete select.dataset.pending;
    htmx.trigger(select, "commit");
  } else if (event.key !== "Enter" && event.key !== "Tab") {
    select.dataset.keyed = "1";
  }
}, true);
document.addEventListener("pointerdown", function (event) {
  const select = event.target.closest && event.target.closest(COMMITS);
  if (select) delete select.dataset.keyed;
}, true);
document.addEventListener("change", function (event) {
  const select = event.target.closest && event.target.closest(COMMITS);
  if (!select) return;
  if (select.dataset.keyed) { select.dataset.pending = "1"; return; }
  htmx.trigger(select, "commit");
}, true);
document.addEventListener("focusout", function (event) {
  const select = event.target.closest && event.target.closest(COMMITS);
  if (select && select.dataset.pending) {
    delete select.dataset.pending;
    delete select.dataset.keyed;
    htmx.trigger(select, "commit");
  }
}, true);


// The server form shows only the chosen transport's fields (both stay in the page without JavaScript).
function showTransport(form) {
  const chosen = form.querySelector("input[name=transport]:checked");
  if (!chosen) return;
  form.querySelectorAll("fieldset[data-transport]").forEach(function (set) {
    set.hidden = !set.dataset.transport.split(" ").includes(chosen.value);
  });
}
document.addEventListener("change", function (event) {
  if (event.target.matches("input[name=transport]")) showTransport(event.target.form);
});
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[name=transport]").forEach(function (input) { showTransport(input.form); });
});
