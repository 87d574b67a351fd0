// Small helpers of the dashboard; everything works without them, they only add convenience.
(function () {
  "use strict";
  // Controls that only work with a script (copy, select all) start hidden: without JavaScript they would do nothing.
  var reveal = function () {
    document.querySelectorAll("[data-needs-js][hidden]").forEach(function (element) { element.hidden = false; });
  };
  document.addEventListener("DOMContentLoaded", reveal);
  document.addEventListener("htmx:afterSettle", reveal);
  // Copy buttons: <button class="copy" data-copy="text">.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) return;
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(button.dataset.copy).then(done);
    } else {
      // Plain http on a LAN address has no clipboard API: fall back to a selection copy.
      var area = document.createElement("textarea");
      area.value = button.dataset.copy;
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
      done();
    }
  });
  // A page answering a create POST that shows a secret once (a new token) says where its list lives:
  // a reload then fetches the list (GET) instead of sending the form again.
  document.addEventListener("DOMContentLoaded", function () {
    var once = document.querySelector("[data-replace-url]");
    if (once && window.history && history.replaceState) history.replaceState(null, "", once.dataset.replaceUrl);
  });
  // "Select all" checkbox of a table: <input type="checkbox" data-select-all="name">.
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches("input[data-select-all]")) return;
    document.querySelectorAll('input[name="' + box.dataset.selectAll + '"]').forEach(function (item) {
      item.checked = box.checked;
    });
  });
  // Log tails follow new lines: keep them scrolled to the end unless the reader scrolled up.
  var following = true;
  var scrollLogs = function () {
    document.querySelectorAll("pre[data-follow]").forEach(function (pre) {
      if (following) pre.scrollTop = pre.scrollHeight;
    });
  };
  document.addEventListener("DOMContentLoaded", scrollLogs);
  document.addEventListener("htmx:beforeSwap", function () {
    var pre = document.querySelector("pre[data-follow]");
    if (pre) following = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
  });
  document.addEventListener("htmx:afterSettle", scrollLogs);
  // Polling (hx-trigger="every Ns [!document.hidden]") pauses while the tab is hidden;
  // refresh once when it becomes visible again so nothing stale is shown.
  document.addEventListener("visibilitychange", function () {
    if (document.hidden || !window.htmx) return;
    document.querySelectorAll("[data-refresh-on-show]").forEach(function (element) {
      window.htmx.trigger(element, "refresh");
    });
  });
})();
