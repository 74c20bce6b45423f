// The qw dashboard's only script: live regions and the "select all" box. No library.
// A region marked data-live="URL" is replaced by the HTML of each "update" event of the
// server-sent event stream at URL (the server renders and escapes it). Without
// JavaScript every page still works; it just does not update by itself.
(function () {
  "use strict";
  document.querySelectorAll("[data-live]").forEach(function (region) {
    var source = new EventSource(region.getAttribute("data-live"));
    source.addEventListener("update", function (event) {
      var open = Array.prototype.map.call(region.querySelectorAll("details"), function (d) {
        return d.open;
      });
      region.innerHTML = event.data;
      region.querySelectorAll("details").forEach(function (d, i) {
        d.open = Boolean(open[i]); // a traceback the reader opened stays open
      });
      region.classList.remove("stale");
    });
    source.addEventListener("error", function () {
      region.classList.add("stale"); // the browser reconnects by itself
    });
  });
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("input.pick").forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }
})();
