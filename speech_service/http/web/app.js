// The web page's logic: plain browser APIs over the service's public HTTP API, nothing fetched from
// elsewhere. Errors are shown as the API words them (error.code, error.message).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "f5voice.apiKey";
let apiKey = localStorage.getItem(KEY_STORAGE) || "";
let canManageVoices = true;  // an admin key (or no keys); a `speak` key may only speak and list
const recordings = {};     // file input id -> a Blob from the microphone, used instead of that input's file
let recorder = null;       // the MediaRecorder running, for the file input named by recorder.forInput
let audioUrl = null;       // object URL behind the player and the download link
let shownVersion = null;   // { name, etag } of the voice the panel shows: its writes send it as If-Match

class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    Object.assign(this, { status, code, requestId });
  }
}

async function apiErrorFrom(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch (_) { /* not JSON: keep the HTTP status */ }
  return new ApiError(response.status, code, message, response.headers.get("x-request-id"));
}

// One call to the API; resolves to the Response when it is 2xx, throws ApiError otherwise.
async function api(method, path, { json, form, headers: extra } = {}) {
  const headers = { ...extra };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (err) {
    throw new ApiError(0, "network_error", `The service cannot be reached (${err.message}).`);
  }
  if (!response.ok) throw await apiErrorFrom(response);
  return response;
}

function showError(err) {
  const api = err instanceof ApiError;
  $("error-code").textContent = api ? err.code : "page_error";
  $("error-message").textContent = err.message;
  const requestId = api && err.requestId && !err.message.includes(err.requestId) ? err.requestId : "";
  $("error-request").textContent = requestId ? `request ${requestId}` : "";
  $("error").hidden = false;
  if (api && err.status === 401) showKeyForm();
}

function clearError() {
  $("error").hidden = true;
}

// Runs a UI action: clears the last error, disables `button` meanwhile, shows any failure.
async function act(button, work) {
  clearError();
  if (button) button.disabled = true;
  try {
    await work();
  } catch (err) {
    showError(err);
  } finally {
    if (button) button.disabled = false;
  }
}

function showKeyForm() {
  $("key-form").hidden = false;
  $("api-key").value = apiKey;
}

// ---- voices ----

// What this key may do (GET /v1/me): a `speak` key sees no controls it cannot use.
async function loadScopes() {
  const { scopes } = await (await api("GET", "/v1/me")).json();
  canManageVoices = scopes.includes("admin");
  for (const id of ["create-form", "delete-voice", "save-text", "reference-audio", "consent-form", "style-form",
    "save-lexicons", "rule-form", "lexicon-import-form"]) {
    $(id).hidden = !canManageVoices;
  }
  $("detail-ref-text").readOnly = !canManageVoices;
  $("scope-note").hidden = canManageVoices;
}

async function loadVoices(selected) {
  const { voices } = await (await api("GET", "/v1/voices")).json();
  const select = $("voice");
  const keep = selected || select.value;
  select.replaceChildren(...voices.map((v) => new Option(v.name, v.name)));
  if (voices.some((v) => v.name === keep)) select.value = keep;
  $("service-state").textContent = voices.length
    ? `${voices.length} voice${voices.length === 1 ? "" : "s"}`
    : "No voices yet: create one from a recording of a few seconds of speech.";
  if (!select.value) return showVoice(null);
  // The record with its ETag, read together: the version the panel's writes are made against.
  const response = await api("GET", `/v1/voices/${encodeURIComponent(select.value)}`);
  await showVoice(await response.json(), [], response.headers.get("ETag"));
}

// The If-Match of `name` as the panel shows it (none for a voice it does not show).
function shownVersionOf(name) {
  return shownVersion && shownVersion.name === name && shownVersion.etag ? { "If-Match": shownVersion.etag } : {};
}

// A write made against the shown version: when the voice changed meanwhile (412), the panel shows it
// as it is now, so the user's next try is made against what is stored, and the API's error stays.
async function againstShownVersion(write) {
  try {
    return await write();
  } catch (err) {
    if (err.code === "precondition_failed") await loadVoices().catch(() => {});
    throw err;
  }
}

