// The Shoal console's own script: sparklines (uPlot) for every `.spark` element, drawn again
// when htmx swaps new content in. Everything else is server-rendered HTML and htmx attributes.
(function () {
  "use strict";

  function drawSparklines(root) {
    if (typeof uPlot === "undefined") {
      return;
    }
    root.querySelectorAll(".spark:not([data-drawn])").forEach(function (element) {
      element.setAttribute("data-drawn", "1");
      var points = (element.getAttribute("data-points") || "")
        .split(",")
        .filter(function (text) { return text !== ""; })
        .map(Number);
      if (points.length < 2) {
        points = [0, 0];
      }
      var xs = points.map(function (_, index) { return index; });
      new uPlot(
        {
          width: 96,
          height: 24,
          pxAlign: false,
          cursor: { show: false },
          select: { show: false },
          legend: { show: false },
          scales: { x: { time: false }, y: { range: function (u, min, max) { return [0, Math.max(max, 1)]; } } },
          axes: [{ show: false }, { show: false }],
          series: [{}, { stroke: "#0b5cad", width: 1.5, fill: "rgba(11, 92, 173, 0.12)" }],
        },
        [xs, points],
        element
      );
    });
  }

  document.addEventListener("DOMContentLoaded", function () { drawSparklines(document); });
  document.addEventListener("htmx:afterSettle", function (event) { drawSparklines(event.target); });
})();
