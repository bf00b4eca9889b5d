// The status page's only script: it rewrites each <time datetime="…Z"> from UTC into the reader's
// own time zone, as the browser reports it. Without it (or without JavaScript) the times stay in UTC,
// which the page says. Standard APIs only (Intl.DateTimeFormat); it fetches and keeps nothing.
(function () {
  "use strict";
  if (!window.Intl || !Intl.DateTimeFormat) return;
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    timeZoneName: "short",
  });
  var times = document.querySelectorAll("time[datetime]");
  for (var i = 0; i < times.length; i++) {
    var when = new Date(times[i].getAttribute("datetime"));
    if (isNaN(when.getTime())) continue;
    times[i].setAttribute("title", times[i].textContent);
    times[i].textContent = format.format(when);
    times[i].setAttribute("data-local", "1");
  }
  var note = document.getElementById("zone-note");
  if (note) {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    note.textContent = zone ? "Times are in your time zone (" + zone + ")." : "Times are in your time zone.";
  }
})();