async function showVoice(voice, warnings = [], etag = null) {
  $("voice-detail").hidden = !voice;
  shownVersion = voice ? { name: voice.name, etag } : null;
  showDirection(voice);  // its styles and lexicons (directing.js)
  if (!voice) return;
  $("detail-name").textContent = voice.name;
  const clip = `${voice.duration_s.toFixed(1)} s`;
  $("detail-duration").textContent = voice.clipped
    ? `${clip} (of ${voice.original_duration_s.toFixed(1)} s uploaded)` : clip;
  $("detail-clipped").textContent = voice.clipped
    ? "yes: the upload was shortened, and its transcript is of the shortened clip" : "no";
  $("detail-source").textContent = voice.ref_text_source === "asr"
    ? "asr (transcribed by the service)" : `${voice.ref_text_source} (as given)`;
  $("detail-ref-text").value = voice.ref_text;
  $("detail-consent").textContent = voice.consent
    ? `${voice.consent.method} (${voice.consent.id}, ${new Date(voice.consent.given_at).toLocaleString()})`
    : "none recorded";
  $("detail-warnings").replaceChildren(...warnings.map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
  if (!canManageVoices) return;  // the reference clip is for keys that manage voices
  const wav = await (await api("GET", `/v1/voices/${encodeURIComponent(voice.name)}/audio`)).blob();
  const player = $("reference-audio");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(wav);
}

// The clip a form sends: the recording made for `inputId`, else the file chosen in it.
function chosenClip(inputId) {
  const recorded = recordings[inputId];
  if (recorded) return [recorded, `recording.${recorded.type.includes("ogg") ? "ogg" : "webm"}`];
  const file = $(inputId).files[0];
  if (file) return [file, file.name];
  throw new Error("Choose an audio file or record one first.");
}

async function createVoice() {
  const form = new FormData();
  form.append("name", $("new-name").value.trim());
  form.append("file", ...chosenClip("new-file"));
  const refText = $("new-ref-text").value.trim();
  if (refText) form.append("ref_text", refText);
  const language = $("new-language").value.trim();
  if (language) form.append("language", language);
  const overwrite = $("new-overwrite").checked;
  if (overwrite) form.append("overwrite", "true");
  const headers = overwrite ? shownVersionOf(form.get("name")) : {};
  const response = await againstShownVersion(() => api("POST", "/v1/voices", { form, headers }));
  const voice = await response.json();
  $("create-form").reset();
  forgetRecording("new-file", "record-state");
  await loadVoices(voice.name);
  await showVoice(voice, voice.warnings || [], response.headers.get("ETag"));
}

async function saveTranscript() {
  const name = $("voice").value;
  const response = await againstShownVersion(() => api("PATCH", `/v1/voices/${encodeURIComponent(name)}`,
    { json: { ref_text: $("detail-ref-text").value }, headers: shownVersionOf(name) }));
  await showVoice(await response.json(), ["Transcript saved."], response.headers.get("ETag"));
}

async function attestConsent() {
  const name = $("voice").value;
  const form = new FormData();
  form.append("method", "attested");
  form.append("given_by", $("consent-given-by").value.trim());
  await api("POST", `/v1/voices/${encodeURIComponent(name)}/consent`, { form });
  $("consent-form").reset();
  const response = await api("GET", `/v1/voices/${encodeURIComponent(name)}`);
  await showVoice(await response.json(), ["Consent recorded."], response.headers.get("ETag"));
}

async function deleteVoice() {
  const name = $("voice").value;
  if (!name || !confirm(`Delete the voice ${name}?`)) return;
  await againstShownVersion(() => api("DELETE", `/v1/voices/${encodeURIComponent(name)}`,
    { headers: shownVersionOf(name) }));
  await loadVoices();
}

function forgetRecording(inputId, stateId) {
  delete recordings[inputId];
  $(stateId).textContent = "";
}

// Records from the microphone for the file input `inputId`, or stops the recording it started.
async function toggleRecording(inputId, buttonId, stateId) {
  if (recorder) {
    if (recorder.forInput !== inputId) throw new Error("Stop the other recording first.");
    recorder.stop();
    return;
  }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    throw new Error("This browser cannot record here (recording needs https or localhost).");
  }
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const chunks = [];
  const started = Date.now();
  recorder = new MediaRecorder(stream);
  recorder.forInput = inputId;
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    recordings[inputId] = new Blob(chunks, { type: recorder.mimeType });
    recorder = null;
    $(inputId).value = "";
    $(buttonId).textContent = "● Record again";
    $(stateId).textContent = `Recorded ${((Date.now() - started) / 1000).toFixed(1)} s.`;
  };
  recorder.start();
  $(buttonId).textContent = "■ Stop";
  $(stateId).textContent = "Recording…";
}

