// The playground's page: the key, the voices, the options (ranges from the server's OpenAPI document),
// and speech played while it is generated.

import { ApiError, api, key, speak } from "./api.js";
import { Player, Waveform, pcm16ToFloat, wavBlob } from "./audio.js";

const $ = (id) => document.getElementById(id);

const LABELS = {
  temperature: "Temperature",
  exaggeration: "Exaggeration",
  cfg_weight: "CFG weight",
  seed: "Seed",
  speed: "Speed",
};
const STEPS = { temperature: 0.01, exaggeration: 0.05, cfg_weight: 0.05, speed: 0.05 };

const state = {
  config: null,
  schema: null, // GenerateRequest's properties
  sampleRate: 24000,
  chunks: [], // PCM16 ArrayBuffers of the last speech
  stop: null,
  downloadUrl: null,
  startedAt: null, // when the current speech was asked for, until its first sample plays
  ended: false,
  stopped: false, // the user stopped the current speech
};

const player = new Player(onPlayerReport);
let waveform = null;

// -- the key --------------------------------------------------------------------------------------------
function askForKey(message = "") {
  $("key-section").hidden = false;
  $("key-error").textContent = message;
  $("forget-key").hidden = true;
  setEnabled(false);
  $("key-input").focus();
}

function setEnabled(enabled) {
  for (const form of ["speak-form", "upload-form", "clone-form"]) {
    for (const control of $(form).elements) control.disabled = !enabled;
  }
  $("stop").disabled = true;
}

async function useKey(event) {
  event.preventDefault();
  const candidate = $("key-input").value.trim();
  try {
    await api.voices(candidate); // the cheapest call that wants the key
  } catch (error) {
    $("key-error").textContent = error.status === 401
      ? "The server refused this key. Check it and try again."
      : `The key could not be checked: ${error.message}`;
    $("key-input").select();
    return;
  }
  key.set(candidate);
  $("key-input").value = "";
  $("key-section").hidden = true;
  $("key-error").textContent = "";
  $("forget-key").hidden = false;
  setEnabled(true);
  await refreshVoices();
  $("text").focus();
}

/** An API error as the user reads it; a refused key sends them back to the key form. */
function explain(error) {
  if (error instanceof ApiError && error.status === 401) {
    key.forget();
    askForKey("The server no longer accepts the key: enter it again.");
    return "The API key was refused.";
  }
  return error.message;
}

