// The dashboard's only script: it follows a broadcast live. Every page works without it; on the
// broadcast page it swaps the server-rendered progress section for each fresh one the stream sends.
// Standard APIs only (EventSource, DOMParser); no key or token is kept anywhere by it.
(function () {
  "use strict";

  function follow(live) {
    var url = live.getAttribute("data-stream");
    if (!url || !window.EventSource) return;
    var source = new EventSource(url);
    var done = false;

    function swap(event) {
      var parsed = new DOMParser().parseFromString(event.data, "text/html");
      var fresh = parsed.getElementById("live");
      if (!fresh) return;
      var current = document.getElementById("live");
      current.replaceWith(document.importNode(fresh, true));
    }

    source.addEventListener("progress", swap);
    // The server ends the stream right after `completed`; closing only then (in the error event
    // that ending fires, before the browser's reconnect is due) never cuts a response short.
    source.addEventListener("completed", function (event) {
      done = true;
      swap(event);
    });
    source.addEventListener("signed-out", function (event) {
      done = true;
      var note = document.getElementById("live-note");
      if (note) note.textContent = event.data + " The figures above stopped updating.";
    });
    // Leaving the page ends the stream (the browser reports that as an aborted request).
    window.addEventListener("pagehide", function () {
      done = true;
      source.close();
    });
    source.addEventListener("error", function () {
      if (done) {
        source.close();
        return;
      }
      var note = document.getElementById("live-note");
      if (!note) return;
      // CLOSED: the server refused to go on (signed out, say); CONNECTING: the browser retries.
      note.textContent =
        source.readyState === EventSource.CLOSED
          ? "Live updates stopped: reload the page (you may need to sign in again)."
          : "Reconnecting…";
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    if (live) follow(live);
  });
})();
