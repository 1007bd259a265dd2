// The demo page: plain JavaScript over the app's own HTTP API (the same calls curl makes).
"use strict";

const $ = (id) => document.getElementById(id);

function authHeaders() {
  const token = $("token").value.trim() || sessionStorage.getItem("deepfusion-token") || "";
  if ($("token").value.trim()) sessionStorage.setItem("deepfusion-token", token);
  return token ? { Authorization: "Bearer " + token } : {};
}

// An API error as a sentence a person can act on.
function errorMessage(status, body, headers) {
  const d = (body && body.detail) || {};
  const what = d.error || (typeof body === "string" ? body : "no details");
  switch (status) {
    case 401: return "This server needs an access token: open \u201cAccess token\u201d above and paste it.";
    case 404: return "Not available here: " + what;
    case 411: return "The upload was sent without a length: " + what;
    case 413: return "Too large: " + what + (d.limit ? " (the limit is " + d.limit + ")." : ".");
    case 415: return "Unsupported file" + (d.field ? " in \u201c" + d.field + "\u201d" : "") + ": " + what + ".";
    case 422: return "Please check \u201c" + (d.field || "the form") + "\u201d: " + what + ".";
    case 503: {
      const wait = headers.get("Retry-After");
      return "The " + (d.deployment || "model") + " model is busy or restarting. Please try again" +
        (wait ? " in " + wait + " s." : ".");
    }
    case 504: return "That took too long to decode: " + what + ".";
    default:
      if (status >= 500) return "Server error" + (d.request_id ? " (request id " + d.request_id + ")" : "") + ": " + what;
      return "Request failed (" + status + "): " + what;
  }
}

async function call(method, path, form) {
  let response;
  try {
    response = await fetch(path, { method, body: form, headers: authHeaders() });
  } catch (err) {
    throw new Error("Could not reach the server: " + err.message);
  }
  let body = null;
  const text = await response.text();
  try { body = JSON.parse(text); } catch (err) { body = text; }
  if (!response.ok) throw new Error(errorMessage(response.status, body, response.headers));
  return body;
}

function pct(x) { return (100 * x).toFixed(1) + " %"; }

function drawBars(container, probabilities, top) {
  container.replaceChildren();
  const names = Object.keys(probabilities).sort((a, b) => probabilities[b] - probabilities[a]);
  for (const name of names) {
    const label = document.createElement("span");
    label.textContent = name;
    const bar = document.createElement("div");
    bar.className = "bar" + (name === top ? " top" : "");
    bar.dataset.label = name;
    const fill = document.createElement("div");
    fill.style.width = (100 * probabilities[name]).toFixed(1) + "%";
    bar.appendChild(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.dataset.label = name;
    value.textContent = pct(probabilities[name]);
    container.append(label, bar, value);
  }
}

function latencyText(latency) {
  // a stage of a model that is not served is null: left out
  return Object.entries(latency).filter(([, ms]) => ms != null).map(([stage, ms]) => stage + " " + ms.toFixed(1))
    .join(" · ");
}

function showError(prefix, message) {
  $(prefix + "-result").hidden = true;
  $(prefix + "-error").textContent = message;
  $(prefix + "-error").hidden = false;
}

async function submit(event, prefix, path, buildForm, render) {
  event.preventDefault();
  const button = $(prefix + "-submit");
  button.disabled = true;
  $(prefix + "-error").hidden = true;
  try {
    const answer = await call("POST", path, buildForm());
    render(answer);
    $(prefix + "-result").hidden = false;
  } catch (err) {
    showError(prefix, err.message);
  } finally {
    button.disabled = false;
  }
}

function emotionForm() {
  const form = new FormData();
  for (const id of ["video", "audio"]) {
    const file = $(id).files[0];
    if (file) form.append(id, file, file.name);
  }
  form.append("text", $("text").value);
  form.append("speaker", $("speaker").value);
  return form;
}

function renderEmotion(answer) {
  $("result-emotion").textContent = answer.emotion;
  $("result-confidence").textContent = pct(answer.confidence);
  drawBars($("result-bars"), answer.probabilities, answer.emotion);
  ["video", "audio_text"].forEach((role, i) => {
    const predicted = answer.individual_predictions[role];
    $("row-" + role).hidden = predicted == null;
    $("individual-" + role).textContent = predicted == null ? "" : predicted;
    $("weight-" + role).textContent = answer.fusion_weights ? answer.fusion_weights[i].toFixed(3) : "";
  });
  for (const cell of document.querySelectorAll(".fusion-only")) cell.hidden = !answer.fusion_weights;
  $("result-modalities").textContent =
    Object.entries(answer.modalities).filter(([, used]) => used).map(([name]) => name).join(", ") || "none";
  $("result-latency").textContent = latencyText(answer.latency_ms);
}

function textileForm() {
  const form = new FormData();
  const file = $("image").files[0];
  if (file) form.append("image", file, file.name);
  return form;
}

function renderTextile(answer) {
  $("textile-class").textContent = answer["class"];
  $("textile-confidence").textContent = pct(answer.confidence);
  drawBars($("textile-bars"), answer.probabilities, answer["class"]);
  $("textile-latency").textContent = latencyText(answer.latency_ms);
}

async function loadModels() {
  try {
    const models = await call("GET", "v1/models");
    $("models").textContent = "Serving: " + Object.entries(models)
      .map(([role, card]) => role + " = " + card.kind + " (" + card.checkpoint + ", " + card.sha256.slice(0, 8) + ")")
      .join(" · ");
    // What the served models read and which classes they tell apart, from their cards.
    const backbones = ["video", "audio_text"].filter((role) => models[role]);
    for (const role of ["video", "audio_text"]) {
      if (models[role]) $("name-" + role).textContent = models[role].kind + " (" + role.replace("_", " + ") + ")";
    }
    const emotion = models.fusion || models[backbones[0]];
    if (emotion) {
      $("emotion-reads").textContent = "Classes: " + emotion.labels.join(", ") + ". " +
        (models.fusion ? "Send a clip, only audio, or only text: any one is enough."
          : "The served model is " + models[backbones[0]].kind + " alone.");
      const reads = new Set(backbones.flatMap((role) => models[role].reads || []));
      $("video-field").hidden = !(reads.has("video") || reads.has("audio"));  // a clip's sound is audio
      $("audio-field").hidden = !reads.has("audio");
      $("text-field").hidden = !reads.has("text");
    } else {
      $("emotion-submit").disabled = true;
      showError("emotion", "No emotion model is deployed on this server (serve.video_checkpoint, " +
        "serve.audio_text_checkpoint or serve.fusion_checkpoint).");
    }
    if (!models.textile) {
      $("textile-submit").disabled = true;
      showError("textile", "No image classifier is deployed on this server (serve.textile_checkpoint).");
    }
  } catch (err) {
    $("models").textContent = err.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("emotion-form").addEventListener("submit", (e) => submit(e, "emotion", "v1/emotion", emotionForm, renderEmotion));
  $("textile-form").addEventListener("submit", (e) => submit(e, "textile", "v1/textile", textileForm, renderTextile));
  $("token").addEventListener("change", loadModels);
  loadModels();
});
