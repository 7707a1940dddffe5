// Directing speech on the page: pronunciation lexicons, a voice's styles (takes) and lexicons, and the
// Speak form's style, lexicons, SSML and dry run. Loaded after app.js, whose helpers it uses ($, api,
// act, shownVersionOf, againstShownVersion, showVoice, chosenClip, canManageVoices).
"use strict";

let lexiconNames = [];  // the lexicons the service holds, as last listed
let directedVoice = null;  // the voice record the voice panel shows

const byName = (name) => encodeURIComponent(name);

function element(tag, text = "", className = "") {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

// A button that runs `work` as a UI action (errors in the banner, disabled meanwhile).
function actionButton(id, label, className, work) {
  const button = element("button", label, className);
  button.type = "button";
  button.id = id;
  button.addEventListener("click", () => act(button, work));
  return button;
}

// Checkboxes, one per name, in `box`; each id is `${prefix}-${name}` (names are [A-Za-z0-9_-]).
// `keep`: a box already showing a name keeps its check (choices the user has not sent yet).
function renderChoices(box, prefix, names, checked, { keep = true, missing = [], disabled = false } = {}) {
  const was = new Map([...box.querySelectorAll("input")].map((input) => [input.value, input.checked]));
  box.replaceChildren(...names.map((name) => {
    const input = element("input");
    Object.assign(input, { type: "checkbox", id: `${prefix}-${name}`, value: name, disabled });
    input.checked = keep && was.has(name) ? was.get(name) : checked.includes(name);
    const label = element("label", "", "check");
    label.append(input, ` ${name}${missing.includes(name) ? " (deleted)" : ""}`);
    return label;
  }));
  if (!names.length) box.append(element("span", "none yet (see Lexicons)", "muted"));
}

function checkedIn(box) {
  return [...box.querySelectorAll("input:checked")].map((input) => input.value);
}

// ---- lexicons ----

async function loadLexicons() {
  const { lexicons } = await (await api("GET", "/v1/lexicons")).json();
  lexiconNames = lexicons.map((x) => x.name);
  $("lexicon-list").replaceChildren(...lexicons.map(lexiconItem));
  $("lexicons-state").textContent = lexicons.length ? "" : "No lexicons yet: add a rule or import a PLS file.";
  $("lexicon-names").replaceChildren(...lexiconNames.map((name) => new Option(name)));
  renderChoices($("speak-lexicons"), "speak-lexicon", lexiconNames, []);
  showVoiceLexicons(true);
}

function lexiconItem(lexicon) {
  const item = element("li");
  item.dataset.name = lexicon.name;
  const details = element("details");
  const summary = element("summary");
  const count = `${lexicon.rule_count} rule${lexicon.rule_count === 1 ? "" : "s"}`;
  const language = lexicon.language ? `, ${lexicon.language}` : "";
  summary.append(element("strong", lexicon.name), element("span", ` ${count}${language}`, "muted"));
  const rules = element("ul", "", "rules");
  details.append(summary, rules);
  details.addEventListener("toggle", () => details.open && act(null, () => showRules(lexicon.name, rules)));
  const remove = actionButton(`delete-lexicon-${lexicon.name}`, "Delete", "danger", () => deleteLexicon(lexicon.name));
  remove.hidden = !canManageVoices;
  item.append(details, actionButton(`export-lexicon-${lexicon.name}`, "Export PLS", "quiet",
    () => exportLexicon(lexicon.name)), remove);
  return item;
}

function ruleLine(rule) {
  const reading = rule.alias !== null && rule.alias !== undefined ? rule.alias : `${rule.pinyin} (pinyin)`;
  return `${rule.grapheme} → ${reading}${rule.case_sensitive ? " (case-sensitive)" : ""}`;
}

async function showRules(name, list) {
  const { rules } = await (await api("GET", `/v1/lexicons/${byName(name)}`)).json();
  list.replaceChildren(...rules.map((rule) => element("li", ruleLine(rule))));
}

// The rule the form describes, added to its lexicon (created when there is none of that name); a
// rule for the same grapheme and case rule is replaced. The lexicon is written against the version
// read (If-Match), so a rule added elsewhere meanwhile is not lost: that is a 412 to try again.
async function addRule() {
  const name = $("rule-lexicon").value.trim();
  const rule = { grapheme: $("rule-grapheme").value.trim(), case_sensitive: $("rule-case").checked };
  rule[$("rule-kind").value] = $("rule-reading").value.trim();
  if (!lexiconNames.includes(name)) {
    await api("POST", "/v1/lexicons", { json: { name, rules: [rule] } });
  } else {
    const response = await api("GET", `/v1/lexicons/${byName(name)}`);
    const lexicon = await response.json();
    const others = lexicon.rules.filter(
      (r) => r.grapheme !== rule.grapheme || r.case_sensitive !== rule.case_sensitive);
    await api("PUT", `/v1/lexicons/${byName(name)}`, {
      json: { language: lexicon.language, rules: [...others, rule] },
      headers: { "If-Match": response.headers.get("ETag") },
    });
  }
  for (const id of ["rule-grapheme", "rule-reading"]) $(id).value = "";
  await loadLexicons();
}

async function importLexicon() {
  const name = $("import-name").value.trim();
  const file = $("import-file").files[0];
  if (!file) throw new Error("Choose a PLS file first.");
  const form = new FormData();
  form.append("file", file);
  if ($("import-replace").checked && lexiconNames.includes(name)) {
    await api("PUT", `/v1/lexicons/${byName(name)}`, { form });
  } else {
    form.append("name", name);
    await api("POST", "/v1/lexicons", { form });
  }
  $("lexicon-import-form").reset();
  await loadLexicons();
}

// The lexicon as a W3C PLS file, saved by the browser (and linked, for a second copy).
async function exportLexicon(name) {
  const blob = await (await api("GET", `/v1/lexicons/${byName(name)}?format=pls`)).blob();
  const link = $("lexicon-download");
  if (link.href) URL.revokeObjectURL(link.href);
  Object.assign(link, { href: URL.createObjectURL(blob), download: `${name}.pls` });
  link.textContent = `Download ${name}.pls`;
  link.hidden = false;
  link.click();
}

async function deleteLexicon(name) {
  if (!confirm(`Delete the lexicon ${name}? Voices that name it are spoken without it.`)) return;
  await api("DELETE", `/v1/lexicons/${byName(name)}`);
  if ($("lexicon-download").download === `${name}.pls`) $("lexicon-download").hidden = true;
  await loadLexicons();
}

// ---- a voice's styles and lexicons ----

// The voice panel's styles and lexicons and the Speak form's style choice, for `voice` (null: none).
function showDirection(voice) {
  directedVoice = voice;
  showStyleChoice(voice);
  if (!voice) return;
  const rows = [["default", voice.duration_s, voice.ref_text], ...Object.keys(voice.styles || {}).sort()
    .map((style) => [style, voice.styles[style].duration_s, voice.styles[style].ref_text])];
  $("detail-styles").tBodies[0].replaceChildren(...rows.map((row) => styleRow(...row)));
  $("style-audio").hidden = true;
  showVoiceLexicons(false);
}

function styleRow(style, seconds, transcript) {
  const row = element("tr");
  row.dataset.style = style;
  const actions = element("td");
  if (canManageVoices) {  // a take's clip, like the voice's, is for keys that manage voices
    actions.append(actionButton(`play-style-${style}`, "Play", "quiet", () => playStyle(style)));
    if (style !== "default") {
      actions.append(actionButton(`delete-style-${style}`, "Delete", "danger", () => deleteStyle(style)));
    }
  }
  row.append(element("td", style, "style-name"), element("td", `${seconds.toFixed(1)} s`),
    element("td", transcript, "transcript"), actions);
  return row;
}

function showStyleChoice(voice) {
  const select = $("style");
  const kept = select.value;
  const styles = voice ? Object.keys(voice.styles || {}).sort() : [];
  select.replaceChildren(new Option("default (its own clip)", ""), ...styles.map((s) => new Option(s, s)));
  if (styles.includes(kept)) select.value = kept;
}

// The voice's lexicons as checkboxes; `keep`: leave the user's unsaved choices (the list changed).
function showVoiceLexicons(keep) {
  if (!directedVoice) return;
  const named = directedVoice.lexicons || [];
  const missing = named.filter((name) => !lexiconNames.includes(name));
  const box = $("detail-lexicons");
  if (box.dataset.voice !== directedVoice.name) keep = false;
  box.dataset.voice = directedVoice.name;
  renderChoices(box, "voice-lexicon", [...lexiconNames, ...missing], named,
    { keep, missing, disabled: !canManageVoices });
}

async function playStyle(style) {
  const name = directedVoice.name;
  const wav = await (await api("GET", `/v1/voices/${byName(name)}/styles/${byName(style)}/audio`)).blob();
  const player = $("style-audio");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(wav);
  player.hidden = false;
  player.play().catch(() => { /* autoplay refused: the controls still work */ });
}

async function addStyle() {
  const name = directedVoice.name;
  const form = new FormData();
  form.append("style", $("style-name").value.trim());
  form.append("file", ...chosenClip("style-file"));
  const refText = $("style-ref-text").value.trim();
  if (refText) form.append("ref_text", refText);
  if ($("style-overwrite").checked) form.append("overwrite", "true");
  const response = await againstShownVersion(() => api("POST", `/v1/voices/${byName(name)}/styles`,
    { form, headers: shownVersionOf(name) }));
  const voice = await response.json();
  $("style-form").reset();
  forgetRecording("style-file", "style-record-state");
  await showVoice(voice, voice.warnings || [], response.headers.get("ETag"));
}

async function deleteStyle(style) {
  const name = directedVoice.name;
  if (!confirm(`Delete the style ${style} of ${name}?`)) return;
  await againstShownVersion(() => api("DELETE", `/v1/voices/${byName(name)}/styles/${byName(style)}`,
    { headers: shownVersionOf(name) }));
  await loadVoices(name);
}

// The voice's lexicons as checked: those it named first, in its order, then new ones in the list's.
async function saveVoiceLexicons() {
  const name = directedVoice.name;
  const checked = checkedIn($("detail-lexicons"));
  const lexicons = [...directedVoice.lexicons.filter((x) => checked.includes(x)),
    ...checked.filter((x) => !directedVoice.lexicons.includes(x))];
  const response = await againstShownVersion(() => api("PATCH", `/v1/voices/${byName(name)}`,
    { json: { lexicons }, headers: shownVersionOf(name) }));
  await showVoice(await response.json(), ["Lexicons saved."], response.headers.get("ETag"));
}

// ---- the Speak form ----

// An input the service reads as SSML: a <speak> document, after an XML declaration or comments.
function isSpeakDocument(text) {
  return /^\s*(<\?xml[^>]*\?>\s*)?(<!--[\s\S]*?-->\s*)*<speak[\s>/]/.test(text);
}

// The speech body with the form's style, lexicons and, when SSML is on, the text as a <speak> document.
function directedBody(body) {
  if ($("style").value) body.style = $("style").value;
  const lexicons = checkedIn($("speak-lexicons"));
  if (lexicons.length) body.lexicons = lexicons;
  if ($("ssml-on").checked && !isSpeakDocument(body.input)) body.input = `<speak>${body.input}</speak>`;
  return body;
}

function pauseLabel(seconds) {
  return seconds > 0 ? `${seconds.toFixed(2)} s` : "cross-fade";
}

// What the model would read, per segment, with nothing synthesized.
async function dryRun() {
  const body = speechBody(false);
  const plan = await (await api("POST", "/v1/audio/speech/dry-run", { json: body })).json();
  const count = plan.segments.length;
  const segments = `${count} segment${count === 1 ? "" : "s"}`;
  $("dry-run-summary").textContent = `${segments}, model ${plan.model}, seed ${plan.seed}`;
  $("dry-run-table").tBodies[0].replaceChildren(...plan.segments.map((segment) => {
    const row = element("tr");
    const cells = [segment.index, segment.voice, segment.style || "default", `${segment.speed}×`,
      pauseLabel(segment.pause_after_s), segment.text];
    row.append(...cells.map((cell) => element("td", String(cell))));
    row.lastChild.title = segment.words.map((w) => `${w.text} → ${w.read}`).join("\n");
    return row;
  }));
  $("dry-run-result").hidden = false;
}

function startDirecting() {
  $("rule-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act($("add-rule"), addRule);
  });
  $("rule-kind").addEventListener("change", () => {
    $("rule-reading").placeholder = $("rule-kind").value === "pinyin" ? "yin2 hang2" : "win";
  });
  $("lexicon-import-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act($("import-lexicon"), importLexicon);
  });
  $("style-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act($("add-style"), addStyle);
  });
  $("style-file").addEventListener("change", () => forgetRecording("style-file", "style-record-state"));
  $("style-record").addEventListener("click",
    () => act(null, () => toggleRecording("style-file", "style-record", "style-record-state")));
  $("save-lexicons").addEventListener("click", () => act($("save-lexicons"), saveVoiceLexicons));
  $("ssml-on").addEventListener("change", () => { $("ssml-hint").hidden = !$("ssml-on").checked; });
  $("dry-run").addEventListener("click", () => act($("dry-run"), dryRun));
}
