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

  // A video stream's HLS session (`video[data-hls-src]`), played with hls.js (Chromium has no
  // native HLS) or natively where the browser has it (Safari). Progress and errors are told in
  // #player-status, which screen readers announce.
  function startPlayer() {
    var video = document.querySelector("video[data-hls-src]");
    if (!video) {
      return;
    }
    var status = document.getElementById("player-status");
    var say = function (text) { if (status) { status.textContent = text; } };
    var source = video.getAttribute("data-hls-src");
    var play = function () {
      var started = video.play();
      if (started && started.catch) {
        started.catch(function () { say("Ready: press play."); });
      }
    };
    video.addEventListener("playing", function () { say("Playing."); });
    video.addEventListener("ended", function () { say("Played to the end."); });
    if (typeof Hls !== "undefined" && Hls.isSupported()) {
      var hls = new Hls({ enableWorker: false });
      hls.on(Hls.Events.MANIFEST_PARSED, play);
      hls.on(Hls.Events.ERROR, function (_, data) {
        if (data.fatal) {
          say("Playback failed: " + data.type + " (" + data.details + ").");
        }
      });
      hls.loadSource(source);
      hls.attachMedia(video);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = source;
      video.addEventListener("loadedmetadata", play);
    } else {
      say("This browser cannot play HLS; use the session URL below in an HLS player.");
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawSparklines(document);
    startPlayer();
  });
  document.addEventListener("htmx:afterSettle", function (event) { drawSparklines(event.target); });
})();