// ---- speech ----

function speechBody(stream) {
  const body = {
    voice: $("voice").value,
    input: $("text").value,
    response_format: $("format").value,
    speed: Number($("speed").value || 1),
  };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  if (stream) body.stream = true;
  return directedBody(body);  // style, lexicons, SSML (directing.js)
}

function setAudio(blob, format) {
  if (audioUrl) URL.revokeObjectURL(audioUrl);
  audioUrl = URL.createObjectURL(blob);
  const link = $("download");
  link.href = audioUrl;
  link.download = `${$("voice").value || "speech"}.${format}`;
  link.textContent = `Download ${format} (${(blob.size / 1024).toFixed(0)} KiB)`;
  link.hidden = false;
  return audioUrl;
}

function appendToBuffer(buffer, data) {
  return new Promise((resolve, reject) => {
    buffer.addEventListener("updateend", resolve, { once: true });
    buffer.addEventListener("error", () => reject(new Error("The browser could not decode the audio.")),
      { once: true });
    buffer.appendBuffer(data);
  });
}

// mp3 plays while it streams (MediaSource); other formats play once the whole response is in.
async function playWhileStreaming(response, player) {
  const source = new MediaSource();
  if (audioUrl) URL.revokeObjectURL(audioUrl);
  player.src = URL.createObjectURL(source);
  await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
  const buffer = source.addSourceBuffer("audio/mpeg");
  const reader = response.body.getReader();
  const chunks = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    await appendToBuffer(buffer, value);
    if (chunks.length === 1) {
      $("speak-state").textContent = "Playing while the rest arrives…";
      player.play().catch(() => { /* autoplay refused: the controls still work */ });
    }
  }
  source.endOfStream();
  return new Blob(chunks, { type: "audio/mpeg" });
}

let sidecarUrl = null;  // the last speech response's sidecar manifest, when it named one
const MEDIA_TYPES = { mp3: "audio/mpeg", opus: "audio/ogg", aac: "audio/aac", flac: "audio/flac", wav: "audio/wav" };

// The caller's own text, each captioned word a span the player highlights while it is spoken; in
// SSML the markup between words is left out, and in a dialogue each turn starts with its speaker.
function showCaptions(input, words) {
  const box = $("captions");
  box.replaceChildren();
  const between = (from, to) => {
    const gap = input.slice(from, to);
    return isSpeakDocument(input) ? gap.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ") : gap;
  };
  let at = 0;
  let speaker = null;
  for (const word of words) {
    box.append(document.createTextNode(between(at, word.text_start)));
    if (word.speaker && word.speaker !== speaker) {
      if (speaker) box.append(document.createElement("br"));
      const label = document.createElement("span");
      label.className = "speaker";
      label.textContent = word.speaker;
      box.append(label, " ");
      speaker = word.speaker;
    }
    const span = document.createElement("span");
    span.className = word.interpolated ? "word guessed" : "word";
    span.textContent = word.text;
    span.dataset.start = word.start;
    span.dataset.end = word.end;
    span.title = `${word.start.toFixed(2)}–${word.end.toFixed(2)} s${word.interpolated ? " (estimated)" : ""}`;
    box.append(span);
    at = word.text_end;
  }
  box.append(document.createTextNode(between(at, input.length)));
  box.hidden = false;
}

