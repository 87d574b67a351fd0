// Used by the dashboard's tunnel page and the admin's tunnel change page.
// The login card's countdown: <span data-countdown="SECONDS" data-expired="TEXT">. Counts from the page's
// own clock; at zero it says so and the answer can no longer be sent (the server refuses it anyway).
(function () {
  "use strict";
  var tick = function () {
    document.querySelectorAll("[data-countdown]").forEach(function (element) {
      if (!element.dataset.deadline) {
        element.dataset.deadline = String(Date.now() + Number(element.dataset.countdown) * 1000);
      }
      var left = Math.max(0, Math.round((Number(element.dataset.deadline) - Date.now()) / 1000));
      if (left > 0) {
        element.textContent = left + " s left";
        return;
      }
      element.textContent = element.dataset.expired;
      var form = element.closest("form");
      if (form) form.querySelectorAll("input, button").forEach(function (field) { field.disabled = true; });
    });
  };
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSettle", tick);
  setInterval(tick, 1000);
})();
