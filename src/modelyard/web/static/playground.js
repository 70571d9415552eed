// The model page: tabs, the Playground form (validation that matches the server's, sliders,
// drag and drop), running a prediction through the API with the session cookie, following it
// live over SSE, cancelling it, and the API tab's code for the current values.
"use strict";
(function () {
  const state = window.MODELYARD;
  const API_HEADERS = {"X-Requested-With": "modelyard"};  // the API's CSRF guard for cookies

  // --- tabs (without JavaScript every section shows) ------------------------------------------
  const tabs = Array.from(document.querySelectorAll(".tabs a"));
  function showTab() {
    const wanted = (location.hash || "#playground").slice(1);
    const known = tabs.some((a) => a.hash === "#" + wanted);
    const current = known ? wanted : "playground";
    document.querySelectorAll("section.tab").forEach((s) => { s.hidden = s.id !== current; });
    tabs.forEach((a) => a.classList.toggle("current", a.hash === "#" + current));
  }
  window.addEventListener("hashchange", showTab);
  showTab();

  const form = document.getElementById("run-form");
  if (!form) return;
  const status = document.getElementById("status");
  const timing = document.getElementById("timing");
  const output = document.getElementById("output");
  const logs = document.getElementById("logs");
  const cancel = document.getElementById("cancel");
  const runButton = document.getElementById("run");
  const permalink = document.getElementById("permalink");

  // --- widgets ---------------------------------------------------------------------------------
  document.querySelectorAll("input[type=range][data-slider-for]").forEach((slider) => {
    const number = document.getElementById(slider.dataset.sliderFor);
    slider.addEventListener("input", () => { number.value = slider.value; refreshCode(); });
    number.addEventListener("input", () => { if (number.value !== "") slider.value = number.value; });
  });
  document.querySelectorAll(".drop").forEach((zone) => {
    const input = document.getElementById(zone.dataset.dropFor);
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      input.files = e.dataTransfer.files;
      input.dispatchEvent(new Event("change", {bubbles: true}));
    });
    // A chosen file replaces the URL box's value (an example's URL stayed shown, though the run
    // used the file), and a chosen image shows a preview.
    const urlBox = zone.querySelector(".file-url");
    input.addEventListener("change", () => {
      if (input.files.length) urlBox.value = "";
      showPreview(zone, Array.from(input.files));
    });
    urlBox.addEventListener("input", () => {
      if (urlBox.value.trim()) { input.value = ""; showPreview(zone, []); }
    });
  });
  function showPreview(zone, files) {
    zone.querySelectorAll("img.preview").forEach((img) => { URL.revokeObjectURL(img.src); img.remove(); });
    for (const file of files.filter((f) => f.type.startsWith("image/"))) {
      const img = document.createElement("img");
      img.className = "preview";
      img.alt = file.name;
      img.src = URL.createObjectURL(file);
      zone.appendChild(img);
    }
  }

  // --- reading and checking the form -----------------------------------------------------------
  function accepts(accept, file) {
    if (!accept) return true;
    return accept.split(",").map((a) => a.trim().toLowerCase()).some((a) => {
      if (a.startsWith(".")) return file.name.toLowerCase().endsWith(a);
      if (a.endsWith("/*")) return file.type.startsWith(a.slice(0, -1));
      return file.type === a;
    });
  }

  // The element holding a field's value (not its slider, nor its URL box).
  function control(field) {
    return field.querySelector("textarea, select, input:not(.file-url):not([type=range])");
  }

  function convert(raw, type) {
    if (type === "integer") {
      if (!/^-?\d+$/.test(raw.trim())) return {error: "Enter a whole number."};
      return {value: parseInt(raw, 10)};
    }
    if (type === "number") {
      const number = Number(raw);
      if (raw.trim() === "" || Number.isNaN(number)) return {error: "Enter a number."};
      return {value: number};
    }
    if (type === "boolean") return {value: raw === "true"};
    return {value: raw};
  }

  // {values, errors}: values as the API wants them (File objects still to upload), errors by name.
  function readForm(source = form) {
    const values = {};
    const errors = {};
    for (const field of source.querySelectorAll(".field[data-name]")) {
      const name = field.dataset.name;
      const widget = field.dataset.widget;
      const input = control(field);
      let value;
      let error = "";
      if (widget === "checkbox") {
        value = input.checked;
      } else if (widget === "file" || widget === "files") {
        const url = field.querySelector(".file-url").value.trim();
        const files = Array.from(input.files);
        if (files.length) {
          const wrong = files.find((f) => !accepts(input.accept, f));
          if (wrong) error = `${wrong.name} is not an accepted file (${input.accept}).`;
          value = widget === "files" ? files : files[0];
        } else if (url) {
          value = widget === "files" ? [url] : url;
        }
      } else if (widget === "list") {
        const lines = input.value.split("\n").map((s) => s.trim()).filter(Boolean);
        if (lines.length) {
          const converted = lines.map((l) => convert(l, field.dataset.itemType));
          const bad = converted.find((c) => c.error);
          if (bad) error = bad.error;
          else value = converted.map((c) => c.value);
        }
      } else if (widget === "json") {
        if (input.value.trim() !== "") {
          try {
            value = JSON.parse(input.value);
          } catch (e) {
            error = "Enter valid JSON.";
          }
        }
      } else if (input.value !== "") {
        const converted = convert(input.value, field.dataset.type);
        if (converted.error) error = converted.error;
        value = converted.value;
      }
      if (!error) error = constraintError(field, input, value);
      if (error) errors[name] = error;
      else if (value !== undefined) values[name] = value;
    }
    return {values, errors};
  }

  function constraintError(field, input, value) {
    const required = input.required || field.querySelector("[required]") !== null;
    if (value === undefined) return required ? "This field is required." : "";
    if (input.type === "number" || input.type === "text" || input.tagName === "TEXTAREA" || input.type === "password") {
      if (input.type === "number") {
        if (input.min !== "" && value < Number(input.min)) return `Must be at least ${input.min}.`;
        if (input.max !== "" && value > Number(input.max)) return `Must be at most ${input.max}.`;
      } else if (typeof value === "string") {
        const min = input.getAttribute("minlength");
        const max = input.getAttribute("maxlength");
        if (min !== null && value.length < Number(min)) return `Must be at least ${min} characters.`;
        if (max !== null && value.length > Number(max)) return `Must be at most ${max} characters.`;
        const pattern = compiled(input.dataset.pattern);
        if (pattern && !pattern.test(value)) return `Must match ${input.dataset.pattern}.`;
      }
    }
    return "";
  }

  // A Python pattern JavaScript cannot compile ((?P<name>...), \Z...) is left to the server.
  function compiled(pattern) {
    if (!pattern) return null;
    try {
      return new RegExp(pattern, "u");
    } catch (error) {
      return null;
    }
  }

  function showErrors(errors, source = form) {
    source.querySelectorAll(".field[data-name]").forEach((field) => {
      const box = field.querySelector(".field-error");
      const message = errors[field.dataset.name];
      box.hidden = !message;
      box.textContent = message || "";
      field.classList.toggle("invalid", Boolean(message));
    });
  }

  // --- running -----------------------------------------------------------------------------------
  // The server's URLs carry its public URL; the page may be open under another name for the
  // same server (localhost, 0.0.0.0), so only their path is used.
  function here(url) {
    const parsed = new URL(url, location.href);
    return parsed.pathname + parsed.search;
  }

  async function api(method, path, body) {
    const init = {method, headers: {...API_HEADERS}, credentials: "same-origin"};
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path.startsWith("http") ? here(path) : "/v1" + path, init);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw Object.assign(new Error(data.detail || response.statusText), {data});
    return data;
  }

  async function upload(file) {
    const form = new FormData();
    form.append("content", file, file.name);
    return (await api("POST", "/files", form)).urls.get;
  }

  async function uploaded(values) {
    const result = {};
    for (const [name, value] of Object.entries(values)) {
      if (value instanceof File) result[name] = await upload(value);
      else if (Array.isArray(value) && value.some((v) => v instanceof File)) {
        result[name] = await Promise.all(value.map((v) => (v instanceof File ? upload(v) : v)));
      } else result[name] = value;
    }
    return result;
  }

  let current = null;  // the prediction being followed

  function setStatus(text, cls) {
    status.textContent = text;
    status.className = "status " + (cls || text);
  }

  // The total (what the user waited) first, then queue (a cold boot included), setup and run
  // time, as the prediction pages show them (context.run_times).
  function runTimes(prediction) {
    const m = prediction.metrics || {};
    const secs = (t) => (t < 1 ? `${Math.round(t * 1000)} ms` : `${t.toFixed(1)} s`);
    const parts = [];
    if (prediction.started_at) parts.push("queued " + secs(Math.max(0, (Date.parse(prediction.started_at) - Date.parse(prediction.created_at)) / 1000)));
    if (m.boot_setup_time !== undefined) parts.push("setup " + secs(m.boot_setup_time));
    if (m.predict_time !== undefined) parts.push("run " + secs(m.predict_time));
    if (m.total_time === undefined) return m.predict_time !== undefined ? secs(m.predict_time) : "";
    return secs(m.total_time) + (parts.length ? ` (${parts.join(", ")})` : "");
  }

  function finish(prediction) {
    current = null;
    cancel.hidden = true;
    runButton.disabled = false;
    setStatus(prediction.status);
    timing.textContent = runTimes(prediction);
    if (prediction.status === "succeeded") window.renderOutput(output, prediction.output, state.outputSchema);
    else if (prediction.status === "canceled") output.replaceChildren(Object.assign(document.createElement("p"), {className: "help", textContent: "The prediction was canceled."}));
    else if (prediction.error) output.replaceChildren(Object.assign(document.createElement("p"), {className: "error", textContent: prediction.error}));
    logs.textContent = prediction.logs || logs.textContent;
  }

  async function follow(prediction) {
    current = prediction;
    cancel.hidden = false;
    permalink.hidden = false;
    permalink.href = "/p/" + prediction.id;
    logs.textContent = "";
    setStatus(prediction.status);
    const text = window.streamingText(output);
    const source = new EventSource(here(prediction.urls.stream));
    source.addEventListener("output", (e) => {
      if (current && current.id === prediction.id) {
        setStatus("processing");
        text.append(e.data);
      }
    });
    source.addEventListener("logs", (e) => {
      logs.textContent += e.data + "\n";
      document.getElementById("logs-box").open = true;
      logs.scrollTop = logs.scrollHeight;
    });
    const ended = new Promise((resolve) => {
      source.addEventListener("done", () => { source.close(); resolve(); });
      source.addEventListener("error", () => { if (source.readyState === EventSource.CLOSED) resolve(); });
    });
    // Status and timings come from the prediction itself; the stream carries output and logs.
    // A failed poll (a restart, a rate limit) is retried: the prediction goes on regardless.
    const started = Date.now();
    let delay = 500;
    try {
      while (true) {
        let latest;
        try {
          latest = await api("GET", "/predictions/" + prediction.id);
          delay = 500;
        } catch (error) {
          delay = Math.min(delay * 2, 8000);
          setStatus("reconnecting", "starting");
          await new Promise((r) => setTimeout(r, delay));
          continue;
        }
        if (["succeeded", "failed", "canceled"].includes(latest.status)) {
          await Promise.race([ended, new Promise((r) => setTimeout(r, 500))]);
          return finish(latest);
        }
        setStatus(latest.status);
        timing.textContent = `${((Date.now() - started) / 1000).toFixed(1)} s`;
        await new Promise((r) => setTimeout(r, delay));
      }
    } finally {
      source.close();
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!runButton) return;  // signed out: the page says to sign in
    const {values, errors} = readForm();
    showErrors(errors);
    if (Object.keys(errors).length) {
      setStatus("invalid input", "failed");
      return;
    }
    runButton.disabled = true;
    setStatus("uploading", "starting");
    try {
      const input = await uploaded(values);
      const version = `${form.dataset.model}:${form.dataset.version}`;  // this model's, not a namesake's
      const prediction = await api("POST", "/predictions", {version, input, stream: true});
      await follow(prediction);
    } catch (error) {
      runButton.disabled = false;
      cancel.hidden = true;
      const fields = (error.data && error.data.invalid_fields) || [];
      const byName = {};
      fields.forEach((f) => { byName[String(f.field || "").replace(/^input\./, "").split(".")[0]] = f.description; });
      showErrors(byName);
      setStatus("failed");
      output.replaceChildren(Object.assign(document.createElement("p"), {className: "error", textContent: error.message}));
    }
  });

  if (cancel) cancel.addEventListener("click", async () => {
    if (!current) return;
    cancel.disabled = true;
    try {
      await api("POST", current.urls.cancel);
    } finally {
      cancel.disabled = false;
    }
  });

  form.addEventListener("reset", () => setTimeout(() => { showErrors({}); refreshCode(); }));

  // --- the default example fills the form and the output ---------------------------------------
  const example = state.defaultExample;
  if (example && example.input) {
    for (const [name, value] of Object.entries(example.input)) {
      const field = form.querySelector(`.field[data-name="${CSS.escape(name)}"]`);
      if (!field) continue;
      const input = control(field);
      if (field.dataset.widget === "checkbox") input.checked = Boolean(value);
      else if (field.dataset.widget === "file") field.querySelector(".file-url").value = value;
      else if (field.dataset.widget === "files") field.querySelector(".file-url").value = [].concat(value)[0] || "";
      else if (field.dataset.widget === "list") input.value = [].concat(value).join("\n");
      else if (field.dataset.widget === "json") input.value = JSON.stringify(value, null, 2);
      else input.value = value;
      const slider = field.querySelector("input[type=range]");
      if (slider) slider.value = input.value;
    }
    if (example.status === "succeeded") {
      window.renderOutput(output, example.output, state.outputSchema);
      setStatus("example", "succeeded");
      timing.textContent = runTimes(example);
    }
  }

  // --- the Train tab: a training of this version into a model of yours ---------------------------
  const trainForm = document.getElementById("train-form");
  if (trainForm && trainForm.querySelector("button[type=submit]")) {
    const trainStatus = document.getElementById("train-status");
    const trainLogs = document.getElementById("train-logs");
    const result = document.getElementById("train-result");
    const trainButton = trainForm.querySelector("button[type=submit]");
    trainForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (trainButton.disabled) return;  // one training per press
      const destination = document.getElementById("in-destination").value.trim();
      const {values, errors} = readForm(trainForm);
      const destinationError = document.getElementById("destination-error");
      const badDestination = !/^[^/\s]+\/[^/\s]+$/.test(destination);
      destinationError.hidden = !badDestination;
      destinationError.textContent = badDestination ? "Give the model to train into as owner/name." : "";
      showErrors(errors, trainForm);
      if (badDestination || Object.keys(errors).length) return;
      const [owner, name] = trainForm.dataset.model.split("/");
      trainStatus.textContent = "uploading";
      trainButton.disabled = true;
      try {
        const input = await uploaded(values);
        let training = await api("POST", `/models/${owner}/${name}/versions/${trainForm.dataset.version}/trainings`, {destination, input});
        while (!["succeeded", "failed", "canceled"].includes(training.status)) {
          trainStatus.textContent = training.status;
          trainStatus.className = "status " + training.status;
          trainLogs.textContent = training.logs || "";
          await new Promise((r) => setTimeout(r, 1000));
          training = await api("GET", "/trainings/" + training.id);
        }
        trainStatus.textContent = training.status;
        trainStatus.className = "status " + training.status;
        trainLogs.textContent = (training.logs || "") + (training.error ? "\n" + training.error : "");
        if (training.status === "succeeded" && training.output && training.output.version) {
          const [ref, version] = training.output.version.split(":");
          result.href = `/${ref}?version=${version}`;
          result.textContent = "Open the new version " + training.output.version;
          result.hidden = false;
        }
      } catch (error) {
        trainStatus.textContent = "failed";
        trainStatus.className = "status failed";
        trainLogs.textContent = error.message;
      } finally {
        trainButton.disabled = false;
      }
    });
  }

  // --- the API tab -------------------------------------------------------------------------------
  function codeValues() {
    const {values} = readForm();
    const shown = {};
    for (const [name, value] of Object.entries(values)) {
      const file = (v) => (v instanceof File ? `https://example.com/${v.name}` : v);
      shown[name] = Array.isArray(value) ? value.map(file) : file(value);
    }
    return shown;
  }

  // A JSON value as a Python literal (strings keep their text: only the bare keywords change).
  function python(value, indent) {
    const inner = indent + "    ";
    if (value === null) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (Array.isArray(value)) {
      if (!value.length) return "[]";
      return "[\n" + value.map((v) => inner + python(v, inner)).join(",\n") + "\n" + indent + "]";
    }
    if (typeof value === "object") {
      const entries = Object.entries(value);
      if (!entries.length) return "{}";
      return "{\n" + entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${python(v, inner)}`).join(",\n") + "\n" + indent + "}";
    }
    return JSON.stringify(value);
  }

  // An iterator output (a streaming model) comes back from `run()` as a generator: printing it
  // shows `<generator object ...>`, so the snippet loops over it; text pieces print joined.
  function pythonPrint() {
    const schema = state.outputSchema || {};
    if (schema["x-cog-array-type"] !== "iterator") return "print(output)";
    const text = (schema.items || {}).type === "string" && (schema.items || {}).format !== "uri";
    return text ? 'for item in output:\n    print(item, end="")\nprint()' : "for item in output:\n    print(item)";
  }

  function refreshCode() {
    const ref = `${form.dataset.model}:${form.dataset.version}`;
    const input = codeValues();
    const json = JSON.stringify(input, null, 2);
    const py = python(input, "");
    const body = JSON.stringify({version: form.dataset.version, input}, null, 2);
    const host = new URL(state.base).host;
    const code = {
      python: `import replicate\n\n# export REPLICATE_API_TOKEN=<your token>\nclient = replicate.Client(base_url="${state.base}")\noutput = client.run(\n    "${ref}",\n    input=${py.replace(/\n/g, "\n    ")},\n)\n${pythonPrint()}`,
      javascript: `import Replicate from "replicate";\n\n// REPLICATE_API_TOKEN=<your token>\nconst replicate = new Replicate({ baseUrl: "${state.base}/v1" });\nconst output = await replicate.run("${ref}", {\n  input: ${json.replace(/\n/g, "\n  ")},\n});\nconsole.log(output);`,
      curl: `curl -s -X POST \\\n  -H "Authorization: Bearer $REPLICATE_API_TOKEN" \\\n  -H "Content-Type: application/json" \\\n  -H "Prefer: wait" \\\n  -d '${body.replace(/'/g, "'\\''")}' \\\n  ${state.base}/v1/predictions`,
      http: `POST /v1/predictions HTTP/1.1\nHost: ${host}\nAuthorization: Bearer <your token>\nContent-Type: application/json\nPrefer: wait\n\n${body}`,
    };
    for (const [lang, text] of Object.entries(code)) {
      const element = document.getElementById("code-" + lang);
      if (element) element.textContent = text;
    }
  }
  form.addEventListener("input", refreshCode);
  form.addEventListener("change", refreshCode);
  refreshCode();
})();
