// The live dashboard: one websocket (/ws/live/) pushes server-rendered partials. Each pushed element carries its
// id and data-into (the id of the list it belongs in); this script replaces the element with that id in place,
// or puts it at the top of its list. It also keeps the pending-approvals badge and the tab title current and
// counts down each approval's time left. No markup is built here: the server renders everything.
"use strict";

(function () {
  const body = document.body;
  if (!body.dataset.live) return; // signed out: nothing to listen to
  const FIRST_DELAY_MS = 1000;
  const MAX_DELAY_MS = 30000; // reconnect backoff doubles up to this
  let delay = FIRST_DELAY_MS;
  let everOpen = false;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + body.dataset.live);
    socket.addEventListener("open", function () {
      delay = FIRST_DELAY_MS;
      if (everOpen) resync();
      everOpen = true;
      body.dataset.liveState = "open";
    });
    socket.addEventListener("message", function (event) {
      const message = JSON.parse(event.data);
      if (message.html) place(fromHtml(message.html));
      if (typeof message.pending === "number") setPending(message.pending);
      if (typeof message.review === "number") setReview(message.review);
    });
    socket.addEventListener("close", function () {
      body.dataset.liveState = "closed";
      // Jitter so that many tabs do not reconnect in step after a restart.
      setTimeout(connect, delay / 2 + Math.random() * delay / 2);
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    });
  }

  // Events sent while the socket was down are lost: a reconnect reloads the lists marked data-live-resync
  // (the approvals queue) from this page's own URL. The server re-sends the count by itself.
  function resync() {
    document.querySelectorAll("[data-live-resync]").forEach(function (list) {
      window.htmx.ajax("GET", location.href, {target: "#" + list.id, select: "#" + list.id, swap: "outerHTML"});
    });
  }

  function fromHtml(html) {
    const template = document.createElement("template"); // parses <tr> too
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }

  // A list with data-live-insert="unfiltered" (the call log) takes new items only when no filter or older page
  // is shown: a new call may not match the filter. Items already shown are still updated in place.
  function takesNew(list) {
    if (list.dataset.liveInsert !== "unfiltered") return true;
    return !Array.from(new URLSearchParams(location.search).values()).some(Boolean);
  }

  // Browser notifications, opted into on the approvals page (stored in this browser only): a new approval card
  // that arrives over the websocket, on any dashboard page, raises one notification; clicking it opens the card.
  const NOTIFY_KEY = "portcullis.notify";
  const notified = new Set();
  function notifyNew(element) {
    if (!element.classList.contains("approval") || element.dataset.into !== "approvals-pending") return;
    if (document.getElementById(element.id) || notified.has(element.id)) return;
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    if (localStorage.getItem(NOTIFY_KEY) !== "on") return;
    notified.add(element.id);
    const shown = new Notification(element.dataset.notifyTitle || "Approval needed", {
      body: element.dataset.notifyBody || "", tag: element.id});
    shown.addEventListener("click", function () {
      window.focus();
      location.href = body.dataset.approvalsUrl + "#" + element.id;
    });
  }

  function setUpNotifyToggle() {
    const button = document.getElementById("notify-toggle");
    const state = document.getElementById("notify-state");
    if (!button || !("Notification" in window)) return;
    function show() {
      const on = localStorage.getItem(NOTIFY_KEY) === "on" && Notification.permission === "granted";
      button.textContent = on ? button.dataset.on : button.dataset.off;
      if (state) {
        state.textContent = Notification.permission === "denied"
          ? "This browser blocks notifications from this site: allow them in its site settings."
          : on ? "This browser shows a notification when a call waits for approval." : "";
      }
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      if (localStorage.getItem(NOTIFY_KEY) === "on") {
        localStorage.removeItem(NOTIFY_KEY);
        show();
        return;
      }
      Notification.requestPermission().then(function (permission) {
        if (permission === "granted") localStorage.setItem(NOTIFY_KEY, "on");
        show();
      });
    });
    show();
  }

  function place(element) {
    if (!element || !element.id) return;
    notifyNew(element);
    const list = document.getElementById(element.dataset.into || "");
    const shown = document.getElementById(element.id);
    if (shown === element) { // swapped in by htmx (a decision's answer): move it if it now belongs elsewhere
      if (list && element.parentElement !== list) list.prepend(element);
      return;
    }
    if (shown && (!list || shown.parentElement === list)) {
      shown.replaceWith(element);
    } else if (list && (shown || takesNew(list))) {
      if (shown) shown.remove();
      list.prepend(element);
      element.classList.add("live-new"); // a brief highlight (CSS) so a new arrival is noticed
    } else {
      return;
    }
    if (window.htmx) window.htmx.process(element);
    tick();
  }

  document.addEventListener("htmx:load", function (event) {
    const element = event.detail.elt;
    if (element.dataset && element.dataset.into) place(element);
  });

  function setPending(count) {
    const badge = document.getElementById("pending-count");
    if (badge) {
      badge.textContent = String(count);
      badge.dataset.count = String(count);
    }
    document.title = (count > 0 ? "(" + count + ") " : "") + document.title.replace(/^\(\d+\) /, "");
  }

  function setReview(count) {
    const badge = document.getElementById("review-count");
    if (badge) {
      badge.textContent = String(count);
      badge.dataset.count = String(count);
    }
  }

  function clock(seconds) {
    const h = Math.floor(seconds / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = String(seconds % 60).padStart(2, "0");
    return h ? h + ":" + String(m).padStart(2, "0") + ":" + s : m + ":" + s;
  }

  // Time left counts from when this page received the element, so the browser's clock need not match the server's.
  function tick() {
    const now = Date.now();
    document.querySelectorAll("[data-seconds-left]").forEach(function (element) {
      if (!element.dataset.deadline) element.dataset.deadline = String(now + Number(element.dataset.secondsLeft) * 1000);
      const left = Math.max(0, Math.round((Number(element.dataset.deadline) - now) / 1000));
      if (left > 0) {
        element.textContent = clock(left) + " left";
        return;
      }
      element.textContent = "expired: the agent must call again";
      element.removeAttribute("data-seconds-left");
      const card = element.closest(".approval");
      if (card) card.querySelectorAll("button").forEach(function (button) { button.disabled = true; });
    });
  }

  setInterval(tick, 1000);
  tick();
  setUpNotifyToggle();
  connect();
})();
