// Healporium web app: small enhancements over pages that work without script.
// 1. Tells the server the browser's time zone (a cookie), so dates show in local time.
// 2. Live updates: a page that names what it shows (body[data-watch]) listens to
//    /app/events and, when something it may read changed, reloads its content in place.
(function () {
  "use strict";
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && document.cookie.indexOf("hp_tz=" + encodeURIComponent(zone)) < 0) {
      document.cookie = "hp_tz=" + encodeURIComponent(zone) + "; path=/app; samesite=lax";
    }
  } catch (e) { /* no zone: dates stay in UTC */ }

  var watch = document.body.getAttribute("data-watch");
  if (!watch || !window.EventSource || !window.fetch || !window.DOMParser) { return; }
  var pending = null;
  var busy = false;

  function typing() {
    var a = document.activeElement;
    return a && a.form && (a.tagName === "INPUT" || a.tagName === "TEXTAREA") && a.value;
  }

  function refresh() {
    pending = null;
    if (busy) { return; }
    if (typing()) { pending = setTimeout(refresh, 2000); return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        busy = false;
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("content");
        var here = document.getElementById("content");
        if (!fresh || !here) { return; }
        here.replaceWith(fresh);
        var note = document.getElementById("live-note");
        if (note) { note.hidden = false; }
      })
      .catch(function () { busy = false; });
  }

  var source = new EventSource("/app/events?watch=" + encodeURIComponent(watch));
  source.addEventListener("changed", function () {
    if (!pending) { pending = setTimeout(refresh, 150); }
  });
})();
