// hookd's status page without a reload: times in the reader's time zone,
// and, on a page that follows job events (data-live on <body>), its live
// parts ([data-live] elements) fetched again whenever a job it shows
// changes. Everything works without this script.
"use strict";
(function () {
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) t.title = d.toLocaleString();
    });
  }
  localTimes(document);

  var body = document.body;
  var live = body.dataset.live;
  if (!live || !window.EventSource || !window.fetch || !window.DOMParser) return;
  var url = body.dataset.root + "events" + (live === "all" ? "" : "?" + live);
  var timer = null, busy = false, again = false;

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (el) {
          var fresh = el.id && doc.getElementById(el.id);
          // Replace what is inside, not the element: an aria-live region
          // must stay in place for screen readers to announce the change.
          if (fresh && fresh.innerHTML !== el.innerHTML) {
            el.innerHTML = fresh.innerHTML;
            localTimes(el);
          }
        });
        var title = doc.querySelector("title");
        if (title) document.title = title.textContent;
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  var es = new EventSource(url);
  es.addEventListener("job", function () {
    clearTimeout(timer);
    timer = setTimeout(refresh, 150);
  });
  // Events between the page's render and the stream's start (a job that
  // ends at once), or during a reconnect, were missed: refresh once.
  es.addEventListener("open", function () {
    body.dataset.stream = "open";
    refresh();
  });
  es.addEventListener("error", function () {
    body.dataset.stream = "closed";
  });
})();