function highlightCaption() {
  const t = $("player").currentTime;
  for (const span of $("captions").querySelectorAll(".word")) {
    span.classList.toggle("current", Number(span.dataset.start) <= t && t < Number(span.dataset.end));
  }
}

function showQuality(quality, warnings) {
  const box = $("quality");
  box.hidden = !quality;
  if (!quality) return;
  const worst = Math.max(...quality.segments.map((s) => s.wer));
  const tries = quality.segments.reduce((n, s) => n + s.attempts, 0);
  box.textContent = quality.passed
    ? `Quality check passed: word error rate ${worst.toFixed(2)} at most, ${tries} attempt(s).`
    : `Quality check failed: ${warnings.join(" ")}`;
  box.classList.toggle("failed", !quality.passed);
}

// The badge of the last speech played: its Content Credentials as the service verifies them (the
// manifest inside the file, or the sidecar its response named).
async function showProvenance(blob, sidecarUrl) {
  const box = $("provenance");
  box.hidden = true;
  try {
    const form = new FormData();
    form.append("file", blob, "speech");
    if (sidecarUrl) form.append("manifest", await (await api("GET", sidecarUrl)).blob(), "speech.c2pa");
    const report = await (await api("POST", "/v1/provenance/verify", { form })).json();
    const speech = report.speech || {};
    const signer = (report.manifest && report.manifest.signature_info) || {};
    box.textContent = report.found
      ? `Content Credentials: ${report.validation_state} (${report.embedded ? "in the file" : "sidecar"}), `
        + `AI-generated speech in the voice ${speech.voice}, signed by ${signer.issuer || "?"}.`
      : "No Content Credentials found.";
    box.className = `badge ${(report.validation_state || "none").toLowerCase()}`;
  } catch (err) {
    box.textContent = `Content Credentials could not be checked: ${err.message}`;
    box.className = "badge invalid";
  }
  box.hidden = false;
}

// Captions or the check: one whole response, JSON with the audio, its words and the check's report.
async function speakListened(body) {
  delete body.stream;
  body.timestamps = "word";
  if ($("quality-on").checked) body.quality = true;
  const response = await api("POST", "/v1/audio/speech", { json: body });
  sidecarUrl = response.headers.get("X-Content-Credentials");
  const result = await response.json();
  const bytes = Uint8Array.from(atob(result.audio), (c) => c.charCodeAt(0));
  if ($("captions-on").checked) showCaptions(body.input, result.words);
  showQuality(result.quality, result.warnings);
  return new Blob([bytes], { type: MEDIA_TYPES[body.response_format] });
}

async function speak() {
  const body = speechBody(true);
  $("captions").hidden = true;
  $("quality").hidden = true;
  $("provenance").hidden = true;
  sidecarUrl = null;
  const player = $("player");
  $("download").hidden = true;
  $("speak-state").textContent = "Waiting for the first audio…";
  const started = performance.now();
  const listened = $("captions-on").checked || $("quality-on").checked;
  const streamable = !listened && body.response_format === "mp3" && window.MediaSource
    && MediaSource.isTypeSupported("audio/mpeg");
  let blob;
  try {
    if (listened) {
      $("speak-state").textContent = "Speaking and listening to it…";
      blob = await speakListened(body);
    } else {
      const response = await api("POST", "/v1/audio/speech", { json: body });
      sidecarUrl = response.headers.get("X-Content-Credentials");
      try {
        blob = streamable ? await playWhileStreaming(response, player) : await response.blob();
      } catch (err) {
        throw new Error(`The audio stream broke off: ${err.message}`);
      }
    }
  } catch (err) {
    $("speak-state").textContent = "";
    if (err.code === "voice_not_found") loadVoices().catch(() => {});  // it was deleted elsewhere
    throw err;
  }
  const url = setAudio(blob, body.response_format);
  if (!streamable) {
    player.src = url;
    player.play().catch(() => {});
  }
  $("speak-state").textContent = `Done in ${((performance.now() - started) / 1000).toFixed(1)} s.`;
  await showProvenance(blob, sidecarUrl);
}