// -- voices ---------------------------------------------------------------------------------------------
async function refreshVoices(select) {
  let voices;
  try {
    voices = await api.voices();
  } catch (error) {
    $("voices-error").textContent = `The voices could not be listed: ${explain(error)}`;
    return;
  }
  $("voices-error").textContent = "";
  const chosen = select ?? $("voice").value;
  const menu = $("voice");
  menu.replaceChildren(new Option("Built-in voice", ""), ...voices.map((v) => new Option(v, v)));
  menu.value = voices.includes(chosen) ? chosen : "";
  const list = $("voice-list");
  list.replaceChildren(...voices.map((voice) => {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = voice;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "secondary";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete voice ${voice}`);
    remove.addEventListener("click", () => confirmDelete(voice, remove));
    item.append(name, remove);
    return item;
  }));
  $("voices-status").textContent = voices.length
    ? `${voices.length} voice${voices.length === 1 ? "" : "s"} on the server, and the built-in one.`
    : "No voice files on the server yet: the built-in voice speaks.";
}

function confirmDelete(voice, opener) {
  const dialog = $("confirm-delete");
  $("delete-name").textContent = voice;
  dialog.returnValue = "";
  dialog.onclose = async () => {
    opener.focus();
    if (dialog.returnValue !== "delete") return;
    try {
      const answer = await api.remove(voice);
      $("voices-status").textContent = answer.message;
      await refreshVoices();
    } catch (error) {
      $("voices-error").textContent = `Not deleted: ${explain(error)}`;
    }
  };
  dialog.showModal();
}

async function upload(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  const voiceId = $("upload-id").value.trim();
  $("voices-error").textContent = "";
  $("voices-status").textContent = `Uploading ${file.name}…`;
  try {
    const answer = await api.upload(file, voiceId, $("upload-overwrite").checked);
    const saved = answer.voice_id.replace(/\.pth$/, "");
    $("upload-form").reset();
    await refreshVoices(saved);
    $("voices-status").textContent = `Voice ${saved} uploaded; it is selected for speech.`;
  } catch (error) {
    $("voices-status").textContent = "";
    $("voices-error").textContent = `Not uploaded: ${explain(error)}`;
  }
}

async function clone(event) {
  event.preventDefault();
  const files = [...$("clone-files").files];
  const voiceId = $("clone-id").value.trim();
  const button = event.submitter;
  button.disabled = true;
  $("voices-error").textContent = "";
  $("clone-report").textContent = "";
  $("voices-status").textContent = `Cloning ${voiceId} from ${files.length} recording${files.length === 1 ? "" : "s"}`
    + " on the server…";
  try {
    const answer = await api.clone(files, voiceId, $("clone-overwrite").checked);
    const report = answer.report;
    const rejected = report.rejected.map((r) => `${r.file}: ${r.reason}`);
    $("clone-report").textContent = `${report.segments.length} segments, ${report.total_duration_s.toFixed(1)} s `
      + `of speech; speaker similarity ${report.quality.speaker_similarity_mean.toFixed(2)}.`
      + (rejected.length ? ` Left out: ${rejected.join("; ")}.` : "");
    $("clone-form").reset();
    await refreshVoices(voiceId);
    $("voices-status").textContent = `${answer.message} ${voiceId} is selected for speech.`;
  } catch (error) {
    $("voices-status").textContent = "";
    $("voices-error").textContent = `Not cloned: ${explain(error)}`;
  } finally {
    button.disabled = false;
  }
}

// -- options --------------------------------------------------------------------------------------------
/** A property's numeric bounds from the schema (optional fields are `anyOf: [{number}, {null}]`). */
function bounds(property) {
  const numeric = (property.anyOf || [property]).find((p) => p.type === "number" || p.type === "integer");
  return {
    min: numeric.minimum ?? numeric.exclusiveMinimum,
    max: numeric.maximum ?? numeric.exclusiveMaximum,
    integer: numeric.type === "integer",
  };
}

function buildOptions() {
  const { config, schema } = state;
  const fields = $("option-fields");
  fields.replaceChildren();
  if (config.languages) {
    const wrap = document.createElement("div");
    wrap.className = "option";
    wrap.innerHTML = '<label for="opt-language">Language</label><select id="opt-language"></select>';
    const menu = wrap.querySelector("select");
    for (const [id, name] of Object.entries(config.languages)) menu.append(new Option(`${name} (${id})`, id));
    menu.value = "en" in config.languages ? "en" : Object.keys(config.languages)[0];
    fields.append(wrap);
  }
  for (const name of config.options) {
    const { min, max, integer } = bounds(schema[name]);
    const wrap = document.createElement("div");
    wrap.className = "option";
    const head = document.createElement("div");
    head.className = "option-head";
    const label = document.createElement("label");
    label.htmlFor = `opt-${name}`;
    label.textContent = LABELS[name] || name;
    head.append(label);
    const input = document.createElement("input");
    input.id = `opt-${name}`;
    input.name = name;
    input.min = min;
    input.max = max;
    const description = schema[name].description;
    if (name === "seed") {
      input.type = "number";
      input.step = 1;
      input.placeholder = "random";
      input.inputMode = "numeric";
    } else {
      input.type = "range";
      input.step = integer ? 1 : STEPS[name] || 0.01;
      // The value beside the label, not inside it: the slider's name stays "Temperature", its value is
      // announced as a value.
      const output = document.createElement("output");
      output.htmlFor = input.id;
      output.setAttribute("aria-hidden", "true");
      head.append(output);
      input.addEventListener("input", () => { output.textContent = input.value; });
    }
    if (description) input.title = description;
    wrap.append(head, input);
    fields.append(wrap);
  }
  resetOptions();
}

function resetOptions() {
  for (const name of state.config.options) {
    const input = $(`opt-${name}`);
    const value = state.config.defaults[name];
    input.value = value ?? "";
    input.dispatchEvent(new Event("input"));
  }
}

/** The options that differ from the variant's defaults (the rest is left to the server). */
function chosenOptions() {
  const options = {};
  for (const name of state.config.options) {
    const input = $(`opt-${name}`);
    if (input.value === "") continue;
    const value = Number(input.value);
    if (value !== state.config.defaults[name]) options[name] = value;
  }
  if (state.config.languages) options.language = $("opt-language").value;
  return options;
}

// -- speech ---------------------------------------------------------------------------------------------
function seconds(samples) {
  return `${(samples / state.sampleRate).toFixed(2)} s`;
}

function onPlayerReport(report) {
  const played = $("played");
  played.dataset.samples = report.played;
  played.textContent = seconds(report.played);
  waveform?.setPlayed(report.played);
  if (report.type === "first" && state.startedAt !== null) {
    const ms = performance.now() - state.startedAt;
    $("ttfa").textContent = `${Math.round(ms)} ms`;
    $("ttfa").dataset.ms = Math.round(ms);
    state.startedAt = null;
  }
  if (report.drained && state.ended && !state.stopped) {
    $("status").textContent = `Done: ${seconds(report.played)} of audio`
      + (report.starved ? " (playback caught up with generation and waited for it)." : ".");
  }
}

function startSpeech(event) {
  event.preventDefault();
  const text = $("text").value;
  if (!text.trim()) {
    $("speak-error").textContent = "Type something to speak first.";
    return;
  }
  const message = { text, voice_id: $("voice").value || null, ...chosenOptions() };
  state.chunks = [];
  state.ended = false;
  state.startedAt = performance.now();
  $("speak-error").textContent = "";
  $("status").textContent = "Generating…";
  $("ttfa").textContent = "–";
  delete $("ttfa").dataset.ms;
  $("received").textContent = "–";
  $("received").dataset.samples = 0;
  $("download").hidden = true;
  $("speak").disabled = true;
  $("stop").disabled = false;
  // The context must start inside the click; at the server's rate once it is known (24 kHz: Chatterbox's).
  const playing = player.start(state.sampleRate).catch((error) => {
    $("speak-error").textContent = `This browser cannot play the audio: ${error.message}`;
    throw error;
  });
  waveform.clear();
  let received = 0;
  state.stop = speak(message, {
    start: (rate) => {
      if (rate !== state.sampleRate) {
        state.sampleRate = rate;
        waveform.sampleRate = rate;
      }
    },
    audio: async (buffer) => {
      state.chunks.push(buffer);
      const samples = pcm16ToFloat(buffer);
      received += samples.length;
      $("received").textContent = seconds(received);
      $("received").dataset.samples = received;
      waveform.add(samples);
      try {
        await playing;
      } catch {
        return; // said once, above; the audio is still received, drawn and downloadable
      }
      player.push(samples);
    },
    error: (detail) => {
      $("speak-error").textContent = `Not spoken: ${detail}`;
    },
    end: () => finishSpeech(received),
  });
}

function finishSpeech(received, stopped = false) {
  state.stop = null;
  state.ended = true;
  state.stopped = stopped;
  player.end();
  $("speak").disabled = false;
  $("stop").disabled = true;
  if (!received) {
    $("status").textContent = "";
    if (!$("speak-error").textContent) $("speak-error").textContent = "No audio came back.";
    return;
  }
  $("status").textContent = stopped ? `Stopped after ${seconds(received)} of audio.`
    : `Received ${seconds(received)} of audio; playing…`;
  if (state.downloadUrl) URL.revokeObjectURL(state.downloadUrl);
  state.downloadUrl = URL.createObjectURL(wavBlob(state.chunks, state.sampleRate));
  const link = $("download");
  link.href = state.downloadUrl;
  link.download = `chatterbox-${new Date().toISOString().replace(/[:.]/g, "-")}.wav`;
  link.hidden = false;
}

function stopSpeech() {
  state.stop?.();
  player.stop();
  finishSpeech(state.chunks.reduce((n, c) => n + c.byteLength / 2, 0), true);
}

// -- start ----------------------------------------------------------------------------------------------
async function main() {
  waveform = new Waveform($("waveform"), state.sampleRate);
  try {
    const [config, schema] = await Promise.all([api.config(), api.schema()]);
    state.config = config;
    state.sampleRate = config.sample_rate;
    waveform.sampleRate = config.sample_rate;
    const request = schema.components.schemas.GenerateRequest.properties;
    state.schema = request;
    $("text").maxLength = request.text.maxLength;
    $("server-info").textContent = `Chatterbox ${config.variant}, ${config.sample_rate / 1000} kHz`
      + (config.auth ? ", API key required" : ", open API (no key configured)");
  } catch (error) {
    $("server-info").textContent = `The server could not be asked what it serves: ${error.message}`;
    setEnabled(false);
    return;
  }
  buildOptions();
  const count = () => {
    $("text-count").textContent = `${$("text").value.length} of ${$("text").maxLength} characters`;
  };
  $("text").addEventListener("input", count);
  count();
  $("key-form").addEventListener("submit", useKey);
  $("forget-key").addEventListener("click", () => {
    key.forget();
    askForKey();
  });
  $("speak-form").addEventListener("submit", startSpeech);
  $("stop").addEventListener("click", stopSpeech);
  $("reset-options").addEventListener("click", resetOptions);
  $("upload-form").addEventListener("submit", upload);
  $("clone-form").addEventListener("submit", clone);
  // Ctrl/Cmd+Enter in the text speaks, as in a chat box.
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("speak-form").requestSubmit();
  });
  if (state.config.auth && !key.get()) return askForKey();
  $("forget-key").hidden = !state.config.auth;
  await refreshVoices();
}

main();
