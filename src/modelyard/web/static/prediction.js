// A prediction's page: renders the output, and follows a running prediction live.
"use strict";
(function () {
  const state = window.MODELYARD;
  const output = document.getElementById("output");
  const logs = document.getElementById("logs");
  const status = document.getElementById("status");
  let prediction = state.prediction;
  window.renderOutput(output, prediction.output, state.outputSchema);
  const done = ["succeeded", "failed", "canceled"];
  if (done.includes(prediction.status) || !prediction.urls.stream) return;
  const stream = new URL(prediction.urls.stream, location.href);  // its path: any host name works
  const source = new EventSource(stream.pathname + stream.search);
  const text = window.streamingText(output);
  source.addEventListener("output", (e) => text.append(e.data));
  source.addEventListener("logs", (e) => { logs.textContent += e.data + "\n"; });
  source.addEventListener("done", () => { source.close(); window.location.reload(); });
  status.textContent = prediction.status;
})();
