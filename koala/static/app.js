// Koala's page: choose or drop a photo, send it to /api/colorize, show before/after and a download link.
// Nothing is kept: the photo and the result live in this tab's memory (object URLs) until it is closed.
"use strict";

(function () {
  const API = "/api/colorize";
  const $ = (id) => document.getElementById(id);
  const form = $("upload"), input = $("file");
  const statusBox = $("status"), statusText = $("status-text"), progress = $("progress");
  const problemBox = $("problem"), problemText = $("problem-text"), retry = $("retry");
  const result = $("result"), before = $("before"), after = $("after");
  const slider = $("slider"), clip = $("before-clip"), divider = $("divider");
  const download = $("download"), info = $("result-info");

  let lastFile = null, urls = [], countdown = null;

  function forgetUrls() { urls.forEach((url) => URL.revokeObjectURL(url)); urls = []; }
  function keepUrl(blob) { const url = URL.createObjectURL(blob); urls.push(url); return url; }

  function showStatus(text, percent) {
    statusBox.hidden = false;
    statusText.textContent = text;
    if (percent === null) progress.removeAttribute("value"); else progress.value = percent;
  }

  function showProblem(text, retryAfterSeconds) {
    statusBox.hidden = true;
    problemBox.hidden = false;
    problemText.textContent = text;
    clearInterval(countdown);
    retry.hidden = !lastFile;
    if (retryAfterSeconds > 0 && lastFile) {
      let left = retryAfterSeconds;
      retry.disabled = true;
      retry.textContent = `Try again in ${left} s`;
      countdown = setInterval(() => {
        left -= 1;
        if (left > 0) { retry.textContent = `Try again in ${left} s`; return; }
        clearInterval(countdown);
        retry.disabled = false;
        retry.textContent = "Try again";
      }, 1000);
    } else {
      retry.disabled = false;
      retry.textContent = "Try again";
    }
  }

  function setSplit(percent) {
    clip.style.clipPath = `inset(0 ${100 - percent}% 0 0)`;
    divider.style.left = `${percent}%`;
  }

  function outputName(fileName, contentType) {
    const stem = (fileName || "photo").replace(/\.[^.]*$/, "").replace(/[^\p{L}\p{N}_.-]+/gu, "-")
      .replace(/^[.\-_]+|[.\-_]+$/g, "").slice(0, 80) || "photo";
    return `${stem}-coloured.${contentType === "image/png" ? "png" : "jpg"}`;
  }

  function reasonFrom(xhr) {
    try {
      const body = JSON.parse(new TextDecoder().decode(xhr.response));
      if (body && body.reason) return body.reason;
    } catch (error) { /* not JSON: fall through */ }
    return null;
  }

  function send(file) {
    lastFile = file;
    clearInterval(countdown);
    problemBox.hidden = true;
    result.hidden = true;
    forgetUrls();
    showStatus(`Uploading ${file.name}…`, 0);

    const body = new FormData();
    body.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", API);
    xhr.responseType = "arraybuffer";
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) showStatus(`Uploading ${file.name}…`, Math.round(100 * event.loaded / event.total));
    };
    xhr.upload.onload = () => showStatus("Colourising… (large photos take a little longer)", null);
    xhr.onerror = () => showProblem("The server could not be reached. Check your connection and try again.", 0);
    xhr.ontimeout = () => showProblem("The server took too long to answer. Please try again.", 0);
    xhr.onload = () => {
      const reason = reasonFrom(xhr);
      if (xhr.status === 200) { showResult(file, xhr); return; }
      if (xhr.status === 503) {
        const seconds = parseInt(xhr.getResponseHeader("Retry-After") || "10", 10) || 10;
        showProblem(`The colouriser is busy right now, try again in ${seconds} s. Sorry for the wait!`, seconds);
      } else if (xhr.status === 413) {
        showProblem(reason || "This photo is too large for the colouriser.", 0);
      } else if (xhr.status === 415) {
        showProblem(reason || "This file is not a photo the colouriser can read.", 0);
      } else if (xhr.status >= 400 && xhr.status < 500) {
        showProblem(reason || `The photo was not accepted (error ${xhr.status}).`, 0);
      } else {
        showProblem("Something went wrong on the server. Please try again in a moment.", 5);
      }
    };
    xhr.send(body);
  }

  function showResult(file, xhr) {
    const contentType = xhr.getResponseHeader("Content-Type") || "image/jpeg";
    const coloured = new Blob([xhr.response], { type: contentType });
    const colouredUrl = keepUrl(coloured);
    const size = xhr.getResponseHeader("X-Koala-Size");
    before.onerror = () => { before.onerror = null; before.src = colouredUrl; }; // e.g. TIFF: show the result in grey
    before.src = keepUrl(file);
    after.onload = () => {
      statusBox.hidden = true;
      result.hidden = false;
      setSplit(Number(slider.value));
      after.onload = null;
    };
    after.src = colouredUrl;
    download.href = colouredUrl;
    download.download = outputName(file.name, contentType);
    info.textContent = size ? `${size.replace("x", " × ")} pixels, ${Math.round(coloured.size / 1024)} KB` : "";
  }

  function showLimits() {  // this server's own limits (the page says the defaults until it knows)
    fetch("/healthz", { cache: "no-store" }).then((response) => response.json()).then((health) => {
      if (health.max_upload_bytes) $("limit-size").textContent = `${Math.floor(health.max_upload_bytes / 1048576)} MB`;
      if (health.max_pixels) $("limit-pixels").textContent = `${Math.floor(health.max_pixels / 1e6)} megapixels`;
    }).catch(() => { /* keep the defaults */ });
  }

  showLimits();
  input.addEventListener("change", () => { if (input.files.length) send(input.files[0]); input.value = ""; });
  retry.addEventListener("click", () => { if (lastFile) send(lastFile); });
  slider.addEventListener("input", () => setSplit(Number(slider.value)));

  ["dragenter", "dragover"].forEach((type) => form.addEventListener(type, (event) => {
    event.preventDefault();
    form.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => form.addEventListener(type, (event) => {
    event.preventDefault();
    form.classList.remove("over");
  }));
  form.addEventListener("drop", (event) => {
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) send(files[0]);
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
})();
