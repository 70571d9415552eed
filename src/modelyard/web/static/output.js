// Renders a prediction's output by what it is: images, audio and video players, text (streamed
// text grows in place), JSON, and lists of files with download links.
"use strict";

const IMAGE = /\.(png|jpe?g|gif|webp|bmp|svg)(\?|$)/i;
const AUDIO = /\.(wav|mp3|ogg|flac|m4a|aac)(\?|$)/i;
const VIDEO = /\.(mp4|webm|mov)(\?|$)/i;

function isUrl(value) {
  return typeof value === "string" && /^(https?:|data:)/.test(value);
}

function fileElement(url) {
  let element;
  if (IMAGE.test(url) || url.startsWith("data:image/")) {
    element = document.createElement("img");
    element.alt = "output image";
  } else if (AUDIO.test(url) || url.startsWith("data:audio/")) {
    element = document.createElement("audio");
    element.controls = true;
  } else if (VIDEO.test(url) || url.startsWith("data:video/")) {
    element = document.createElement("video");
    element.controls = true;
  }
  const wrap = document.createElement("figure");
  if (element) {
    element.src = url;
    wrap.appendChild(element);
  }
  const link = document.createElement("a");
  link.href = url;
  link.download = "";
  link.textContent = "Download " + fileName(url);
  wrap.appendChild(link);
  return wrap;
}

function fileName(url) {
  const last = url.startsWith("data:") ? "file" : url.split("/").pop().split("?")[0] || "file";
  try {
    return decodeURIComponent(last);
  } catch (error) {
    return last;  // a stray % in a name
  }
}

function textElement(text) {
  const pre = document.createElement("div");
  pre.className = "text-output";
  pre.textContent = text;
  return pre;
}

function concatenates(schema) {
  return schema && schema.type === "array" &&
    (schema["x-cog-array-display"] === "concatenate" || schema["x-cog-array-type"] === "iterator") &&
    (schema.items || {}).type === "string" && (schema.items || {}).format !== "uri";
}

function renderValue(value, schema) {
  if (value === null || value === undefined) return textElement("");
  if (isUrl(value)) return fileElement(value);
  if (typeof value === "string") return textElement(value);
  if (Array.isArray(value)) {
    if (concatenates(schema) || value.every((v) => typeof v === "string" && !isUrl(v)) && schema && schema["x-cog-array-display"] === "concatenate") {
      return textElement(value.join(""));
    }
    if (value.length && value.every(isUrl)) {
      const list = document.createElement("div");
      list.className = "files";
      value.forEach((v) => list.appendChild(fileElement(v)));
      return list;
    }
  }
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const files = Object.entries(value).filter(([, v]) => isUrl(v));
    const box = document.createElement("div");
    files.forEach(([, v]) => box.appendChild(fileElement(v)));
    if (typeof value.text === "string") box.appendChild(textElement(value.text));
    const pre = document.createElement("pre");
    pre.className = "json-output";
    pre.textContent = JSON.stringify(value, null, 2);
    box.appendChild(pre);
    return box;
  }
  const pre = document.createElement("pre");
  pre.className = "json-output";
  pre.textContent = JSON.stringify(value, null, 2);
  return pre;
}

window.renderOutput = function (container, value, schema) {
  container.replaceChildren(renderValue(value, schema));
};

// Streamed text: one growing element; `append` adds a chunk as it arrives.
window.streamingText = function (container) {
  const element = textElement("");
  element.classList.add("streaming");
  container.replaceChildren(element);
  return {append: (chunk) => { element.textContent += chunk; }, element};
};

document.querySelectorAll(".example-output[data-output]").forEach((el) => {
  window.renderOutput(el, JSON.parse(el.dataset.output), (window.MODELYARD || {}).outputSchema);
});