// ---- jobs (shown when the service has /v1/jobs) ----

function jobFraction(job) {
  const p = job.progress || {};
  if (job.status === "succeeded") return 1;
  return p.segments_total ? p.segments_done / p.segments_total : 0;
}

function jobLabel(job) {
  const p = job.progress || {};
  let label = `Job ${job.id}: ${job.status}`;
  if (p.segments_total) label += `, ${p.segments_done}/${p.segments_total} segments`;
  if (p.audio_seconds) label += `, ${p.audio_seconds.toFixed(1)} s of audio`;
  return label;
}

function jobErrorOf(job) {
  const e = job.error || { code: `job_${job.status}`, message: `The job was ${job.status}.` };
  return new ApiError(0, e.code, e.message);
}

async function runJob() {
  const body = speechBody(false);
  $("job").hidden = false;
  $("download").hidden = true;
  const progress = $("job-progress");
  progress.value = 0;
  let job = await (await api("POST", "/v1/jobs", { json: body })).json();
  const path = `/v1/jobs/${encodeURIComponent(job.id)}`;
  for (;;) {
    progress.value = jobFraction(job);
    $("job-state").textContent = jobLabel(job);
    if (!["queued", "running"].includes(job.status)) break;
    await new Promise((resolve) => setTimeout(resolve, 500));
    job = await (await api("GET", path)).json();
  }
  if (job.status !== "succeeded") throw jobErrorOf(job);
  const blob = await (await api("GET", `${path}/audio`)).blob();
  const player = $("player");
  player.src = setAudio(blob, body.response_format);
  player.play().catch(() => {});
}

async function detectJobs() {
  try {
    const spec = await (await fetch("/openapi.json")).json();
    $("submit-job").hidden = !(spec.paths && spec.paths["/v1/jobs"]);
  } catch (_) { /* no schema published: no jobs button */ }
}

// ---- wiring ----

async function loadAll() {
  await loadScopes();
  await loadLexicons();  // before the voice, whose panel shows them
  await loadVoices();
}

function start() {
  if (apiKey) showKeyForm();
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    apiKey = $("api-key").value.trim();
    localStorage.setItem(KEY_STORAGE, apiKey);
    act(null, loadAll);
  });
  $("forget-key").addEventListener("click", () => {
    apiKey = "";
    localStorage.removeItem(KEY_STORAGE);
    $("api-key").value = "";
  });
  $("error-close").addEventListener("click", clearError);
  $("create-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act($("create"), createVoice);
  });
  $("new-file").addEventListener("change", () => forgetRecording("new-file", "record-state"));
  $("record").addEventListener("click", () => act(null, () => toggleRecording("new-file", "record", "record-state")));
  $("voice").addEventListener("change", () => act(null, () => loadVoices($("voice").value)));
  $("save-text").addEventListener("click", () => act($("save-text"), saveTranscript));
  $("delete-voice").addEventListener("click", () => act($("delete-voice"), deleteVoice));
  $("consent-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act($("attest-consent"), attestConsent);
  });
  $("speak-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act($("speak"), speak);
  });
  $("submit-job").addEventListener("click", () => act($("submit-job"), runJob));
  $("player").addEventListener("timeupdate", highlightCaption);
  detectJobs();
  startDirecting();
  act(null, loadAll).then(() => {
    if (!$("error").hidden && $("error-code").textContent.includes("api_key")) {
      $("service-state").textContent = "This service needs an API key.";
    }
  });
}

document.addEventListener("DOMContentLoaded", start);
